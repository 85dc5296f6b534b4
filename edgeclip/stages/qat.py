"""The qat stage: quantization-aware training of the final model (:mod:`compress.quant.qat`).

It writes ``qat/model.pt``, the fake-quant model with its record (precision int8, the W8A8
scheme of the recipe's ``quant`` section). The eval and export stages take their INT8 model
from here (:func:`int8_model`); without a qat stage, from post-training quantization. With
``quant.max_drop`` it trains with the layers the quant plan keeps in float, so it also depends on
what the plan is measured with (the ``eval`` section: its tasks).
"""

from __future__ import annotations

from pathlib import Path

from compress.data.batches import batch_stream
from compress.models import load_model
from compress.quant.qat import quantized_record, save_quantized, train_qat
from edgeclip.figures import precision_lines
from edgeclip.inputs import check_batch, check_train_data, train_dataset
from edgeclip.pipeline import Context, Stage
from edgeclip.run_folder import MODEL_FILE, final_model
from edgeclip.run_models import quant_config, quant_plan_sections


def run(ctx: Context, out: Path) -> dict:
    cfg, quant = ctx.recipe.qat, quant_config(ctx)
    check_batch("qat", cfg.batch_size, ctx.world)
    model, record = load_model(final_model(ctx))
    dataset = train_dataset(ctx, record)

    def batches(start: int):
        seed = ctx.recipe.seed + 2
        return batch_stream(
            dataset, cfg.batch_size, seed, ctx.rank, ctx.world, start, cfg.num_workers
        )

    quantized, summary = train_qat(
        model, quant, cfg, batches, out, rank=ctx.rank, world=ctx.world, stop_after=ctx.stop_after
    )
    if ctx.rank == 0:
        save_quantized(quantized, quantized_record(record, quant, "qat"), out / MODEL_FILE)
        (out / "checkpoint.pt").unlink(missing_ok=True)  # the finished model supersedes it
    keys = ("steps", "final_loss", "samples_per_s", "train_seconds", "precision_choice")
    return {k: summary[k] for k in keys}


def report(t: dict) -> list[str]:
    return [
        "## Quantization-aware training",
        "",
        f"W8A8 fake-quant fine-tuning against the float model: {t['steps']} steps, final loss "
        f"{t['final_loss']:.4f}, {t['samples_per_s']:.0f} samples/s, {t['train_seconds']:.0f} s.",
        *precision_lines(t),
    ]


STAGE = Stage(
    "qat",
    ("data", "pretrain", "teacher", "distill", "quant", "qat"),
    run,
    lambda r: r.qat is not None,
    "quantization-aware training: fake-quant fine-tuning, then int8 conversion",
    distributed=True,
    check=lambda recipe: check_train_data(recipe),
    report=report,
    more_needs=quant_plan_sections,  # with quant.max_drop: the plan, measured on the eval tasks
)
