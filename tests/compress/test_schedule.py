"""The learning-rate schedule (linear warm-up, cosine decay) and the weight-decay parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from compress.models import build_model
from compress.train import lr_factor, param_groups

# -- lr_factor --------------------------------------------------------------------------------


@pytest.mark.parametrize("warmup", [1, 4, 10])
def test_warmup_is_linear_from_one_over_warmup_to_one(warmup):
    total = 100
    assert lr_factor(0, warmup, total) == pytest.approx(1 / warmup)
    assert lr_factor(warmup - 1, warmup, total) == pytest.approx(1.0)
    for step in range(warmup):
        assert lr_factor(step, warmup, total) == pytest.approx((step + 1) / warmup)


def test_cosine_decay_values_by_hand():
    warmup, total = 10, 110  # 100 decay steps
    assert lr_factor(10, warmup, total) == pytest.approx(1.0)  # first decay step: progress 0
    assert lr_factor(35, warmup, total) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(60, warmup, total) == pytest.approx(0.5)  # half way
    assert lr_factor(85, warmup, total) == pytest.approx(0.5 * (1 + math.cos(3 * math.pi / 4)))
    assert lr_factor(109, warmup, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    assert lr_factor(110, warmup, total) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("warmup,total", [(0, 50), (1, 50), (5, 50), (49, 50), (3, 7)])
def test_monotone_decrease_after_warmup_to_zero_at_total(warmup, total):
    values = [lr_factor(s, warmup, total) for s in range(total + 1)]
    assert all(0.0 <= v <= 1.0 for v in values)
    peak = max(warmup - 1, 0)
    assert values[peak] == pytest.approx(1.0)
    decay = values[peak:]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False)), decay
    assert all(a > b for a, b in zip(decay[1:], decay[2:], strict=False))  # strictly, once decaying
    assert values[total] == pytest.approx(0.0, abs=1e-12)
    if warmup:
        warm = values[:warmup]
        assert all(a < b for a, b in zip(warm, warm[1:], strict=False))


def test_warmup_zero_starts_at_full_rate():
    assert lr_factor(0, 0, 10) == pytest.approx(1.0)
    assert lr_factor(5, 0, 10) == pytest.approx(0.5)
    assert lr_factor(10, 0, 10) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 10), (9, 10)])
def test_values_beyond_total_stay_zero(warmup, total):
    for step in range(total, total + 50):
        assert lr_factor(step, warmup, total) == pytest.approx(0.0, abs=1e-12), step


def test_warmup_longer_than_total_is_capped():
    total = 8
    for warmup in (8, 9, 20, 1000):
        values = [lr_factor(s, warmup, total) for s in range(total)]
        # capped at total: the warm-up still reaches the full rate within the run
        assert values == pytest.approx([(s + 1) / total for s in range(total)])
        assert values[-1] == pytest.approx(1.0)
        for step in range(total + 1, total + 20):
            assert lr_factor(step, warmup, total) == 0.0


@pytest.mark.parametrize("warmup", [8, 20])
def test_capped_warmup_still_ends_at_zero_at_total(warmup):
    assert lr_factor(8, warmup, 8) == pytest.approx(0.0, abs=1e-12)


def test_lambda_lr_with_the_factor_drives_the_optimizer_rate():
    """The factor as train() uses it: LambdaLR's rate after k steps is lr · lr_factor(k)."""
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 3, 12))
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5 * lr_factor(s, 3, 12) for s in range(12)])
    assert seen[0] == pytest.approx(0.5 / 3) and seen[2] == pytest.approx(0.5)


# -- param_groups -----------------------------------------------------------------------------


def _check_groups(model, weight_decay):
    groups = param_groups(model, weight_decay)
    assert len(groups) == 2
    decay, rest = groups
    assert decay["weight_decay"] == weight_decay and rest["weight_decay"] == 0.0
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped)), "a parameter appears twice"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(grouped) == trainable
    assert all(p.ndim >= 2 for p in decay["params"])
    assert all(p.ndim < 2 for p in rest["params"])
    # AdamW takes the groups as they are (no duplicates, valid options)
    torch.optim.AdamW(groups, lr=1e-3)
    return {id(p) for p in decay["params"]}, {id(p) for p in rest["params"]}


def test_param_groups_decay_matrices_only():
    model = build_model("tiny")
    decay, rest = _check_groups(model, 0.1)
    named = dict(model.named_parameters())
    decayed_names = {n for n, p in named.items() if id(p) in decay}
    rest_names = {n for n, p in named.items() if id(p) in rest}
    for name in (
        "logit_scale",
        "visual.class_token",
        "visual.ln_pre.weight",
        "visual.ln_pre.bias",
        "visual.blocks.0.attn.qkv.bias",
        "visual.blocks.0.mlp.fc.bias",
        "text.ln_final.weight",
        "text.blocks.1.ln_2.bias",
    ):
        assert name in rest_names, name
    for name in (
        "visual.patch_embed.weight",
        "visual.blocks.0.attn.qkv.weight",
        "visual.blocks.1.mlp.proj.weight",
        "visual.proj.weight",
        "text.token_embed.weight",
        "text.blocks.0.attn.out.weight",
    ):
        assert name in decayed_names, name
    assert any(n.endswith("bias") for n in rest_names)
    assert not any(n.endswith("bias") for n in decayed_names)
    assert not any(".ln_" in n or "ln_final" in n for n in decayed_names)


def test_param_groups_with_gated_attention_and_hybrid_towers():
    gated = build_model("tiny", image_attention={"kind": "gated"}, text_attention={"kind": "gated"})
    _check_groups(gated, 0.05)
    _check_groups(build_model("tiny_mobile"), 0.2)


def test_frozen_parameters_are_left_out():
    model = build_model("tiny")
    for p in model.visual.parameters():
        p.requires_grad_(False)
    model.logit_scale.requires_grad_(False)
    decay, rest = _check_groups(model, 0.1)
    frozen = {id(p) for p in model.visual.parameters()} | {id(model.logit_scale)}
    assert not (decay | rest) & frozen
    assert decay and rest  # the text tower still has both kinds


def test_weight_decay_acts_on_the_decayed_group_only():
    """One AdamW step with zero gradients: only matrices shrink, by lr · weight_decay."""
    torch.manual_seed(0)
    model = build_model("tiny")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(param_groups(model, 0.5), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            torch.testing.assert_close(p.detach(), before[name] * (1 - 0.1 * 0.5), msg=name)
        else:
            assert torch.equal(p.detach(), before[name]), name
