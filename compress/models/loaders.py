"""Build our model from an open_clip architecture and its weights, computing open_clip's outputs.

Two families map onto our modules: open_clip's own ViT + text transformer (CLIP, OpenCLIP,
TinyCLIP-style checkpoints) and timm image towers with a transformer text tower: MobileCLIP(2)'s
(MCi0–4 hybrids, and the ViT-B with a convolutional stem of MobileCLIP-B / MobileCLIP2-B),
SigLIP's ViTs and PE-Core's rotary Evas.
Weights come from a local checkpoint file or an open_clip pretrained tag (open_clip
downloads it on the user's machine); files are read with weights-only loading, so no code in a
checkpoint ever runs.

Example:
    >>> model, config = load_openclip("ViT-B-32", pretrained="laion2b_s34b_b79k")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from compress.compat import open_clip
from compress.errors import UserError, first_line
from compress.io import pickled_global
from compress.models import build_from_config
from compress.models.clip import CLIP
from compress.models.mobileclip_towers import MCI, MCI_VIT_B
from compress.models.timm_eva import eva_config, is_eva
from compress.models.timm_vit import map_vit_config
from compress.tokenizer import VOCAB_SIZE

PREFIX = "openclip:"


# open_clip (or timm) parameter names → ours, applied in order to the part after the tower prefix.
_BLOCK_RULES = [
    (r"^transformer\.resblocks\.", "blocks."),
    (r"\.attn\.in_proj_weight$", ".attn.qkv.weight"),
    (r"\.attn\.in_proj_bias$", ".attn.qkv.bias"),
    (r"\.attn\.out_proj\.", ".attn.out."),
    (r"\.mlp\.c_fc\.", ".mlp.fc."),
    (r"\.mlp\.c_proj\.", ".mlp.proj."),
]
VIT_RULES = [
    (r"^conv1\.weight$", "patch_embed.weight"),
    (r"^class_embedding$", "class_token"),
    (r"^positional_embedding$", "pos_embed"),
    (r"^proj$", "proj.weight"),
    *_BLOCK_RULES,
]
TEXT_RULES = [
    (r"^token_embedding\.", "token_embed."),
    (r"^positional_embedding$", "pos_embed"),
    (r"^text_projection$", "proj.weight"),
    (r"^text_projection\.", "proj."),  # a Linear with a bias (SigLIP)
    *_BLOCK_RULES,
]
MCI_RULES = [
    (r"^trunk\.", ""),
    (r"\.conv_kxk\.", ".convs."),
    (r"\.conv_scale\.", ".small."),
    (r"\.proj\.0\.large_conv\.", ".0.convs.0."),
    (r"\.proj\.0\.small_conv\.", ".0.small."),
    (r"\.downsample\.proj\.", ".downsample."),
    (r"\.pos_emb\.pos_enc\.", ".pos_embed.pos."),
    (r"\.token_mixer\.norm\.identity\.", ".token_mixer.norm."),
    (r"\.token_mixer\.qkv\.", ".attn.qkv."),
    (r"\.token_mixer\.proj\.", ".attn.out."),
    (r"(layer_scale(_\d)?)\.gamma$", r"\1"),
    (r"^head\.fc\.", "proj."),
]
TIMM_VIT_RULES = [
    (r"^trunk\.", ""),
    (r"^cls_token$", "class_token"),
    (r"^patch_embed\.backbone\.(\d+)\.conv\.", lambda m: f"patch_embed.layers.{3 * int(m[1])}."),
    (r"^patch_embed\.backbone\.(\d+)\.bn\.", lambda m: f"patch_embed.layers.{3 * int(m[1]) + 1}."),
    (r"\.norm1\.", ".ln_1."),
    (r"\.norm2\.", ".ln_2."),
    (r"\.attn\.proj\.", ".attn.out."),
    (r"\.mlp\.fc1\.", ".mlp.fc."),
    (r"\.mlp\.fc2\.", ".mlp.proj."),
    (r"^norm\.", "ln_post."),
    (r"^norm_pre\.", "ln_pre."),  # PE-Core's Eva
    (r"^head\.", "proj."),
    (r"^patch_embed\.proj\.", "patch_embed."),  # timm's PatchEmbed (SigLIP)
    (r"^attn_pool\.proj\.", "attn_pool.out."),
    (r"^attn_pool\.norm\.", "attn_pool.ln."),
]
_TRANSPOSED = {"visual.proj", "text_projection", "text.text_projection"}  # x @ W → Linear weight


class LoaderError(UserError):
    """A checkpoint, tag or architecture the loader cannot turn into our model."""


class UnsupportedArchitecture(LoaderError):
    """An open_clip architecture whose layout has no equivalent among our towers."""


def parse_name(model: str) -> str | None:
    """The open_clip architecture in ``openclip:<arch>``, or None for a registry name."""
    return model[len(PREFIX) :] if model.startswith(PREFIX) else None


def _unsupported(arch: str, why: str) -> UnsupportedArchitecture:
    names = ", ".join(supported_architectures())
    return UnsupportedArchitecture(
        f"open_clip architecture {arch!r} is not supported ({why}); supported: {names}"
    )


def _departure(cfg: dict, plain: dict) -> str | None:
    """The first option of ``cfg`` that differs from its plain-CLIP value (unset counts as plain)."""
    for key, value in plain.items():
        got = cfg.get(key)
        if got is not None and got != value:
            return f"{key}={got!r}"
    return None


def _vision_config(v: dict, quick_gelu: bool) -> dict | str:
    """Our vision config for an open_clip vision_cfg, or the reason there is none."""
    timm_name = v.get("timm_model_name")
    if timm_name and v.get("timm_pool") == "map":
        return eva_config(v) if is_eva(timm_name) else map_vit_config(v)
    if timm_name == "vit_base_mci_224":
        if v.get("timm_pool") != "token" or v.get("timm_proj"):
            return "MCi ViT tower with a custom pool or projection"
        return {**MCI_VIT_B, "image_size": v.get("image_size", 224)}
    if timm_name:
        if timm_name not in MCI:
            return f"timm image tower {timm_name}"
        if v.get("timm_pool", "avg") != "avg" or v.get("timm_proj"):
            return "MCi tower with a custom pool or projection"
        return {
            "family": "hybrid",
            "image_size": v.get("image_size", 256),
            **MCI[timm_name],
            "head_dim": 32,
        }
    if not isinstance(v.get("layers"), int):
        return "ResNet image tower"
    departure = _departure(
        v,
        {
            "attentional_pool": False,
            "ls_init_value": None,
            "no_ln_pre": False,
            "pool_type": "tok",
            "final_ln_after_pool": False,
            "output_tokens": False,
            "patch_dropout": 0.0,
        },
    )
    if departure:
        return f"vision_cfg.{departure}"
    size = v.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            return "non-square images"
        size = size[0]
    width = v["width"]
    return {
        "family": "vit",
        "image_size": size,
        "patch_size": v["patch_size"],
        "width": width,
        "layers": v["layers"],
        "heads": width // v.get("head_width", 64),
        "mlp_ratio": v.get("mlp_ratio", 4.0),
        "act": "quick_gelu" if quick_gelu else "gelu",
    }


def _text_config(t: dict, quick_gelu: bool) -> dict | str:
    """Our text config for an open_clip text_cfg, or the reason there is none."""
    if t.get("hf_model_name"):
        return f"Hugging Face text tower {t['hf_model_name']}"
    departure = _departure(
        t,
        {"embed_cls": False, "ls_init_value": None, "output_tokens": False},
    ) or _text_departure(t, quick_gelu)
    if departure:
        return f"text_cfg.{departure}"
    config = {
        "context_length": t.get("context_length", 77),
        "vocab_size": t.get("vocab_size", VOCAB_SIZE),
        "width": t.get("width", 512),
        "layers": t.get("layers", 12),
        "heads": t.get("heads", 8),
        "mlp_ratio": t.get("mlp_ratio", 4.0),
        "causal": not t.get("no_causal_mask", False),
        "act": "quick_gelu" if quick_gelu else "gelu",
    }
    return config | _siglip_text_options(t)


def _text_departure(t: dict, quick_gelu: bool) -> str | None:
    """The first of SigLIP's text options (pooling, projection, norm and activation arguments)
    set to a value our text tower has no equivalent for."""
    if t.get("pool_type", "argmax") not in ("argmax", "last"):
        return f"pool_type={t['pool_type']!r}"
    if t.get("proj_type", "linear") not in ("linear", "none"):
        return f"proj_type={t['proj_type']!r}"
    if set(t.get("norm_kwargs") or {}) - {"eps"}:
        return f"norm_kwargs={t['norm_kwargs']!r}"
    act = t.get("act_kwargs")
    if act and (act != {"approximate": "tanh"} or quick_gelu):
        return f"act_kwargs={act!r}"
    return None


def _siglip_text_options(t: dict) -> dict:
    """Our text keys for SigLIP's options, only those set away from CLIP's (a CLIP config stays
    as it was): last-token pooling, a biased or no projection, layer-norm eps, tanh GELU."""
    options = {
        "pool": "last" if t.get("pool_type") == "last" else None,
        "proj_bias": True if t.get("proj_bias") else None,
        "proj": False if t.get("proj_type") == "none" else None,
        "ln_eps": (t.get("norm_kwargs") or {}).get("eps"),
        "act": "gelu_tanh" if t.get("act_kwargs") else None,
    }
    return {key: value for key, value in options.items() if value is not None}


def _pretrained_cfg(arch: str, pretrained: str | None) -> dict:
    """open_clip's record of a pretrained tag; without a tag, that of the architecture's first tag
    (the tags of one architecture share their image normalisation)."""
    oc = open_clip()
    tags = [pretrained] if pretrained else oc.list_pretrained_tags_by_model(arch)[:1]
    return oc.get_pretrained_cfg(arch, tags[0]) if tags else {}


def openclip_config(arch: str, pretrained: str | None = None, cfg: dict | None = None) -> dict:
    """Our architecture dict for an open_clip architecture (and pretrained tag, which can switch
    on QuickGELU); raises :class:`UnsupportedArchitecture`. ``cfg``, an open_clip model config
    (``embed_dim``, ``vision_cfg``, ``text_cfg``, …), stands in for the named one's."""
    cfg = cfg or open_clip().get_model_config(arch)
    if cfg is None:
        raise _unsupported(arch, "open_clip has no such architecture")
    tag_cfg = _pretrained_cfg(arch, pretrained)
    quick_gelu = cfg.get("quick_gelu", False) or bool(pretrained and tag_cfg.get("quick_gelu"))
    vision = _vision_config(cfg.get("vision_cfg", {}), quick_gelu)
    text = _text_config(cfg.get("text_cfg", {}), quick_gelu)
    for part in (vision, text):
        if isinstance(part, str):
            raise _unsupported(arch, part)
    if "mean" in tag_cfg:
        vision.update(mean=list(tag_cfg["mean"]), std=list(tag_cfg["std"]))
    return {
        "name": f"{PREFIX}{arch}",
        "description": f"open_clip {arch}",
        "embed_dim": cfg["embed_dim"],
        "vision": vision,
        "text": text,
        **_logit_config(cfg),
    }


