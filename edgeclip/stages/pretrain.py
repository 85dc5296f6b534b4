"""The pretrain stage: a registry model trained from scratch with the contrastive (or sigmoid) loss."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from compress.data.batches import batch_stream
from compress.distill.losses import SIGMOID_INIT
from compress.models import CLIP, ModelRecord, save_model
from compress.objectives import HardNegatives, Objective, Sigmoid, clip_objective
from compress.train import train
from edgeclip.figures import precision_lines
from edgeclip.inputs import check_batch, check_train_data, train_dataset
from edgeclip.pipeline import Context, Stage
from edgeclip.recipe import PretrainConfig
from edgeclip.run_folder import MODEL_FILE


def objective(cfg: PretrainConfig, record: ModelRecord, model: CLIP, seed: int) -> Objective:
    """What pretraining minimises: the CLIP loss, with hard negative captions if asked for, or
    the sigmoid loss."""
    if cfg.loss.kind == "sigmoid":
        return Sigmoid(model.logit_bias)
    if cfg.hard_negatives is None:
        return clip_objective
    return HardNegatives(cfg.hard_negatives.swap, record.context_length, seed)


class Pretraining(NamedTuple):
    """What the stage trains: the seeded new model, its data, the batches from a step on, the loss."""

    record: ModelRecord
    model: CLIP
    dataset: Any
    batches: Callable[[int], Iterator[dict]]
    objective: Objective


def pretraining(ctx: Context) -> Pretraining:
    """The recipe's pretraining set up as the stage runs it (benchmarks that watch it use it too)."""
    cfg = ctx.recipe.pretrain
    torch.manual_seed(ctx.recipe.seed)
    attention = {"image": cfg.attention.image.spec(), "text": cfg.attention.text.spec()}
    record = ModelRecord.named(cfg.model, attention, stage="pretrain", recipe_hash=ctx.recipe.hash)
    if cfg.loss.kind == "sigmoid":  # the architecture's own logit settings win
        record = replace(record, config={**SIGMOID_INIT, **record.config})
    model = record.build()
    dataset = train_dataset(ctx, record)

    def batches(start: int):
        return batch_stream(
            dataset, cfg.batch_size, ctx.recipe.seed, ctx.rank, ctx.world, start, cfg.num_workers
        )

    loss = objective(cfg, record, model, ctx.recipe.seed)
    return Pretraining(record, model, dataset, batches, loss)


def run(ctx: Context, out: Path) -> dict:
    cfg = ctx.recipe.pretrain
    check_batch("pretrain", cfg.batch_size, ctx.world)
    record, model, dataset, batches, loss = pretraining(ctx)
    summary = train(
        model,
        batches,
        cfg,
        out,
        objective=loss,
        rank=ctx.rank,
        world=ctx.world,
        desc="pretrain",
        stop_after=ctx.stop_after,
    )
    if ctx.rank == 0:
        save_model(model, record, out / MODEL_FILE)
        (out / "checkpoint.pt").unlink(missing_ok=True)  # the finished model supersedes it
    summary["skipped_samples"] += getattr(dataset, "skipped", 0)  # CSV rows dropped at load
    keys = (
        "steps",
        "final_loss",
        "samples_per_s",
        "train_seconds",
        "skipped_samples",
        "precision_choice",
    )
    return {k: summary[k] for k in keys}


def report(t: dict) -> list[str]:
    return [
        "## Training",
        "",
        f"{t['steps']} steps, final loss {t['final_loss']:.4f}, "
        f"{t['samples_per_s']:.0f} samples/s, {t['train_seconds']:.0f} s; skipped samples: {t['skipped_samples']}.",
        *precision_lines(t),
    ]


STAGE = Stage(
    "pretrain",
    ("data", "pretrain"),
    run,
    lambda r: r.pretrain is not None,
    "train a CLIP model with the contrastive loss",
    distributed=True,
    check=check_train_data,
    report=report,
)
