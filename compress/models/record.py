"""The one record of a saved model: what it takes to rebuild it and what it is.

Every stage that writes a model writes a :class:`ModelRecord` beside its weights (``save_model``)
and every reader gets both back (``load_model``), so architecture, attention variants, image
normalisation, precision and provenance travel with the weights into distillation, quantization,
export manifests and the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compress.errors import UserError, first_line
from compress.models.build import build_from_config, image_normalization, model_config
from compress.models.clip import CLIP
from compress.tokenizer import Tokenizer, tokenizer_from_spec

TOWERS = ("image", "text")


class ModelFileError(UserError):
    """A path that is not a readable edgeclip model file."""


@dataclass(frozen=True)
class ModelRecord:
    """A model's description, saved with its weights.

    Attributes:
        name: a registry name (``edgeclip ls models``) or a derived one (``x-pruned``,
            ``openclip:ViT-B-32``).
        config: the architecture, in the ``configs/*.json`` schema (the image normalisation is
            its ``vision.mean`` / ``vision.std``).
        attention: the attention spec per tower (``{"image": {...}, "text": {...}}``; None is
            plain softmax), as :func:`compress.models.attention.build_attention` takes it.
        precision: ``fp32`` until a quantization stage changes it.
        quantization: the quantization settings, once quantized.
        provenance: how the model was made (stage, source weights, parent model, recipe hash).
    """

    name: str
    config: dict
    attention: dict = field(default_factory=lambda: dict.fromkeys(TOWERS))
    precision: str = "fp32"
    quantization: dict | None = None
    provenance: dict = field(default_factory=dict)

    @classmethod
    def named(cls, name: str, attention: dict | None = None, **provenance: Any) -> ModelRecord:
        """The record of a registry model with the given attention specs."""
        return cls(
            name,
            model_config(name),
            {**dict.fromkeys(TOWERS), **(attention or {})},
            provenance=provenance,
        )

    @property
    def normalization(self) -> dict:
        """The per-channel ``mean`` and ``std`` the weights expect, for [0, 1] RGB inputs."""
        return image_normalization(self.config)

    @property
    def image_size(self) -> int:
        return self.config["vision"]["image_size"]

    @property
    def context_length(self) -> int:
        return self.config["text"]["context_length"]

    def tokenizer(self) -> Callable[[list[str]], torch.Tensor]:
        """Captions → this model's token ids: its own tokenizer file where its architecture names
        one (a given model's, :class:`compress.tokenizer.FileTokenizer`), else CLIP's BPE."""
        spec = self.config["text"].get("tokenizer")
        if spec is None:
            return Tokenizer(self.context_length)
        return tokenizer_from_spec(spec, self.context_length)

    def build(self) -> CLIP:
        """A randomly initialised module of this architecture and attention."""
        return build_from_config(self.config, self.attention["image"], self.attention["text"])

    def derive(self, **changes: Any) -> ModelRecord:
        """A copy with some fields changed (e.g. a pruned architecture, a new provenance)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelRecord:
        if "arch" in data:  # files written before the record existed
            arch = data["arch"]
            config = arch.get("config") or model_config(arch["name"])
            attention = {"image": arch["image_attention"], "text": arch["text_attention"]}
            return cls(arch["name"], config, attention)
        return cls(**data["record"])


def save_model(model: CLIP, record: ModelRecord, path: Path) -> None:
    """Write the weights and their record, atomically."""
    from compress.io import atomic_save

    atomic_save({"record": record.to_dict(), "state_dict": model.state_dict()}, path)


def _read(path: str | Path, mmap: bool) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:  # weights-only: loading runs no code from the file
        return torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)
    except Exception as err:  # pickle, zip and unpickler errors all mean "not our file"
        raise ModelFileError(f"{path}: not an edgeclip model file ({first_line(err)})") from None


def read_record(path: str | Path) -> ModelRecord:
    """The record of a saved model, without reading its weights into memory."""
    try:
        return ModelRecord.from_dict(_read(path, mmap=True))
    except (KeyError, TypeError) as err:
        raise ModelFileError(f"{path}: not an edgeclip model file (no record: {err})") from None


def load_model(path: str | Path) -> tuple[CLIP, ModelRecord]:
    """Rebuild a model written by :func:`save_model`, in eval mode, with its record.

    Example:
        >>> model, record = load_model("runs/demo/distill/model.pt")  # doctest: +SKIP
        >>> record.attention["image"]["kind"]
        'clipped'
    """
    state = _read(path, mmap=False)
    try:
        record = ModelRecord.from_dict(state)
        model = record.build()
        model.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: not an edgeclip model file ({first_line(err)})") from None
    return model.eval(), record
