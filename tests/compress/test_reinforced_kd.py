"""MobileCLIP's reinforced loss on stored teacher embeddings: the formula in docs/design.md."""

import pytest
import torch
import torch.nn.functional as F

from compress.distill.losses import (
    AffinityMimicking,
    ReinforcedKD,
    clip_loss,
    sigmoid_loss,
    soft_cross_entropy,
    stored_teachers,
)


def _unit(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


B, D = 6, 8
IMAGE, REAL, SYN = _unit(B, D, seed=0), _unit(B, D, seed=1), _unit(B, D, seed=2)
SCALE = torch.tensor(10.0)


def test_lambda_zero_is_the_clip_loss_of_both_captions():
    loss = ReinforcedKD(0.0, dims=[D], scales=[30.0])
    stored = _unit(B, D, seed=3)
    value = loss(IMAGE, REAL, SYN, SCALE, stored, stored, stored)
    assert value == pytest.approx(
        float(clip_loss(IMAGE, REAL, SCALE) + clip_loss(IMAGE, SYN, SCALE))
    )


def test_a_sigmoid_base_is_the_sigmoid_loss_of_both_captions_with_the_bias():
    bias = torch.tensor(-4.0)
    loss = ReinforcedKD(0.0, dims=[D], scales=[30.0], base="sigmoid")
    stored = _unit(B, D, seed=3)
    value = loss(IMAGE, REAL, SYN, SCALE, stored, stored, stored, bias)
    expected = sigmoid_loss(IMAGE, REAL, SCALE, bias) + sigmoid_loss(IMAGE, SYN, SCALE, bias)
    assert value == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="logit bias"):
        loss(IMAGE, REAL, SYN, SCALE, stored, stored, stored)


def test_lambda_one_mimics_the_stored_affinities_by_hand():
    t_image, t_real, t_syn = _unit(B, D, seed=4), _unit(B, D, seed=5), _unit(B, D, seed=6)
    loss = ReinforcedKD(1.0, dims=[D], scales=[20.0])
    value = loss(IMAGE, REAL, SYN, SCALE, 3 * t_image, 2 * t_real, t_syn)  # stored unnormalised

    def kd(text, t_text):
        a_s, a_t = SCALE * IMAGE @ text.T, 20.0 * t_image @ t_text.T
        return 0.5 * (
            soft_cross_entropy(a_s, a_t.softmax(-1)) + soft_cross_entropy(a_s.T, a_t.T.softmax(-1))
        )

    assert value == pytest.approx(float(kd(REAL, t_real) + kd(SYN, t_syn)), rel=1e-6)


def test_an_ensemble_is_split_by_its_dims_and_averaged():
    dims, scales = [8, 4], [20.0, 50.0]
    stored_image, stored_text = torch.randn(B, 12), torch.randn(B, 12)
    members = stored_teachers(stored_image, stored_text, dims, scales)
    assert [m[0].shape[1] for m in members] == dims
    assert torch.allclose(members[1][0], F.normalize(stored_image[:, 8:], dim=-1))
    assert [float(m[2]) for m in members] == scales
    loss = ReinforcedKD(0.7, dims, scales)
    value = loss(IMAGE, REAL, SYN, SCALE, stored_image, stored_text, stored_text)
    affinity = AffinityMimicking(alpha=0.7)
    expected = affinity((IMAGE, REAL, SCALE), members) + affinity((IMAGE, SYN, SCALE), members)
    assert value == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="add up to 12"):
        stored_teachers(torch.randn(B, 10), torch.randn(B, 10), dims, scales)
