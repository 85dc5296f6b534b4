"""Automatic weight inheritance: masked == pruned, parameter accounting, the sparsity controller."""

import json
from contextlib import contextmanager

import pytest
import torch

from compress.distill.losses import clip_loss
from compress.distill.prune import AutoInheritance, HardConcrete
from compress.models import build_from_config, build_model, count_params, model_config
from tests.helpers import MCI_VIT, model_inputs


@torch.no_grad()
def _embed(model, images, tokens):
    return model.encode_image(images), model.encode_text(tokens)


@torch.no_grad()
def _randomise_norms(model):
    """Non-trivial LayerNorm scales and biases, so a wrongly folded z_hidden shows."""
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.weight.normal_(1.0, 0.2)
            m.bias.normal_(0.0, 0.2)


@torch.no_grad()
def _scramble(inherit, seed=1):
    """log α's off (−5), fractional (0.3, 1: z ≈ 0.59, 0.78) or on (5); layer 0 of each tower off."""
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor([-5.0, 0.3, 1.0, 5.0])
    for p in inherit.masks.parameters():
        p.copy_(values[torch.randint(0, 4, p.shape, generator=g)])
    for masks in inherit.masks.values():
        masks.layers.log_alpha.fill_(5.0)
        masks.layers.log_alpha[0] = -5.0
        for group in [*masks.heads, *masks.neurons]:  # one entry kept, one dropped per group
            if group.n:
                group.log_alpha[0], group.log_alpha[-1] = 1.0, -5.0


