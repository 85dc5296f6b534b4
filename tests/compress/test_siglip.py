"""open_clip's SigLIP / SigLIP2 architectures on our towers: no class token, attention pooling,
last-token text pooling, biased projections, tanh GELU and the logit bias, against open_clip."""

from __future__ import annotations

import copy

import pytest
import torch

from compress.compat import open_clip
from compress.models import reparameterize
from compress.models.loaders import (
    UnsupportedArchitecture,
    from_openclip_model,
    openclip_config,
    supported_architectures,
)
from tests.helpers import perturb

TINY_TRUNK = "edgeclip_test_vit_siglip_32"  # registered with timm by the fixture below


def edgeclip_test_vit_siglip_32(pretrained: bool = False, **kwargs):
    """A two-block timm ViT shaped like SigLIP2's image towers (no class token, attention
    pooling, tanh GELU, an MLP ratio that is not 4), small enough for a fast test."""
    from timm.models.vision_transformer import VisionTransformer

    shape = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4}
    siglip = {"class_token": False, "global_pool": "map", "act_layer": "gelu_tanh"}
    head = {key: kwargs[key] for key in ("num_classes", "global_pool") if key in kwargs}
    return VisionTransformer(**shape, mlp_ratio=3.734375, **{**siglip, **head})


# open_clip's config of a small SigLIP2: the text tower's options as in ViT-B-16-SigLIP2.json
TINY_SIGLIP = {
    "embed_dim": 64,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {
        "image_size": 32,
        "timm_model_name": TINY_TRUNK,
        "timm_pool": "map",
        "timm_proj": "none",
    },
    "text_cfg": {
        "context_length": 16,
        "vocab_size": 500,
        "width": 48,
        "heads": 4,
        "layers": 2,
        "no_causal_mask": True,
        "proj_bias": True,
        "pool_type": "last",
        "norm_kwargs": {"eps": 1e-6},
        "act_kwargs": {"approximate": "tanh"},
    },
}


@pytest.fixture(scope="module")
def tiny_trunk():
    """Register the tiny SigLIP trunk with timm once (open_clip builds timm towers by name)."""
    open_clip()
    import timm

    if not timm.is_model(TINY_TRUNK):
        timm.models.register_model(edgeclip_test_vit_siglip_32)
    return TINY_TRUNK


def _max_diffs(oc_model, ours, vocab_size: int, context_length: int) -> dict[str, float]:
    """Max-abs differences of normalised image and text embeddings, scale and bias (random
    pixels and random token ids: last-token pooling needs no tokenizer)."""
    gen = torch.Generator().manual_seed(0)
    size = ours.visual.image_size
    images = torch.rand(2, 3, size, size, generator=gen)
    tokens = torch.randint(0, vocab_size, (2, context_length), generator=gen)
    with torch.no_grad():
        image = oc_model.encode_image(images, normalize=True) - ours.encode_image(images)
        text = oc_model.encode_text(tokens, normalize=True) - ours.encode_text(tokens)
    return {
        "image": image.abs().max().item(),
        "text": text.abs().max().item(),
        "scale": abs(oc_model.logit_scale.item() - ours.logit_scale.item()),
        "bias": abs(oc_model.logit_bias.item() - ours.logit_bias.item()),
    }


def _assert_parity(oc_model, ours, text_cfg: dict) -> None:
    diffs = _max_diffs(oc_model, ours, text_cfg["vocab_size"], text_cfg["context_length"])
    assert max(diffs.values()) <= 1e-5, diffs
    folded = reparameterize(copy.deepcopy(ours))  # nothing to fold, and the same embeddings
    diffs = _max_diffs(oc_model, folded, text_cfg["vocab_size"], text_cfg["context_length"])
    assert max(diffs.values()) <= 1e-5, diffs


def test_tiny_siglip2_matches_openclip(tiny_trunk):
    torch.manual_seed(0)
    oc = open_clip()
    oc_model = oc.model.CustomTextCLIP(
        **{k: v for k, v in TINY_SIGLIP.items() if k != "custom_text"}
    )
    oc_model = perturb(oc_model).eval()
    config = openclip_config("tiny-siglip2", cfg=TINY_SIGLIP)
    vision, text = config["vision"], config["text"]
    assert (vision["pool"], vision["act"], text["pool"], text["act"]) == (
        "map",
        "gelu_tanh",
        "last",
        "gelu_tanh",
    )
    assert config["text"]["ln_eps"] == 1e-6 and config["logit_bias"] == -10
    ours = from_openclip_model(oc_model, config)
    assert ours.visual.class_token is None and ours.visual.seq_len == 16
    _assert_parity(oc_model, ours, TINY_SIGLIP["text_cfg"])


@pytest.mark.slow
def test_vit_b16_siglip_matches_openclip():
    """Real-size ViT-B-16-SigLIP at random init: image, text, scale and bias within 1e-5."""
    torch.manual_seed(0)
    arch = "ViT-B-16-SigLIP"
    oc_model = perturb(open_clip().create_model(arch, pretrained=None)).eval()
    ours = from_openclip_model(oc_model, openclip_config(arch))
    _assert_parity(oc_model, ours, open_clip().get_model_config(arch)["text_cfg"])


def test_siglip_architectures_are_listed_and_the_rest_say_why():
    supported = set(supported_architectures())
    assert {"ViT-B-16-SigLIP", "ViT-B-16-SigLIP2", "ViT-SO400M-14-SigLIP2"} <= supported
    assert {"ViT-B-32-SigLIP2-256", "ViT-gopt-16-SigLIP2-256"} <= supported
    for arch, why in [
        ("ViT-SO400M-14-SigLIP-384", "not a multiple of the patch size"),
        ("nllb-clip-base-siglip", "Hugging Face text tower"),
    ]:
        assert arch not in supported
        with pytest.raises(UnsupportedArchitecture, match=why) as err:
            openclip_config(arch)
        message = str(err.value)
        assert "\n" not in message and "supported: " in message and "ViT-B-16-SigLIP" in message
