"""open_clip's PE-Core architectures (Perception Encoder) on our towers: rotary position
embeddings on a class token's ViT, attention pooling with its own heads, a biased projection and
CLIP's text tower at context 32, against open_clip."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from compress.compat import open_clip
from compress.distill.inherit import InheritError, inherit
from compress.models import (
    build_from_config,
    build_model,
    count_params,
    image_normalization,
    model_config,
    reparameterize,
    tower_params,
)
from compress.models.loaders import (
    UnsupportedArchitecture,
    from_openclip_model,
    openclip_config,
    supported_architectures,
)
from compress.models.rope import Rotary2d
from tests.helpers import model_inputs, perturb

# registered with timm by the fixture below
TINY_TRUNK = "edgeclip_test_vit_pe_32"  # PE-Core T/S/B/L's layout
TINY_G_TRUNK = "edgeclip_test_vit_pe_g_32"  # PE-Core-bigG's: no class token, positions from 0
IJ_TRUNK = "edgeclip_test_vit_pe_ij_32"  # the other rotary layout: refused


def _tiny_pe(**layout):
    """A two-block timm Eva shaped like PE-Core's image towers (class token and position table,
    norm before the blocks, rotary embeddings from position 1 in x-then-y order, attention
    pooling with more heads and another MLP ratio than the blocks'), small enough for a fast
    test. Its rotary grid is rescaled to a 6 × 6 reference (PE-Core's own equal their grid)."""
    from functools import partial

    from timm.layers import LayerNorm
    from timm.models.eva import Eva

    pe = {
        "attn_type": "rope",
        "use_pre_transformer_norm": True,
        "use_rot_pos_emb": True,
        "ref_feat_shape": (6, 6),
        "rope_grid_offset": 1.0,
        "rope_grid_indexing": "xy",
        "attn_pool_num_heads": 8,
        "attn_pool_mlp_ratio": 2.0,
        "norm_layer": partial(LayerNorm, eps=1e-5),
    }
    shape = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4}
    return Eva(**shape, **{**pe, **layout})


def edgeclip_test_vit_pe_32(pretrained: bool = False, **kwargs):
    head = {key: kwargs[key] for key in ("num_classes", "global_pool") if key in kwargs}
    return _tiny_pe(**head)


def edgeclip_test_vit_pe_g_32(pretrained: bool = False, **kwargs):
    head = {key: kwargs[key] for key in ("num_classes", "global_pool") if key in kwargs}
    bigg = {"class_token": False, "rope_grid_offset": 0.0, "mlp_ratio": 8960 / 1536}  # its ratio
    return _tiny_pe(**bigg, **head)


def edgeclip_test_vit_pe_ij_32(pretrained: bool = False, **kwargs):
    head = {key: kwargs[key] for key in ("num_classes", "global_pool") if key in kwargs}
    return _tiny_pe(rope_grid_indexing="ij", **head)


def _tiny_cfg(trunk: str) -> dict:
    """open_clip's config of a small PE-Core: the image tower as PE-Core-T's names it, the text
    tower with PE-Core's (default) options."""
    return {
        "embed_dim": 48,
        "custom_text": True,
        "vision_cfg": {
            "image_size": 32,
            "timm_model_name": trunk,
            "timm_pool": "map",
            "timm_proj": None,  # timm's head is the projection
        },
        "text_cfg": {"context_length": 16, "width": 32, "heads": 4, "layers": 2},
    }


@pytest.fixture(scope="module")
def tiny_trunks():
    """Register the tiny PE trunks with timm once (open_clip builds timm towers by name)."""
    open_clip()
    import timm

    for fn in (edgeclip_test_vit_pe_32, edgeclip_test_vit_pe_g_32, edgeclip_test_vit_pe_ij_32):
        if not timm.is_model(fn.__name__):
            timm.models.register_model(fn)
    return TINY_TRUNK


def _sharpen(model: torch.nn.Module) -> torch.nn.Module:
    """Every linear weight drawn at 1.5/√fan_in (then ``perturb``'s biases): open_clip's and timm's
    initial weights make every attention nearly uniform, under which a rotary embedding, even a
    wrong one, moves the embeddings by less than the tolerance; and timm's head starts at 1e-3."""
    g = torch.Generator().manual_seed(2)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.data.normal_(0, 1.5 / math.sqrt(module.in_features), generator=g)
    for name, p in model.named_parameters():
        if name.endswith("text_projection"):  # a bare (width, embed_dim) matrix in open_clip
            p.data.normal_(0, 1.5 / math.sqrt(p.shape[0]), generator=g)
    return perturb(model)


def _max_diffs(oc_model, ours) -> dict[str, float]:
    """Max-abs differences of normalised image and text embeddings (random pixels, random token
    ids with an end-of-text mid-caption: argmax pooling and ours agree on it)."""
    torch.manual_seed(0)
    images, tokens = model_inputs(ours)
    with torch.no_grad():
        image = oc_model.encode_image(images, normalize=True) - ours.encode_image(images)
        text = oc_model.encode_text(tokens, normalize=True) - ours.encode_text(tokens)
    return {"image": image.abs().max().item(), "text": text.abs().max().item()}


def _assert_parity(oc_model, ours) -> dict[str, float]:
    """Parity before and after ``reparameterize`` (nothing to fold); the larger differences."""
    diffs = _max_diffs(oc_model, ours)
    assert max(diffs.values()) <= 1e-5, diffs
    folded = _max_diffs(oc_model, reparameterize(copy.deepcopy(ours)))
    assert max(folded.values()) <= 1e-5, folded
    assert abs(oc_model.logit_scale.item() - ours.logit_scale.item()) == 0
    return {key: max(diffs[key], folded[key]) for key in diffs}


