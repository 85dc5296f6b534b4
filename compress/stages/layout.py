"""Where things live in a run folder: the one place the stages, the report and the benchmarks ask.

``runs/<name>/`` holds ``recipe.yaml``, ``report.md``/``report.json`` and one folder per stage;
a stage that ends with a model writes it as ``<stage>/model.pt`` (weights and record).
"""

from __future__ import annotations

from pathlib import Path

from compress.pipeline import Context
from compress.recipe import Recipe

MODEL_FILE = "model.pt"


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


def distill_stage_dir(ctx: Context, index: int) -> Path:
    """One student of a (progressive) distillation: its checkpoint, model and summary."""
    return ctx.stage_dir("distill") / f"stage{index}"


def export_dir(ctx: Context, target: str, precision: str) -> Path:
    """One exported artifact's folder, with an ``image`` and a ``text`` tower folder inside."""
    return ctx.stage_dir("export") / f"{target}-{precision}"
