"""Where things live in a run folder, and what its finished stages measured: the one place the
stages, the command line, the report and the benchmarks ask (a stage never imports another).

``runs/<name>/`` holds ``recipe.yaml``, ``report.md``/``report.json`` and one folder per stage;
a stage that ends with a model writes it as ``<stage>/model.pt`` (weights and record).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeclip.pipeline import Context
from edgeclip.recipe import Recipe

MODEL_FILE = "model.pt"
INDEX = "index.json"  # the reinforced dataset's index, in reinforce/


def scenes_dir(ctx: Context) -> Path:
    """The embedded scenes dataset, as the data stage writes it."""
    return ctx.stage_dir("data") / "scenes"


def task_csv(ctx: Context, name: str) -> Path:
    """An evaluation task: a CSV path of the user's, or a split of the scenes dataset."""
    return Path(name) if name.endswith(".csv") else scenes_dir(ctx) / f"{name}.csv"


def has_model(recipe: Recipe) -> bool:
    """Whether the run has a model of its own (trained by pretrain or loaded by teacher)."""
    return recipe.pretrain is not None or recipe.teacher is not None


def own_model(ctx: Context) -> Path:
    """The run's own model: trained by pretrain or loaded by teacher (the distillation teacher)."""
    return ctx.stage_dir("pretrain" if ctx.recipe.pretrain is not None else "teacher") / MODEL_FILE


def final_model(ctx: Context) -> Path:
    """The model the run ends with: the distilled student, else the run's own model."""
    if ctx.recipe.distill is not None:
        return ctx.stage_dir("distill") / MODEL_FILE
    return own_model(ctx)


def exported_model(ctx: Context, precision: str) -> Path:
    """The model file an export at ``precision`` comes from: for int8 the qat stage's model
    where the run has one (else the final model, quantized after training), the final model
    otherwise."""
    if precision == "int8" and ctx.recipe.qat is not None:
        return ctx.stage_dir("qat") / MODEL_FILE
    return final_model(ctx)


def distill_stage_dir(ctx: Context, index: int) -> Path:
    """One student of a (progressive) distillation: its checkpoint, model and summary."""
    return ctx.stage_dir("distill") / f"stage{index}"


def export_dir(ctx: Context, target: str, precision: str) -> Path:
    """One exported artifact's folder, with an ``image`` and a ``text`` tower folder inside."""
    return ctx.stage_dir("export") / f"{target}-{precision}"


def reinforced_index(ctx: Context) -> Path:
    """The reinforced dataset's index, as distillation reads it."""
    return ctx.stage_dir("reinforce") / INDEX


@dataclass(frozen=True)
class Evaluation:
    """What the eval stage measured, read back: the final model's metrics and those of its INT8
    simulations by method (``ptq``, ``qat``); metrics as :func:`compress.evaluate.evaluate_csvs`
    returns them."""

    model: dict
    int8: dict[str, dict]


def evaluation(ctx: Context) -> Evaluation | None:
    """The eval stage's results, if it finished with the recipe as it is now."""
    done = ctx.fresh("eval")
    if done is None:
        return None
    summary = done["summary"]
    metrics = {key: summary[key] for key in ("zeroshot", "retrieval")}
    return Evaluation(metrics, summary.get("int8", {}))


def artifact_metrics(ctx: Context) -> dict[str, dict]:
    """The export stage's metrics of each artifact through its own runtime (those it could run)."""
    done = ctx.fresh("export") or {}
    artifacts = done.get("summary", {}).get("artifacts", {})
    return {name: a["eval"] for name, a in artifacts.items() if isinstance(a.get("eval"), dict)}