def _logit_config(cfg: dict) -> dict:
    """The logits' initial log-scale and bias where open_clip's config sets them (SigLIP's
    sigmoid loss learns a bias); a loaded checkpoint overwrites both."""
    keys = {"init_logit_scale": "logit_scale", "init_logit_bias": "logit_bias"}
    return {ours: float(cfg[theirs]) for theirs, ours in keys.items() if theirs in cfg}


def supported_architectures() -> list[str]:
    """open_clip architecture names the loader maps onto our towers."""
    oc = open_clip()
    names = []
    for arch in oc.list_models():
        cfg = oc.get_model_config(arch) or {}
        parts = (
            _vision_config(cfg.get("vision_cfg", {}), False),
            _text_config(cfg.get("text_cfg", {}), False),
        )
        if not any(isinstance(p, str) for p in parts):
            names.append(arch)
    return names


def foreign_tokenizer(arch: str) -> str | None:
    """The tokenizer an open_clip architecture needs when it is not CLIP's BPE (ours): SigLIP's
    SentencePiece models name a Hugging Face tokenizer; None for CLIP's."""
    cfg = open_clip().get_model_config(arch) or {}
    return (cfg.get("text_cfg") or {}).get("hf_tokenizer_name")


def tokenizer_cleaning(arch: str) -> str:
    """How open_clip cleans text before an architecture's own tokenizer (SigLIP: canonicalize)."""
    cfg = open_clip().get_model_config(arch) or {}
    return ((cfg.get("text_cfg") or {}).get("tokenizer_kwargs") or {}).get("clean", "whitespace")


