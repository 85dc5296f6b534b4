"""The run's models as every stage and the command line measure them: evaluated on the recipe's
tasks, compared on its held-out samples, and quantized to INT8 (the qat stage's model, else
post-training quantization of the final model)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from compress.data.batches import batch_stream
from compress.data.heldout import heldout_samples
from compress.errors import UserError
from compress.evaluate import Encoder
from compress.models import CLIP, ModelRecord
from compress.quant.config import QuantConfig
from compress.quant.ptq import QuantizedCLIP, convert, quantize
from compress.quant.qat import load_quantized
from edgeclip.inputs import train_dataset
from edgeclip.pipeline import Context
from edgeclip.recipe import Recipe
from edgeclip.run_folder import MODEL_FILE, task_csv

PLAN_FILE = "quant_plan.json"  # quant.max_drop's plan, in the run folder
PLAN_SAMPLES = 256  # held-out samples the plan's sensitivities are measured on
PLAN_SECTIONS = ("quant", "eval")  # the recipe sections the plan is measured with
SENSITIVITY_FILE = "quant_sensitivity.json"  # `edgeclip eval RUN --sensitivity`'s, in the run


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
    key = plan_key(ctx, sha256_file(model_file))
    path = ctx.run_dir / PLAN_FILE
    saved = _saved(path) or {}
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


def quant_plan_sections(recipe: Recipe) -> tuple[str, ...]:
    """The recipe sections behind its quant plan where it makes one (``quant.max_drop``): what a
    stage that quantizes with the plan depends on besides its own sections."""
    return PLAN_SECTIONS if recipe.quant is not None and recipe.quant.max_drop is not None else ()


def plan_key(ctx: Context, model_sha256: str) -> dict:
    """What a saved plan was made for: the final model (its file's sha256) and the sections."""
    return {"model_sha256": model_sha256, "sections": ctx.recipe.section_hash(*PLAN_SECTIONS)}


def save_sensitivity(ctx: Context, rows: list[dict], samples: int) -> Path:
    """``edgeclip eval RUN --sensitivity``'s ranking of the run's final model, kept in the run
    (``quant_sensitivity.json``, written atomically) for its report; the file's path."""
    from compress.io import sha256_file, write_json
    from edgeclip.run_folder import final_model

    path = ctx.run_dir / SENSITIVITY_FILE
    model_sha256 = sha256_file(final_model(ctx))
    write_json(path, {"model_sha256": model_sha256, "samples": samples, "layers": rows})
    return path


def measured_sensitivity(ctx: Context) -> dict | None:
    """The run's INT8 sensitivity of its final model as it stands, read back (nothing is
    measured): the ranking of the quant plan (:func:`quant_plan`) where it is current and
    measured one, else the one ``edgeclip eval RUN --sensitivity`` saved for this model file.

    Returns:
        None without either; else ``source`` (the file), ``samples`` (held-out samples),
        ``layers`` (:func:`compress.quant.sensitivity.sensitivity`'s rows), ``float_layers``
        (the plan's, else the recipe's) and, with a current plan, ``plan``: its ``max_drop``,
        ``drop``, ``within_budget`` and ``steps``.
    """
    from compress.io import sha256_file
    from edgeclip.run_folder import final_model

    model_file = final_model(ctx)
    plan, saved = _saved(ctx.run_dir / PLAN_FILE), _saved(ctx.run_dir / SENSITIVITY_FILE)
    if (plan is None and saved is None) or not model_file.is_file():
        return None
    model_sha256 = sha256_file(model_file)
    if plan is not None and plan.get("key") != plan_key(ctx, model_sha256):
        plan = None  # made for another model or scheme: the next stage that quantizes remakes it
    if saved is not None and saved.get("model_sha256") != model_sha256:
        saved = None
    if plan is not None and plan.get("sensitivity"):
        source, samples, rows = PLAN_FILE, PLAN_SAMPLES, plan["sensitivity"]
    elif saved is not None:
        source, samples, rows = SENSITIVITY_FILE, saved["samples"], saved["layers"]
    else:
        return None
    quant = ctx.recipe.quant or QuantConfig()
    out = {
        "source": source,
        "samples": samples,
        "layers": rows,
        "float_layers": plan["float_layers"] if plan is not None else list(quant.float_layers),
    }
    if plan is not None:
        out["plan"] = {k: plan[k] for k in ("max_drop", "drop", "within_budget", "steps")}
    return out


def _saved(path: Path) -> dict | None:
    """A JSON file the run keeps (the plan, a sensitivity ranking), or None if there is none."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err}); delete it to measure again") from err


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
