"""Named CLIP architectures (one JSON per model in configs/) and the builder that turns one into a module."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from torch import nn

from compress.errors import require
from compress.models.clip import CLIP, OPENAI_MEAN, OPENAI_STD
from compress.models.mobile import HybridVisionTower
from compress.models.towers import TextTransformer, VisionTransformer
from compress.tokenizer import EOT_ID, tokenizer_from_spec

CONFIG_DIR = Path(__file__).parent / "configs"


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
    return build_from_config(model_config(name), image_attention, text_attention)


def build_from_config(
    cfg: dict, image_attention: dict | None = None, text_attention: dict | None = None
) -> CLIP:
    """Build a randomly initialised model from an architecture dict (the ``configs/*.json`` schema).

    ``vision.family`` picks the image tower: ``"vit"`` (default) or ``"hybrid"`` (MobileCLIP MCi).
    """
    v, t, embed_dim = cfg["vision"], cfg["text"], cfg["embed_dim"]
    family = v.get("family", "vit")
    if family == "vit":
        visual = VisionTransformer(
            v["image_size"],
            v["patch_size"],
            v["width"],
            v["layers"],
            v["heads"],
            v.get("mlp_ratio", 4.0),
            embed_dim,
            image_attention,
            v.get("stem", "patch"),
            v.get("act", "gelu"),
            v.get("head_dim"),
            v.get("mlp_hidden"),
            v.get("stem_channels"),
            v.get("stem_kernels"),
            v.get("stem_strides"),
            v.get("stem_padding"),
            v.get("stem_act", "relu"),
            v.get("ln_pre", True),
            v.get("ln_eps", 1e-5),
            v.get("proj_bias", False),
            class_token=v.get("class_token", True),
            patch_bias=v.get("patch_bias", False),
            pool=v.get("pool", "token"),
            proj=v.get("proj", True),
            pool_heads=v.get("pool_heads"),
            pool_mlp_ratio=v.get("pool_mlp_ratio"),
            rope=v.get("rope"),
            pool_head_dim=v.get("pool_head_dim"),
            pool_mlp_hidden=v.get("pool_mlp_hidden"),
        )
    elif family == "hybrid":
        visual = HybridVisionTower(
            v["image_size"],
            v["layers"],
            v["widths"],
            v["mixers"],
            v.get("mlp_ratio", 3.0),
            embed_dim,
            v["se_downsample"],
            v["pos_embed"],
            v.get("head_dim", 32),
            image_attention,
            v.get("attention_norm", "batch"),
            v.get("stem_scale_branch", True),
        )
    else:
        raise ValueError(f"unknown vision family {family!r}; expected 'vit' or 'hybrid'")
    text = TextTransformer(
        t["context_length"],
        t["vocab_size"],
        t["width"],
        t["layers"],
        t["heads"],
        t.get("mlp_ratio", 4.0),
        embed_dim,
        t.get("eot_id", EOT_ID),
        text_attention,
        t.get("causal", True),
        t.get("mixer_layers", 0),
        t.get("mixer_kernel", 11),
        t.get("act", "gelu"),
        t.get("head_dim"),
        t.get("mlp_hidden"),
        t.get("mixer_layers_after", 0),
        t.get("mixer_scale_branch", True),
        pool=t.get("pool", "eot"),
        ln_eps=t.get("ln_eps", 1e-5),
        proj_bias=t.get("proj_bias", False),
        proj=t.get("proj", True),
    )
    # the logits' initial scale (log s) and bias, where the architecture sets them (sigmoid loss)
    logits = {f"init_{key}": cfg[key] for key in ("logit_scale", "logit_bias") if key in cfg}
    model = CLIP(visual, text, **image_normalization(cfg), **logits)
    if "tokenizer" in t:  # a given model's own tokenizer file (SigLIP's SentencePiece)
        model.own_tokenizer = tokenizer_from_spec(t["tokenizer"], t["context_length"])
    return model


def image_normalization(cfg: dict) -> dict:
    """The per-channel ``mean`` and ``std`` an architecture's weights expect (OpenAI CLIP's by default)."""
    v = cfg["vision"]
    return {"mean": tuple(v.get("mean", OPENAI_MEAN)), "std": tuple(v.get("std", OPENAI_STD))}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tower_params(cfg: dict) -> dict[str, int]:
    """Parameter counts of an architecture, built on the meta device (no memory, no time).

    ``text_body`` leaves out the token table, the convention TinyCLIP's names count by.
    """
    import torch

    with torch.device("meta"):
        model = build_from_config(cfg)
    text = count_params(model.text)
    return {
        "image": count_params(model.visual),
        "text": text,
        "text_body": text - model.text.token_embed.weight.numel(),
        "total": count_params(model),
    }


def require_model_name(model: str, alternatives: str = "") -> None:
    """A config's check that ``model`` names a registry model (``alternatives`` lists other
    accepted forms in the message)."""
    require(
        model in model_names(),
        "model",
        f"unknown model {model!r}; expected {alternatives}one of: {', '.join(model_names())}",
    )
