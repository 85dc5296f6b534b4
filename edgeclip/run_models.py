"""The run's models as every stage and the command line measure them: evaluated on the recipe's
tasks, compared on its held-out samples, and quantized to INT8 (the qat stage's model, else
post-training quantization of the final model)."""

from __future__ import annotations

import json
from dataclasses import replace

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
from edgeclip.run_folder import MODEL_FILE, task_csv

PLAN_FILE = "quant_plan.json"  # quant.max_drop's plan, in the run folder
PLAN_SAMPLES = 256  # held-out samples the plan's sensitivities are measured on


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


def quant_config(ctx: Context) -> QuantConfig:
    """The recipe's INT8 scheme; with ``quant.max_drop``, with the layers its plan keeps in float
    (:func:`quant_plan`) among its ``float_layers``."""
    quant = ctx.recipe.quant or QuantConfig()
    if quant.max_drop is None:
        return quant
    return replace(quant, float_layers=tuple(quant_plan(ctx, quant)["float_layers"]))


def quant_plan(ctx: Context, quant: QuantConfig) -> dict:
    """The fewest layers to keep in float for the INT8 simulation's mean zero-shot top-1 on the
    recipe's tasks to be within ``quant.max_drop`` of the float model's: each layer's
    sensitivity on the run's held-out samples, then
    :func:`compress.quant.sensitivity.plan_float_layers` over post-training quantizations. Made
    once per final model and scheme, and saved in the run (``quant_plan.json``) for every stage
    and command that quantizes it."""
    from compress.io import sha256_file, write_json
    from compress.models import load_model
    from compress.quant.sensitivity import plan_float_layers, sensitivity
    from edgeclip.figures import mean_top1
    from edgeclip.run_folder import final_model

    model_file = final_model(ctx)
    key = {
        "model_sha256": sha256_file(model_file),
        "sections": ctx.recipe.section_hash("quant", "eval"),
    }
    path = ctx.run_dir / PLAN_FILE
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if saved.get("key") == key:
        return saved
    model, record = load_model(model_file)
    calibration = calibration_batches(ctx, record, quant)
    baseline = mean_top1(evaluate_model(ctx, model))

    def ranking() -> list[dict]:
        inputs = {k: torch.cat([batch[k] for batch in calibration]) for k in ("image", "text")}
        images, tokens = parity_samples(ctx, record, PLAN_SAMPLES)
        return sensitivity(model, quant, inputs, {"image": images, "text": tokens})

    def drop(floats: tuple[str, ...]) -> float:
        int8 = quantize(model, replace(quant, float_layers=floats), calibration)
        return baseline - mean_top1(evaluate_model(ctx, int8))

    plan = {"key": key, **plan_float_layers(ranking, drop, quant.max_drop, quant.float_layers)}
    if ctx.rank == 0:
        write_json(path, plan)
    return plan


def calibration_batches(ctx: Context, record: ModelRecord, quant: QuantConfig) -> list[dict]:
    """``quant.samples`` training samples, in batches: the calibration split of PTQ."""
    stream = batch_stream(
        train_dataset(ctx, record), quant.batch_size, ctx.recipe.seed + 1, 0, 1, 0
    )
    return [next(stream) for _ in range(max(1, round(quant.samples / quant.batch_size)))]


def ptq_model(ctx: Context, model: CLIP, record: ModelRecord) -> QuantizedCLIP:
    """``model`` quantized after training, calibrated on the training data; converted."""
    quant = quant_config(ctx)
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
