"""The teacher stage: a given model (open_clip checkpoint or tag, or an edgeclip file) loaded once."""

from __future__ import annotations

from pathlib import Path

from compress.models import count_params, save_model
from edgeclip.inputs import check_given
from edgeclip.pipeline import Context, Stage
from edgeclip.run_folder import MODEL_FILE


def run(ctx: Context, out: Path) -> dict:
    """Load the recipe's teacher (open_clip or ours) once and store it in our model format."""
    from compress.models.given import load_given

    cfg = ctx.recipe.teacher
    model, record = load_given(cfg.model, cfg.checkpoint, cfg.pretrained, cfg.tokenizer)
    save_model(
        model, record.derive(provenance={**record.provenance, "stage": "teacher"}), out / MODEL_FILE
    )
    weights = cfg.checkpoint or (f"open_clip tag {cfg.pretrained}" if cfg.pretrained else None)
    if weights is None:
        print(f"teacher {cfg.model}: no checkpoint or pretrained tag given, weights are random")
    params = {"image": count_params(model.visual), "text": count_params(model.text)}
    return {"model": cfg.model, "weights": weights or "random init", "params": params}


STAGE = Stage(
    "teacher",
    ("teacher",),
    run,
    lambda r: r.teacher is not None,
    "load a given model (open_clip checkpoint or tag, or ours)",
    check=lambda recipe: check_given(recipe, "teacher", recipe.teacher),
)