@contextmanager
def _one_thread():
    """Tiny models run no faster on two threads, and far slower when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


SOFTMAX = {"image": None, "text": None}
CASES = [
    ("tiny", None, None),
    ("tiny", {"kind": "clipped", "alpha": 4.0}, {"kind": "gated", "gate": "head"}),
    ("demo_teacher", None, {"kind": "gated"}),  # conv stem; token gates in the text tower
    ("mci_vit", None, None),
    ("tiny_pe", None, None),  # rotary embeddings, an attention pool with its own heads
    ("tiny_siglip", None, None),  # no class token, no image projection, last-token text pool
]


@pytest.mark.parametrize("name, image_attention, text_attention", CASES)
def test_pruned_model_computes_the_masked_model(name, image_attention, text_attention):
    torch.manual_seed(0)
    config = MCI_VIT if name == "mci_vit" else model_config(name)
    model = build_from_config(config, image_attention, text_attention).eval()
    _randomise_norms(model)
    images, tokens = model_inputs(model, batch=3)
    plain = _embed(model, images, tokens)

    inherit = AutoInheritance(model, target=0.5, ramp_steps=10).eval()
    _scramble(inherit)
    inherit.attach(model)
    masked = _embed(model, images, tokens)
    attention = {"image": image_attention, "text": text_attention}
    pruned, config, report = inherit.prune(model, attention)
    inherit.detach()
    assert all(torch.equal(a, b) for a, b in zip(_embed(model, images, tokens), plain, strict=True))
    assert (masked[0] - plain[0]).abs().max() > 1e-2 and (masked[1] - plain[1]).abs().max() > 1e-2

    for tower in ("visual", "text"):  # something of every kind was pruned
        kept = report[tower]
        full = getattr(model, tower)
        # a tower without a projection emits its width: that is not pruned
        assert kept["hidden"][0] < kept["hidden"][1] or (name, tower) == ("tiny_siglip", "visual")
        assert 0 not in kept["layers"] and len(kept["layers"]) == len(full.blocks) - 1
        for i in kept["layers"]:
            assert 0 < kept["heads"][i] < full.blocks[i].attn.heads
            assert 0 < kept["neurons"][i] < full.blocks[i].mlp.fc.out_features

    out = _embed(pruned, images, tokens)
    for a, b in zip(masked, out, strict=True):
        assert (a - b).abs().max().item() <= 1e-5

    after = count_params(pruned)
    assert after < count_params(model) and report["params_after"] == after
    assert report["sparsity"] == pytest.approx(1 - after / count_params(model))
    rebuilt = build_from_config(
        json.loads(json.dumps(config)), image_attention, text_attention
    ).eval()
    assert count_params(rebuilt) == after
    rebuilt.load_state_dict(pruned.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(_embed(rebuilt, images, tokens), out, strict=True))
    # the parameter formula at the deterministic masks counts the pruned model
    assert inherit.expected_params("deterministic").item() == pytest.approx(after, rel=1e-9)


@pytest.mark.parametrize("name", ["tiny", "demo_teacher", "tiny_pe", "tiny_siglip"])
def test_parameter_formula_at_all_ones_is_the_full_count(name):
    model = build_model(name, text_attention={"kind": "gated"})
    inherit = AutoInheritance(model, target=0.3, ramp_steps=10)
    assert inherit.expected_params("ones").item() == count_params(model)
    assert 0 < inherit.expected_sparsity().item() < 0.05  # masks start nearly all on


def test_initial_masks_change_nothing():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    images, tokens = model_inputs(model, batch=3)
    plain = _embed(model, images, tokens)
    inherit = AutoInheritance(model, target=0.5, ramp_steps=10).eval()
    inherit.attach(model)
    masked = _embed(model, images, tokens)
    pruned, _, report = inherit.prune(model, SOFTMAX)
    assert all((a - b).abs().max() < 1e-6 for a, b in zip(masked, plain, strict=True))
    assert report["params_after"] == count_params(model) and report["sparsity"] == 0


def test_only_some_towers_and_no_hidden_pruning():
    torch.manual_seed(0)
    model = build_model("demo_teacher").eval()
    _randomise_norms(model)
    images, tokens = model_inputs(model, batch=2)
    inherit = AutoInheritance(model, 0.2, 10, towers=("visual",), prune_hidden=False).eval()
    _scramble(inherit)
    inherit.attach(model)
    masked = _embed(model, images, tokens)
    pruned, config, report = inherit.prune(model, SOFTMAX)
    assert config["vision"]["width"] == model.visual.proj.in_features
    assert count_params(pruned.text) == count_params(model.text)
    for a, b in zip(masked, _embed(pruned, images, tokens), strict=True):
        assert (a - b).abs().max().item() <= 1e-5
    assert inherit.expected_params("deterministic").item() == report["params_after"]


@pytest.mark.parametrize("name", ["tiny", "tiny_pe"])
def test_training_mode_samples_masks_and_trains_every_one(name):
    torch.manual_seed(0)
    model = build_model(name, text_attention={"kind": "gated"})
    model.requires_grad_(False)
    inherit = AutoInheritance(model, target=0.5, ramp_steps=10)
    with torch.no_grad():
        for p in inherit.masks.parameters():
            p.uniform_(-1.0, 2.0)  # open and closed gates are both likely
    inherit.attach(model)
    images, tokens = model_inputs(model, batch=3)
    a, b = model(images, tokens)[0], model(images, tokens)[0]
    assert not torch.allclose(a, b)  # a fresh sample per forward
    with _one_thread():
        for _ in range(8):  # a sample may close a layer or clamp a gate: no gradient from that one
            clip_loss(*model(images, tokens)).backward()
    for name, p in inherit.masks.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    inherit.eval()
    assert torch.equal(model(images, tokens)[0], model(images, tokens)[0])


def test_pruned_pe_core_layout_rebuilds_with_its_rotary_tables_and_pool():
    """The pruned config names the rotary layout and the pool's own shapes: its heads keep their
    width (the rotary tables' and the pool's), its MLP its neurons, on fewer hidden channels."""
    torch.manual_seed(0)
    model = build_model("tiny_pe").eval()
    inherit = AutoInheritance(model, target=0.5, ramp_steps=10).eval()
    _scramble(inherit)
    pruned, config, _ = inherit.prune(model, SOFTMAX)
    vision = config["vision"]
    assert vision["rope"] == model_config("tiny_pe")["vision"]["rope"]
    assert (vision["head_dim"], vision["pool"], vision["class_token"]) == (16, "map", True)
    assert (vision["pool_heads"], vision["pool_head_dim"], vision["pool_mlp_hidden"]) == (4, 8, 128)
    assert vision["width"] < 32 and vision["proj_bias"]
    rebuilt = build_from_config(json.loads(json.dumps(config))).eval()
    rebuilt.load_state_dict(pruned.state_dict())
    for table in ("cos", "sin"):
        assert torch.equal(getattr(rebuilt.visual.rope, table), getattr(model.visual.rope, table))


def test_hard_concrete_deterministic_mask_keeps_the_expected_count():
    gate = HardConcrete(8)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([4.0, 3.0, 0.5, 0.2, -1.0, -3.0, -4.0, -6.0]))
    z = gate.deterministic()
    k = round(gate.keep_prob().sum().item())
    assert int((z > 0).sum()) == k and (z[:k] > 0).all() and (z[k:] == 0).all()
    assert z[0] == 1 and 0 < z[2] < 1  # large log α → 1; middling → fractional
    samples = torch.stack([gate.sample() for _ in range(2000)])
    assert ((samples == 0) | (samples == 1)).any() and samples.min() >= 0 and samples.max() <= 1
    keep_rate = (samples > 0).float().mean(0)
    assert torch.allclose(keep_rate, gate.keep_prob(), atol=0.05)


def test_penalty_ramps_and_its_lambdas_ascend():
    model = build_model("tiny")
    inherit = AutoInheritance(model, target=0.4, ramp_steps=100)
    assert [inherit.penalty(s)[1]["target"] for s in (0, 50, 100, 500)] == pytest.approx(
        [0.0, 0.2, 0.4, 0.4]
    )
    term, stats = inherit.penalty(100)
    term.backward()
    gap = stats["expected_sparsity"] - stats["target"]  # < 0: not sparse enough yet
    # the gradient is negated: a descent step moves λ1 along gap (ascent on the penalty)
    assert inherit.lambda1.grad.item() == pytest.approx(-gap, rel=1e-5)
    assert inherit.lambda2.grad.item() == pytest.approx(-(gap**2), rel=1e-5)


@pytest.mark.slow
def test_learned_masks_reach_the_target_sparsity():
    torch.manual_seed(0)
    model = build_model("tiny")
    model.requires_grad_(False)
    inherit = AutoInheritance(model, target=0.5, ramp_steps=150)
    inherit.attach(model)
    groups = inherit.param_groups()
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in inherit.parameters()}
    opt = torch.optim.AdamW(groups)
    images, tokens = model_inputs(model, batch=8)
    with _one_thread():
        for step in range(300):
            loss = clip_loss(*model(images, tokens)) + inherit.penalty(step)[0]
            opt.zero_grad()
            loss.backward()
            opt.step()
        inherit.eval()
        pruned, _, report = inherit.prune(model, SOFTMAX)
    assert inherit.expected_sparsity().item() == pytest.approx(0.5, abs=0.02)
    assert report["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert count_params(pruned) == report["params_after"]


def test_clear_errors():
    model = build_model("tiny")
    for target in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="target sparsity must be in"):
            AutoInheritance(model, target=target, ramp_steps=10)
    with pytest.raises(ValueError, match="towers"):
        AutoInheritance(model, 0.5, 10, towers=("audio",))
    mobile = build_model("tiny_mobile")
    with pytest.raises(ValueError, match="transformer towers only.*HybridVisionTower"):
        AutoInheritance(mobile, target=0.5, ramp_steps=10)
    with pytest.raises(ValueError, match="transformer towers only"):
        AutoInheritance(mobile, target=0.5, ramp_steps=10, towers=("text",))
    inherit = AutoInheritance(model, 0.5, 10)
    with pytest.raises(ValueError, match="shapes differ"):
        inherit.attach(build_model("demo_teacher"))
