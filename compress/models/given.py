"""A model as a recipe names it: ``openclip:<arch>``, ``mobileclip:<name>`` or a registry name,
with its weights (a checkpoint, an open_clip tag, or random init) and its record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress.errors import require
from compress.models.apple import NAMES, PREFIX, load_apple
from compress.models.apple import parse_name as apple_name
from compress.models.build import build_model, require_model_name
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


@dataclass(frozen=True)
class TeacherConfig:
    """A given, not trained, model: ``openclip:<arch>``, ``mobileclip:<name>`` (Apple's
    ml-mobileclip layout) or a registry name, and its weights.

    ``checkpoint`` is a local file (an open_clip checkpoint for ``openclip:`` models, Apple's
    ``mobileclip_<name>.pt`` for ``mobileclip:`` ones, an edgeclip model file otherwise);
    ``pretrained`` is an open_clip tag, downloaded by open_clip. With neither, the weights are a
    random initialisation (useful only to try the path).
    """

    model: str
    checkpoint: str | None = None
    pretrained: str | None = None

    def __post_init__(self) -> None:
        require(
            self.checkpoint is None or self.pretrained is None,
            "pretrained",
            "give either checkpoint or pretrained, not both",
        )
        if self.model.startswith("mobileclip:"):
            require(
                self.model[len(PREFIX) :] in NAMES,
                "model",
                f"unknown Apple MobileCLIP {self.model!r}; expected one of: "
                + ", ".join(PREFIX + name for name in NAMES),
            )
            require(
                self.pretrained is None,
                "pretrained",
                "Apple's MobileCLIP files have no tags; give checkpoint: mobileclip_<name>.pt",
            )
        elif not self.model.startswith("openclip:"):
            require_model_name(self.model, "'openclip:<arch>', 'mobileclip:<name>' or ")
            require(
                self.pretrained is None,
                "pretrained",
                "pretrained tags name open_clip weights; use model: openclip:<arch>",
            )
