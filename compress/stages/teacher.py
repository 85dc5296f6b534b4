"""The teacher stage: a given model (open_clip checkpoint or tag, or an edgeclip file) loaded once."""

from __future__ import annotations

from pathlib import Path

from compress.models import count_params, save_model
from compress.pipeline import Context, Stage
from compress.recipe import Recipe, TeacherConfig
from compress.stages.layout import MODEL_FILE


def check_given(recipe: Recipe, key: str, cfg: TeacherConfig) -> None:
    """A given model's inputs exist: its checkpoint file, its open_clip architecture and tag."""
    from compress.models.loaders import parse_name, supported_architectures

    if cfg.checkpoint is not None and not Path(cfg.checkpoint).is_file():
        raise recipe.error(f"{key}.checkpoint", f"no such file: {cfg.checkpoint}")
    arch = parse_name(cfg.model)
    if arch is None:
        return
    supported = supported_architectures()
    if arch not in supported:
        raise recipe.error(
            f"{key}.model",
            f"open_clip architecture {arch!r} is not supported; supported: {', '.join(supported)}",
        )
    if cfg.pretrained is not None:
        from compress.compat import open_clip

        tags = open_clip().list_pretrained_tags_by_model(arch)
        if cfg.pretrained not in tags:
            raise recipe.error(
                f"{key}.pretrained",
                f"open_clip has no tag {cfg.pretrained!r} for "
                f"{arch}; tags: {', '.join(tags) or 'none'}",
            )


def run(ctx: Context, out: Path) -> dict:
    """Load the recipe's teacher (open_clip or ours) once and store it in our model format."""
    from compress.models.given import load_given

    cfg = ctx.recipe.teacher
    model, record = load_given(cfg.model, cfg.checkpoint, cfg.pretrained)
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