def missing_tokenizer(arch: str, name: str) -> str:
    """What to fetch for an architecture whose tokenizer is not CLIP's BPE, in one line."""
    return (
        f"{arch} reads text tokenized by {name} (SentencePiece), not CLIP's BPE: fetch "
        f"tokenizer.json and tokenizer_config.json from https://huggingface.co/{name} into one "
        "folder and give its path as the teacher's tokenizer"
    )


def rename_key(key: str, rules: list) -> str:
    """``key`` after every (pattern, replacement) rule in turn (a replacement may be a function)."""
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def convert_state_dict(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Map an open_clip model's state dict onto our parameter names and layouts."""
    if any("reparam_conv" in key for key in state):
        raise LoaderError(
            "the checkpoint holds reparameterized (inference-mode) MCi weights; "
            "load the training checkpoint, edgeclip folds the branches itself at export"
        )
    vision = config["vision"]
    if vision.get("family") == "hybrid":
        vision_rules = MCI_RULES
    elif any(key.startswith("visual.trunk.") for key in state):
        vision_rules = TIMM_VIT_RULES
    else:
        vision_rules = VIT_RULES
    out = {}
    for key, value in state.items():
        if key.startswith("visual."):
            new = "visual." + rename_key(key[len("visual.") :], vision_rules)
            value = fit_vit_embeddings(new, value, vision.get("class_token", True))
        elif key.startswith("text."):  # CustomTextCLIP keeps the text tower under text.
            new = "text." + rename_key(key[len("text.") :], TEXT_RULES)
        elif key in ("logit_scale", "logit_bias"):
            new, value = key, value.reshape(())
        elif key == "attn_mask":
            continue
        else:  # CLIP keeps the text tower at the top level
            new = "text." + rename_key(key, TEXT_RULES)
        out[new] = value.t() if key in _TRANSPOSED else value
    return out


def fit_vit_embeddings(name: str, value: torch.Tensor, class_token: bool = True) -> torch.Tensor:
    """timm's (1, 1, D) class token → (D,); timm's (1, N, D) position table → (N, D), with a zero
    row first where our tower has a class token and timm's table no row for it
    (``no_embed_class``), so adding it leaves the class token as it is."""
    if name == "visual.class_token":
        return value.reshape(-1)
    if name == "visual.pos_embed" and value.dim() == 3:
        table = value.reshape(-1, value.shape[-1])
        rows = table.shape[0]  # k² for a square grid of patches alone; k² + 1 is never a square
        if not class_token or math.isqrt(rows) ** 2 != rows:  # SigLIP's; PE-Core's has the class
            return table
        return torch.cat([table.new_zeros(1, table.shape[1]), table])
    return value


def from_openclip_model(
    oc_model: nn.Module,
    config: dict,
    image_attention: dict | None = None,
    text_attention: dict | None = None,
) -> CLIP:
    """Our model with the weights of an instantiated open_clip model (train-time branches kept).

    Attention variants other than softmax keep their fresh gate parameters; every other weight
    must be present in the open_clip model.
    """
    model = build_from_config(config, image_attention, text_attention)
    state = convert_state_dict(oc_model.state_dict(), config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if ".attn.gate." not in k]
    if missing or unexpected:
        shown = ", ".join((missing + unexpected)[:5])
        raise LoaderError(f"open_clip weights do not fit {config['name']}: {shown}")
    return model.eval()


def _download(arch: str, tag: str | None) -> str | None:
    """The local file of a pretrained tag's weights, downloaded by open_clip into its cache once;
    a failed download says so, from where, and how to do without it."""
    if tag is None:
        return None
    oc = open_clip()
    cfg = oc.get_pretrained_cfg(arch, tag)
    hub = cfg.get("hf_hub", "").rstrip("/")
    where = f"the Hugging Face Hub ({hub})" if hub else cfg.get("url") or "nowhere (no source)"
    try:
        path = oc.download_pretrained(cfg)
    except Exception as err:  # network, hub and file errors all mean: no weights here
        raise LoaderError(
            f"open_clip {arch} tag {tag!r}: the weights could not be downloaded from {where} "
            f"({first_line(err)}); download them where the network allows and give the file as "
            "checkpoint: path/to/file instead of pretrained"
        ) from None
    if not path:
        raise LoaderError(f"open_clip {arch} tag {tag!r}: open_clip names no file for it")
    return path


def load_openclip(
    arch: str,
    checkpoint: str | Path | None = None,
    pretrained: str | None = None,
    image_attention: dict | None = None,
    text_attention: dict | None = None,
) -> tuple[CLIP, dict]:
    """Our model and architecture dict for an open_clip architecture and its weights.

    Args:
        arch: open_clip architecture name, e.g. ``"ViT-B-16"`` or ``"MobileCLIP2-S0"``.
        checkpoint: a local open_clip checkpoint (state dict, ``.safetensors`` or a training
            checkpoint with ``state_dict``), read weights-only.
        pretrained: an open_clip pretrained tag, resolved and downloaded by open_clip.
            With neither, the weights are open_clip's random initialisation.
    """
    if checkpoint is not None and pretrained is not None:
        raise LoaderError("give either a checkpoint or a pretrained tag, not both")
    oc = open_clip()
    config = openclip_config(arch, pretrained)
    quick_gelu = config["vision"].get("act") == "quick_gelu"
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise LoaderError(f"{checkpoint}: no such checkpoint file")
    if pretrained is not None and pretrained not in oc.list_pretrained_tags_by_model(arch):
        tags = ", ".join(oc.list_pretrained_tags_by_model(arch)) or "none"
        raise LoaderError(
            f"open_clip has no pretrained tag {pretrained!r} for {arch}; tags: {tags}"
        )
    source = str(checkpoint) if checkpoint is not None else pretrained
    weights = str(checkpoint) if checkpoint is not None else _download(arch, pretrained)
    try:
        oc_model = oc.create_model(
            arch, pretrained=weights, weights_only=True, force_quick_gelu=quick_gelu, device="cpu"
        )
    except pickle.UnpicklingError as err:
        found = pickled_global(err)
        what = f"it references {found}" if found else "it is not a plain tensor file"
        raise LoaderError(
            f"{source}: not a weights-only checkpoint ({what}); edgeclip never runs code from a checkpoint"
        ) from None
    except RuntimeError as err:  # open_clip's strict load: keys or shapes of another model
        raise LoaderError(f"{source}: does not fit open_clip {arch} ({first_line(err)})") from None
    model = from_openclip_model(oc_model, config, image_attention, text_attention)
    config["source"] = {
        "arch": arch,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "pretrained": pretrained,
    }
    return model, config