@pytest.mark.parametrize(("trunk", "class_token"), [(TINY_TRUNK, True), (TINY_G_TRUNK, False)])
def test_tiny_pe_core_matches_openclip(tiny_trunks, trunk, class_token):
    torch.manual_seed(0)
    cfg = _tiny_cfg(trunk)
    args = {k: v for k, v in cfg.items() if k != "custom_text"}
    oc_model = _sharpen(open_clip().model.CustomTextCLIP(**args)).eval()
    config = openclip_config("tiny-pe", cfg=cfg)
    vision = config["vision"]
    offset = 1.0 if class_token else 0.0
    assert vision["rope"] == {"offset": offset, "temperature": 10000.0, "ref_grid": 6}
    assert (vision["class_token"], vision["pool_heads"], vision["pool_mlp_ratio"]) == (
        class_token,
        8,
        2,
    )
    ours = from_openclip_model(oc_model, config)
    assert isinstance(ours.visual.rope, Rotary2d) and ours.visual.seq_len == 16 + class_token
    _assert_parity(oc_model, ours)
    # the comparison sees the rotary embedding: without it the image embeddings drift far
    ours.visual.rope = None
    assert _max_diffs(oc_model, ours)["image"] > 1e-3


def test_rotary_tables_leave_the_class_token_and_keep_norms():
    rope = Rotary2d(head_dim=8, grid=3, prefix=1, offset=1.0)
    assert rope.cos.shape == rope.sin.shape == (10, 8)  # class token + 3 × 3 patches
    x = torch.randn(2, 4, 10, 8)
    turned = rope(x)
    assert torch.equal(turned[:, :, 0], x[:, :, 0])
    pairs = turned.unflatten(-1, (-1, 2)).norm(dim=-1)  # a rotation keeps each pair's length
    torch.testing.assert_close(pairs, x.unflatten(-1, (-1, 2)).norm(dim=-1))
    # patch (row 0, column 1) turns its x pairs by (1 + 1)·freq, its y pairs by (0 + 1)·freq
    freqs = torch.tensor([1.0, 0.01])  # 10000^(-j / 2) for head_dim 8
    angles = torch.cat([2 * freqs, 1 * freqs]).repeat_interleave(2)
    torch.testing.assert_close(rope.cos[2], angles.cos())


def test_unsupported_pe_variant_says_why(tiny_trunks):
    with pytest.raises(UnsupportedArchitecture, match="rope_grid_indexing 'ij'") as err:
        openclip_config("tiny-pe-ij", cfg=_tiny_cfg(IJ_TRUNK))
    message = str(err.value)
    assert "\n" not in message and "supported: " in message and "PE-Core-T-16-384" in message


def test_pe_core_architectures_are_listed():
    supported = set(supported_architectures())
    assert {f"PE-Core-{s}" for s in ("T-16-384", "S-16-384", "B-16", "L-14-336")} <= supported
    assert "PE-Core-bigG-14-448" in supported  # no class token, 50 blocks: no other layout


# registered students and open_clip's image and text parameter counts
STUDENTS = {
    "pe_core_t16_384": ("PE-Core-T-16-384", 6_141_056, 63_405_056),
    "pe_core_s16_384": ("PE-Core-S-16-384", 23_783_168, 63_405_056),
}


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_registered_pe_core_students_are_shaped_as_open_clip_builds_them(name):
    """Same modules (the printed model: shapes, norms' epsilons, activations, rotary layout),
    same image normalisation, open_clip's parameter counts (built on the meta device)."""
    arch, image, text = STUDENTS[name]
    with torch.device("meta"):
        ours, theirs = build_model(name), build_from_config(openclip_config(arch))
    assert repr(ours) == repr(theirs)
    assert image_normalization(model_config(name)) == image_normalization(openclip_config(arch))
    counts = tower_params(model_config(name))
    assert (counts["image"], counts["text"]) == (image, text)
    assert model_config(name)["published"]["image"] == image


def test_pe_core_s_student_takes_pe_core_ls_text_tower_not_its_image_tower():
    """recipes/pe_core_distill.yaml's inheritance, on the meta device (shapes, no memory):
    PE-Core-L's 14-pixel patches do not fit the student's 16-pixel ones (one line); its text
    tower (CLIP's BPE, context 32, 64-channel heads) gives every second block."""
    with torch.device("meta"):
        teacher = build_from_config(openclip_config("PE-Core-L-14-336"))
        student = build_model("pe_core_s16_384")
    with pytest.raises(InheritError, match=r"^cannot inherit the image tower: patch sizes differ$"):
        inherit(teacher, student)
    report = inherit(teacher, student, towers=("text",))
    assert report["visual"] is None and report["text"]["layers"] == list(range(0, 24, 2))
    assert all(heads == list(range(8)) for heads in report["text"]["heads"])
    assert report["text"]["hidden"] == list(range(512))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["PE-Core-T-16-384", "PE-Core-S-16-384"])
def test_real_size_pe_core_matches_openclip(arch):
    """Real-size PE-Core-T and -S at random init: parameter counts as open_clip's, image and
    text embeddings within 1e-5 before and after ``reparameterize`` (~20 s each)."""
    torch.manual_seed(0)
    oc_model = _sharpen(open_clip().create_model(arch, pretrained=None)).eval()
    ours = from_openclip_model(oc_model, openclip_config(arch))
    assert count_params(ours.visual) == count_params(oc_model.visual)
    assert count_params(ours.text) == count_params(oc_model.text)
    diffs = _assert_parity(oc_model, ours)
    print(f"{arch}: image {count_params(ours.visual)}, text {count_params(ours.text)}, {diffs}")
