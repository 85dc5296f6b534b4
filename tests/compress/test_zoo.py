"""The model zoo: MobileCLIP-style folding, real-size parameter counts, and open_clip loading."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from compress.compat import open_clip
from compress.models import (
    build_model,
    is_reparameterized,
    load_model,
    model_config,
    model_names,
    reparameterize,
    tower_params,
)
from compress.models.loaders import (
    LoaderError,
    UnsupportedArchitecture,
    from_openclip_model,
    load_openclip,
    openclip_config,
    supported_architectures,
)
from compress.models.mobile import ConvBN, RepConv
from tests.helpers import model_inputs, perturb

VARIANTS = [
    {"kind": "softmax"},
    {"kind": "clipped", "gamma": -0.03, "zeta": 1.03},
    {"kind": "gated", "gate": "token"},
    {"kind": "gated", "gate": "pooled"},
]


@pytest.mark.parametrize("name", model_names())
def test_reparameterize_keeps_outputs_and_removes_branches(name):
    torch.manual_seed(0)
    model = perturb(build_model(name)).eval()
    images, tokens = model_inputs(model, batch=1)
    folded = reparameterize(copy.deepcopy(model))
    with torch.no_grad():
        before = model.encode_image(images), model.encode_text(tokens)
        after = folded.encode_image(images), folded.encode_text(tokens)
    for a, b in zip(before, after, strict=True):
        assert (a - b).abs().max().item() <= 1e-5
    assert is_reparameterized(folded)
    for module in folded.modules():
        assert not isinstance(module, ConvBN), "a conv+BN branch survived folding"
        if isinstance(module, RepConv):
            assert module.fused is not None and not module.branches()


def test_mobile_family_has_branches_until_folded():
    model = build_model("tiny_mobile").eval()
    assert not is_reparameterized(model)
    assert sum(isinstance(m, RepConv) for m in model.modules()) > 5
    with pytest.raises(ValueError, match="eval mode"):
        reparameterize(build_model("tiny_mobile"))


@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_attention_variants_reach_every_family(spec):
    model = build_model("tiny_mobile", image_attention=spec, text_attention=spec)
    attns = [m for m in model.modules() if type(m).__name__ == "Attention"]
    assert len(attns) == 2  # the hybrid image stage and the text transformer
    if spec["kind"] == "gated":
        assert all(a.gate is not None for a in attns)
    images, tokens = model_inputs(model)
    image_emb, text_emb, scale = model(images, tokens)
    (image_emb.sum() + text_emb.sum() + scale).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("name", [n for n in model_names() if "published" in model_config(n)])
def test_real_size_counts_within_5_percent_of_published(name):
    published, counts = model_config(name)["published"], tower_params(model_config(name))
    for key in ("image", "text", "text_body"):
        if key in published:
            assert abs(counts[key] / published[key] - 1) <= 0.05, (key, counts[key], published[key])


def test_mobileclip_s0_matches_the_published_shape():
    counts = tower_params(model_config("mobileclip_s0"))
    assert abs(counts["image"] - 11.4e6) / 11.4e6 < 0.01
    assert abs(counts["text"] - 42.4e6) / 42.4e6 < 0.01


# -- open_clip loading ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def openclip_models():
    """Random-init open_clip models (no download), built once per module."""
    oc, models = open_clip(), {}
    for arch in ("ViT-B-32", "ViT-B-16", "MobileCLIP2-S0"):
        torch.manual_seed(0)
        models[arch] = perturb(oc.create_model(arch, pretrained=None)).eval()
    return models


def _assert_same_embeddings(oc_model, ours, arch):
    size = ours.visual.image_size
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = open_clip().get_tokenizer(arch)(["a photo of a dog", "a red square left of a circle"])
    with torch.no_grad():
        for theirs, mine in (
            (oc_model.encode_image(images, normalize=True), ours.encode_image(images)),
            (oc_model.encode_text(tokens, normalize=True), ours.encode_text(tokens)),
        ):
            assert (theirs - mine).abs().max().item() <= 1e-5
    assert ours.logit_scale.exp().item() == pytest.approx(oc_model.logit_scale.exp().item())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["ViT-B-32", "ViT-B-16", "MobileCLIP2-S0"])
def test_loader_matches_openclip_forward(arch, openclip_models):
    oc_model = openclip_models[arch]
    ours = from_openclip_model(oc_model, openclip_config(arch))
    _assert_same_embeddings(oc_model, ours, arch)
    if arch.startswith("MobileCLIP"):  # and the folded model still does
        folded = reparameterize(copy.deepcopy(ours))
        _assert_same_embeddings(oc_model, folded, arch)
        assert ours.preprocess == {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch", ["MobileCLIP-B", "MobileCLIP2-B", "MobileCLIP2-S3", "MobileCLIP2-S4"]
)
def test_largest_mobileclips_match_openclip_before_and_after_folding(arch):
    """ViT-B with MobileCLIP's conv stem (B, 2-B) and the five-stage MCi3/MCi4 (2-S3, 2-S4),
    real size, random init: ~25 s for the four."""
    torch.manual_seed(0)
    oc_model = perturb(open_clip().create_model(arch, pretrained=None)).eval()
    ours = from_openclip_model(oc_model, openclip_config(arch))
    _assert_same_embeddings(oc_model, ours, arch)
    folded = reparameterize(ours)
    assert is_reparameterized(folded)
    _assert_same_embeddings(oc_model, folded, arch)


def test_loader_reads_a_checkpoint_file_weights_only(openclip_models, tmp_path):
    oc_model = openclip_models["MobileCLIP2-S0"]
    path = tmp_path / "mobileclip2_s0.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in oc_model.state_dict().items()}}, path)
    ours, config = load_openclip("MobileCLIP2-S0", checkpoint=path)
    _assert_same_embeddings(oc_model, ours, "MobileCLIP2-S0")
    assert config["source"] == {
        "arch": "MobileCLIP2-S0",
        "checkpoint": str(path),
        "pretrained": None,
    }

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": pickle.loads}, evil)
    with pytest.raises(LoaderError, match="weights-only"):
        load_openclip("MobileCLIP2-S0", checkpoint=evil)


def test_unsupported_architectures_list_the_supported_ones():
    supported = supported_architectures()
    mobileclips = {f"MobileCLIP-{s}" for s in ("S1", "S2", "B")}
    mobileclips |= {f"MobileCLIP2-{s}" for s in ("S0", "S2", "S3", "S4", "B")}
    assert {"ViT-B-32", "ViT-B-16", *mobileclips} <= set(supported)
    for arch, why in [
        ("RN50", "ResNet"),
        ("ViT-SO400M-14-SigLIP-384", "not a multiple of the patch size"),
        ("no-such-net", "no such"),
    ]:
        with pytest.raises(UnsupportedArchitecture, match=why) as err:
            openclip_config(arch)
        assert "supported: " in str(err.value) and "ViT-B-16" in str(err.value)
    with pytest.raises(LoaderError, match="pretrained tag"):
        load_openclip("ViT-B-32", pretrained="no_such_tag")


@pytest.mark.slow
def test_supported_architectures_map_every_weight():
    """Every architecture the loader claims: all of open_clip's weights land, with our shapes."""
    oc = open_clip()
    for arch in supported_architectures():
        with torch.device("meta"):
            oc_model = oc.create_model(arch, pretrained=None, device="meta")
            from_openclip_model(oc_model, openclip_config(arch))  # raises on a missing/extra key


def test_openclip_model_round_trips_through_our_model_file(openclip_models, tmp_path):
    from compress.models import ModelRecord, save_model

    config = openclip_config("MobileCLIP2-S0")
    ours = from_openclip_model(openclip_models["MobileCLIP2-S0"], config)
    save_model(ours, ModelRecord(config["name"], config), tmp_path / "model.pt")
    loaded, record = load_model(tmp_path / "model.pt")
    assert record.name == "openclip:MobileCLIP2-S0"
    _assert_same_embeddings(openclip_models["MobileCLIP2-S0"], loaded, "MobileCLIP2-S0")
