"""The export stage: the final model's towers exported to each listed target, checked against PyTorch."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import torch

from compress.data.datasets import CsvDataset
from compress.data.transforms import image_transform
from compress.models import ModelRecord, load_model
from compress.pipeline import Context, Stage
from compress.stages.data import train_dataset
from compress.stages.layout import export_dir, final_model, has_model, task_csv
from compress.stages.report import mb, pct
from compress.tokenizer import Tokenizer


def parity_samples(ctx: Context, record: ModelRecord, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real images and captions for the parity check: the first retrieval set's, else the training data's."""
    retrieval = ctx.recipe.eval.retrieval if ctx.recipe.eval else ()
    if retrieval:
        transform = image_transform(record.image_size, **record.normalization)
        data = CsvDataset(task_csv(ctx, retrieval[0]), transform)
        items = [data[i] for i in range(min(n, len(data)))]
    else:
        items = list(islice(iter(train_dataset(ctx, record)), n))
    tokens = Tokenizer(record.context_length)([item["caption"] for item in items])
    return torch.stack([item["image"] for item in items]), tokens


def run(ctx: Context, out: Path) -> dict:
    from export.driver import export_model

    cfg = ctx.recipe.export
    model, record = load_model(final_model(ctx))
    images, tokens = parity_samples(ctx, record, cfg.samples)
    return {
        target: export_model(
            model,
            record,
            export_dir(ctx, target),
            target=target,
            sample_images=images,
            sample_tokens=tokens,
            batch_size=cfg.batch_size,
            recipe_hash=ctx.recipe.hash,
            thresholds=cfg.thresholds(),
        )
        for target in cfg.formats
    }


def report(summary: dict) -> list[str]:
    lines = [
        "## Exports (checked against PyTorch)",
        "",
        "| artifact | size | min cosine | max abs diff | zero-shot agreement |",
        "|---|---:|---:|---:|---:|",
    ]
    for target, result in summary.items():
        for tower in ("image", "text"):
            a = result[tower]
            par = a["parity"]
            lines.append(
                f"| `{target}/{tower}/{Path(a['model']).name}` | {mb(a['bytes'])} | {par['cosine_min']:.6f} | "
                f"{par['max_abs']:.2e} | {pct(par['zero_shot_agreement'])} |"
            )
    return lines


STAGE = Stage(
    "export",
    ("data", "pretrain", "teacher", "distill", "export"),
    run,
    lambda r: r.export is not None and has_model(r),
    "export the towers and check them against PyTorch",
    report=report,
)
