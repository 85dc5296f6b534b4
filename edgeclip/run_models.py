"""The run's models as every stage and the command line measure them: evaluated on the recipe's
tasks, compared on its held-out samples, and quantized to INT8 (the qat stage's model, else
post-training quantization of the final model)."""

from __future__ import annotations

import torch

from compress.data.batches import batch_stream
from compress.data.heldout import heldout_samples
from compress.evaluate import Encoder
from compress.models import CLIP, ModelRecord
from compress.quant.config import QuantConfig
from compress.quant.ptq import QuantizedCLIP, convert, quantize
from compress.quant.qat import load_quantized
from edgeclip.inputs import train_dataset
from edgeclip.pipeline import Context
from edgeclip.recipe import Recipe
from edgeclip.run_folder import MODEL_FILE, task_csv


def evaluate_model(ctx: Context, model: CLIP | Encoder) -> dict:
    """The recipe's zero-shot and retrieval metrics of one model."""
    from compress.evaluate import evaluate_csvs

    cfg = ctx.recipe.eval
    return evaluate_csvs(
        model,
        {task: task_csv(ctx, task) for task in cfg.zeroshot},
        {task: task_csv(ctx, task) for task in cfg.retrieval},
        templates=cfg.templates,
        label_key=cfg.label_key,
        batch_size=cfg.batch_size,
        skip_bad=ctx.recipe.data.skip_bad,
    )


def parity_samples(ctx: Context, record: ModelRecord, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A run's held-out samples: its first retrieval task, else rendered scenes."""
    retrieval = ctx.recipe.eval.retrieval if ctx.recipe.eval else ()
    csv = task_csv(ctx, retrieval[0]) if retrieval else None
    return heldout_samples(record, n, csv, ctx.recipe.seed)


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
