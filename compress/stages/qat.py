"""The qat stage: quantization-aware training of the final model (:mod:`compress.quant.qat`).

It writes ``qat/model.pt``, the fake-quant model with its record (precision int8, the W8A8
scheme of the recipe's ``quant`` section). The eval and export stages take their INT8 model
from here (:func:`int8_model`); without a qat stage, from post-training quantization.
"""

from __future__ import annotations

from pathlib import Path

from compress.data.batches import batch_stream
from compress.models import CLIP, ModelRecord, load_model
from compress.pipeline import Context, Stage
from compress.quant.ptq import QuantizedCLIP, convert, quantize
from compress.quant.qat import load_quantized, quantized_record, save_quantized, train_qat
from compress.recipe import QuantConfig, Recipe
from compress.stages.data import check_train_data, train_dataset
from compress.stages.layout import MODEL_FILE, final_model
from compress.stages.pretrain import check_batch
from compress.stages.report import precision_lines


def quant_config(recipe: Recipe) -> QuantConfig:
    return recipe.quant or QuantConfig()


def calibration_batches(ctx: Context, record: ModelRecord, quant: QuantConfig) -> list[dict]:
    """``quant.samples`` training samples, in batches: the calibration split of PTQ."""
    stream = batch_stream(
        train_dataset(ctx, record), quant.batch_size, ctx.recipe.seed + 1, 0, 1, 0
    )
    return [next(stream) for _ in range(max(1, round(quant.samples / quant.batch_size)))]


def ptq_model(ctx: Context, model: CLIP, record: ModelRecord) -> QuantizedCLIP:
    """``model`` quantized after training, calibrated on the training data; converted."""
    quant = quant_config(ctx.recipe)
    return quantize(model, quant, calibration_batches(ctx, record, quant))


def qat_model(ctx: Context) -> QuantizedCLIP:
    """The qat stage's model, converted."""
    return convert(load_quantized(ctx.stage_dir("qat") / MODEL_FILE)[0])


def int8_model(ctx: Context, model: CLIP, record: ModelRecord) -> tuple[QuantizedCLIP, str]:
    """The run's INT8 model, converted, and how it was made: the qat stage's model, else
    ``model`` quantized after training."""
    if ctx.recipe.qat is not None:
        return qat_model(ctx), "qat"
    return ptq_model(ctx, model, record), "ptq"


def run(ctx: Context, out: Path) -> dict:
    cfg, quant = ctx.recipe.qat, quant_config(ctx.recipe)
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
)
