"""Apple's own MobileCLIP checkpoints (``mobileclip_s0.pt`` … ``mobileclip_b.pt``, the layout of
its ``ml-mobileclip`` code) as our models: ``teacher: {model: mobileclip:s0, checkpoint: ...}``.

MobileCLIP-S0 exists only in this format: an MCi0 image tower and a Text-RepMixer text tower (one
convolutional RepMixer block, four transformer blocks, one more RepMixer block). S1/S2 pair MCi1/2
with a 12-layer transformer; B pairs a ViT-B/16 with a convolutional stem with a causal one. The
files hold training-time (unfolded) weights; they are read weights-only, and a file that fits
another MobileCLIP says which one.

Example:
    >>> model, config = load_apple("s0", "mobileclip_s0.pt")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import torch

from compress.io import read_state_dict, state_misfits
from compress.models.build import build_from_config, model_config
from compress.models.clip import CLIP
from compress.models.loaders import LoaderError, fit_vit_embeddings, rename_key
from compress.models.mobileclip_towers import MCI, MCI_VIT_B
from compress.tokenizer import VOCAB_SIZE

PREFIX = "mobileclip:"
NAMES = {"s0": "MobileCLIP-S0", "s1": "MobileCLIP-S1", "s2": "MobileCLIP-S2", "b": "MobileCLIP-B"}

_TEXT = {"context_length": 77, "vocab_size": VOCAB_SIZE, "width": 512, "layers": 12, "heads": 8}

# Apple's parameter names → ours, applied in order after the tower prefix (and, in the MCi
# towers, after its flat ``network.k`` list has become ``stages.i.<part>``).
_BLOCK_RULES = [
    (r"\.pre_norm_mha\.0\.", ".ln_1."),
    (r"\.pre_norm_mha\.1\.qkv_proj\.", ".attn.qkv."),
    (r"\.pre_norm_mha\.1\.out_proj\.", ".attn.out."),
    (r"\.pre_norm_ffn\.0\.", ".ln_2."),
    (r"\.pre_norm_ffn\.1\.", ".mlp.fc."),
    (r"\.pre_norm_ffn\.4\.", ".mlp.proj."),
]
_REP_RULES = [  # MobileOne / RepMixer / ConvFFN branches
    (r"\.token_mixer\.norm\.rbr_skip\.", ".token_mixer.norm."),
    (r"\.rbr_conv\.", ".convs."),
    (r"\.rbr_scale\.", ".small."),
    (r"\.rbr_skip\.", ".identity."),
    (r"\.convffn\.", ".mlp."),
]
_MCI_RULES = [
    (r"^patch_embed\.", "stem."),
    (r"\.downsample\.proj\.0\.lkb_origin\.", ".downsample.0.convs.0."),
    (r"\.downsample\.proj\.0\.small_conv\.", ".downsample.0.small."),
    (r"\.downsample\.proj\.0\.se\.", ".downsample.0.se."),
    (r"\.downsample\.proj\.1\.", ".downsample.1."),
    (r"\.pos_embed\.pe\.", ".pos_embed.pos."),
    (r"\.token_mixer\.qkv\.", ".attn.qkv."),
    (r"\.token_mixer\.proj\.", ".attn.out."),
    (r"^conv_exp\.se\.reduce\.", "final_conv.se.fc1."),
    (r"^conv_exp\.se\.expand\.", "final_conv.se.fc2."),
    (r"^conv_exp\.", "final_conv."),
    (r"^head\.proj$", "proj.weight"),
    *_REP_RULES,
]
_VIT_RULES = [
    (r"^patch_emb\.(\d+)\.block\.conv\.", lambda m: f"patch_embed.layers.{3 * int(m[1])}."),
    (r"^patch_emb\.(\d+)\.block\.norm\.", lambda m: f"patch_embed.layers.{3 * int(m[1]) + 1}."),
    (r"^cls_token$", "class_token"),
    (r"^pos_embed\.pos_embed\.pos_embed$", "pos_embed"),
    (r"^transformer\.", "blocks."),
    (r"^post_transformer_norm\.", "ln_post."),
    (r"^classifier\.proj$", "proj.weight"),
    *_BLOCK_RULES,
]
_TEXT_RULES = [
    (r"^embedding_layer\.", "token_embed."),
    (r"^positional_embedding\.pos_embed\.pos_embed$", "pos_embed"),
    (r"^projection_layer$", "proj.weight"),
    (r"^final_layer_norm\.", "ln_final."),
    *_BLOCK_RULES,
    *_REP_RULES,
]
_TRANSPOSED = {"visual.proj.weight", "text.proj.weight"}  # Apple's x @ W → Linear weight


def parse_name(model: str) -> str | None:
    """The Apple model in ``mobileclip:<name>`` (``s0``, ``s1``, ``s2``, ``b``), else None."""
    return model[len(PREFIX) :] if model.startswith(PREFIX) else None


def apple_config(name: str) -> dict:
    """Our architecture dict for one of Apple's MobileCLIPs (``s0``, ``s1``, ``s2``, ``b``)."""
    if name not in NAMES:
        raise LoaderError(
            f"unknown Apple MobileCLIP {PREFIX}{name}; "
            f"expected one of: {', '.join(PREFIX + n for n in NAMES)}"
        )
    if name == "s0":  # our registry's mobileclip_s0 is Apple's S0, branch for branch
        s0 = model_config("mobileclip_s0")
        vision, text = s0["vision"], s0["text"]
    elif name == "b":  # Apple's stem pads its first 4×4 convolution by 1 (timm's port does not)
        vision = {
            **MCI_VIT_B,
            "image_size": 224,
            "stem_padding": [1, 0, 0],
            "ln_eps": 1e-5,
            "proj_bias": False,
        }
        text = {**_TEXT, "causal": True}
    else:
        vision = {"family": "hybrid", "image_size": 256, **MCI[f"fastvit_mci{name[1]}"]}
        text = {**_TEXT, "causal": False}
    return {
        "name": f"{PREFIX}{name}",
        "description": f"Apple {NAMES[name]} (ml-mobileclip checkpoint layout)",
        "embed_dim": 512,
        "vision": {**vision, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},  # no normalisation
        "text": text,
    }


