"""Named CLIP architectures (one JSON per model in configs/) and the builder that turns one into a module."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from torch import nn

from compress.models.attention import attention
from compress.models.clip import CLIP
from compress.models.towers import TextTransformer, VisionTransformer
from compress.tokenizer import EOT_ID

CONFIG_DIR = Path(__file__).parent / "configs"

__all__ = ["CLIP", "attention", "build_model", "model_config", "model_names", "count_params"]


@cache
def _configs() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(CONFIG_DIR.glob("*.json"))}


def model_names() -> list[str]:
    return sorted(_configs())


def model_config(name: str) -> dict:
    """The architecture of a named model, as stored in ``configs/<name>.json``."""
    configs = _configs()
    if name not in configs:
        raise KeyError(f"unknown model {name!r}; expected one of: {', '.join(sorted(configs))}")
    return json.loads(json.dumps(configs[name]))  # a private copy


def build_model(
    name: str, image_attention: dict | None = None, text_attention: dict | None = None
) -> CLIP:
    """Build a randomly initialised named model.

    Args:
        name: a registered model name (``edgeclip ls models``).
        image_attention, text_attention: attention variant per tower, e.g.
            ``{"kind": "clipped", "alpha": 4.0}``; softmax when None.

    Example:
        >>> model = build_model("tiny", text_attention={"kind": "gated"})
    """
    cfg = model_config(name)
    v, t = cfg["vision"], cfg["text"]
    visual = VisionTransformer(
        v["image_size"], v["patch_size"], v["width"], v["layers"], v["heads"], v.get("mlp_ratio", 4.0),
        cfg["embed_dim"], image_attention, v.get("stem", "patch"),
    )  # fmt: skip
    text = TextTransformer(
        t["context_length"], t["vocab_size"], t["width"], t["layers"], t["heads"], t.get("mlp_ratio", 4.0),
        cfg["embed_dim"], t.get("eot_id", EOT_ID), text_attention,
    )  # fmt: skip
    return CLIP(visual, text)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_model(
    model: CLIP, path: Path, name: str, image_attention: dict, text_attention: dict
) -> None:
    """Write a trained model as its architecture name, attention choices and weights (atomically)."""
    from compress.io import atomic_save

    arch = {"name": name, "image_attention": image_attention, "text_attention": text_attention}
    atomic_save({"arch": arch, "state_dict": model.state_dict()}, path)


def load_model(path: str | Path) -> tuple[CLIP, dict]:
    """Rebuild a model written by :func:`save_model`; weights-only loading runs no code from the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        arch = state["arch"]
        model = build_model(arch["name"], arch["image_attention"], arch["text_attention"])
        model.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise ValueError(
            f"{path}: not an edgeclip model file ({str(err).splitlines()[0]})"
        ) from None
    return model.eval(), arch
