"""A model as a recipe names it: ``openclip:<arch>``, ``mobileclip:<name>`` or a registry name,
with its weights (a checkpoint, an open_clip tag, or random init) and its record."""

from __future__ import annotations

from pathlib import Path

from compress.models.apple import load_apple
from compress.models.apple import parse_name as apple_name
from compress.models.build import build_model
from compress.models.clip import CLIP
from compress.models.loaders import LoaderError, load_openclip
from compress.models.loaders import parse_name as openclip_name
from compress.models.record import ModelRecord, load_model


def load_given(
    model: str, checkpoint: str | Path | None = None, pretrained: str | None = None
) -> tuple[CLIP, ModelRecord]:
    """A model named by a recipe: ``openclip:<arch>`` (open_clip weights), ``mobileclip:<name>``
    (an Apple ml-mobileclip checkpoint) or a registry name (an edgeclip model file as
    checkpoint, or random init), with its record."""
    arch, apple = openclip_name(model), apple_name(model)
    source = {
        "source": model,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "pretrained": pretrained,
    }
    if arch is not None or apple is not None:
        if apple is not None and pretrained is not None:
            raise LoaderError(f"{model}: Apple's checkpoints have no tags; give checkpoint: <file>")
        if arch is not None:
            loaded, config = load_openclip(arch, checkpoint, pretrained)
        else:
            loaded, config = load_apple(apple, checkpoint)
        return loaded, ModelRecord(config["name"], config, provenance=source)
    if checkpoint is None:
        return build_model(model), ModelRecord.named(model, **source)
    loaded, record = load_model(checkpoint)
    return loaded, record.derive(provenance={**source, "parent": record.provenance})