def _network_parts(vision: dict) -> dict[str, str]:
    """Apple's flat MCi ``network`` list (per stage: downsample, positional encoding, blocks)
    → our ``stages.i.<part>`` names."""
    parts, k = {}, 0
    for i, has_pos in enumerate(vision["pos_embed"]):
        for part, present in (("downsample", i > 0), ("pos_embed", has_pos), ("blocks", True)):
            if present:
                parts[f"network.{k}."] = f"stages.{i}.{part}."
                k += 1
    return parts


def _text_parts(text: dict) -> dict[str, str]:
    """Apple's ``transformer.k`` list (mixers, transformer blocks, mixers) → our names."""
    before, layers = text.get("mixer_layers", 0), text["layers"]
    after = text.get("mixer_layers_after", 0)
    names = [f"mixers.{i}." for i in range(before)] + [f"blocks.{i}." for i in range(layers)]
    names += [f"mixers_after.{i}." for i in range(after)]
    return {f"transformer.{k}.": name for k, name in enumerate(names)}


def _replace_prefix(key: str, parts: dict[str, str]) -> str:
    for old, new in parts.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def convert_apple_state_dict(state: dict[str, torch.Tensor], config: dict) -> dict:
    """Map an ml-mobileclip state dict onto our parameter names and layouts."""
    vision, hybrid = config["vision"], config["vision"].get("family") == "hybrid"
    network, transformer = _network_parts(vision) if hybrid else {}, _text_parts(config["text"])
    out = {}
    for key, value in state.items():
        if key.startswith("image_encoder.model."):
            rest = _replace_prefix(key[len("image_encoder.model.") :], network)
            new = "visual." + rename_key(rest, _MCI_RULES if hybrid else _VIT_RULES)
        elif key.startswith("text_encoder."):
            rest = _replace_prefix(key[len("text_encoder.") :], transformer)
            new = "text." + rename_key(rest, _TEXT_RULES)
        else:
            new = key
        if new in _TRANSPOSED:
            value = value.t()
        elif new in ("visual.class_token", "visual.pos_embed"):  # as timm's, pos (1, 1, P, D)
            value = fit_vit_embeddings(new, value.flatten(0, 1) if value.dim() == 4 else value)
        elif new == "text.pos_embed":  # (1, 1, positions, width)
            value = value.reshape(value.shape[-2:])
        out[new] = value.reshape(()) if new == "logit_scale" else value
    if hybrid and "visual.proj.weight" in out:  # Apple's head has no bias
        out["visual.proj.bias"] = out["visual.proj.weight"].new_zeros(config["embed_dim"])
    return out


def _misfits(state: dict[str, torch.Tensor], config: dict) -> tuple[list[str], list[str]]:
    """Our tensors the converted ``state`` lacks or shapes otherwise, and its extra names."""
    with torch.device("meta"):
        expected = build_from_config(config).state_dict()
    return state_misfits(state, expected)


def _fits(state: dict[str, torch.Tensor], name: str) -> bool:
    config = apple_config(name)
    return _misfits(convert_apple_state_dict(state, config), config) == ([], [])


def from_apple_state_dict(state: dict[str, torch.Tensor], name: str, source: str = "") -> CLIP:
    """Our model with the weights of an ml-mobileclip state dict for MobileCLIP-``name``."""
    if any("reparam_conv" in key for key in state):
        raise LoaderError(
            f"{source or 'the checkpoint'}: holds reparameterized (inference-mode) weights; load "
            "the training checkpoint, edgeclip folds the branches itself at export"
        )
    config = apple_config(name)
    converted = convert_apple_state_dict(state, config)
    wrong, extra = _misfits(converted, config)
    if wrong or extra:
        fits = [PREFIX + other for other in NAMES if other != name and _fits(state, other)]
        everything = ", ".join(PREFIX + n for n in NAMES)
        guess = f"it fits {fits[0]}" if fits else f"it fits none of {everything}"
        example = (wrong or extra)[0]
        raise LoaderError(
            f"{source or 'the checkpoint'}: not {NAMES[name]} weights in Apple's layout "
            f"({len(wrong)} tensors missing or misshapen, {len(extra)} unexpected, first "
            f"{example!r}); {guess}"
        )
    model = build_from_config(config)
    model.load_state_dict(converted)
    return model.eval()


def load_apple(name: str, checkpoint: str | Path | None = None) -> tuple[CLIP, dict]:
    """Our model and architecture dict for ``mobileclip:<name>``, from an ml-mobileclip
    checkpoint read weights-only (random init without one)."""
    config = apple_config(name)
    if checkpoint is None:
        model = build_from_config(config).eval()
    else:
        state = read_state_dict(checkpoint, f"{PREFIX}{name} checkpoint")
        model = from_apple_state_dict(state, name, str(checkpoint))
    config["source"] = {"apple": name, "checkpoint": str(checkpoint) if checkpoint else None}
    return model, config
