"""The pairwise sigmoid loss (SigLIP): the formula by hand, chunked = whole batch, its own backward
= autograd's, gradient caching = one pass, and pretraining with it end to end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from compress.distill.losses import sigmoid_loss
from compress.grad_cache import accumulated_backward
from compress.models import build_from_config, model_config
from compress.objectives import Sigmoid
from compress.precision import MixedPrecision
from tests.helpers import model_inputs


def _embeddings(n: int = 7, d: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    return [t.requires_grad_() for t in (image, text, scale, bias)]


def test_the_loss_is_the_formula_by_hand():
    image, text, scale, bias = (t.detach().tolist() for t in _embeddings())
    n = len(image)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = scale * sum(a * b for a, b in zip(image[i], text[j], strict=True)) + bias
            label = 1.0 if i == j else -1.0
            total += math.log(1.0 / (1.0 + math.exp(-label * z)))
    expected = -total / n
    got = sigmoid_loss(*(torch.tensor(v, dtype=torch.float32) for v in (image, text, scale, bias)))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def _naive(image, text, scale, bias):
    z = scale * image @ text.T + bias
    labels = 2 * torch.eye(len(image), dtype=z.dtype) - 1
    return -F.logsigmoid(labels * z).sum() / len(image)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1024])
def test_chunked_equals_the_whole_batch_and_autograd(chunk):
    """Value and every gradient of the chunked loss (its own backward) equal autograd's through
    the whole (N, N) matrix at once."""
    inputs = _embeddings()
    want = _naive(*inputs)
    want_grads = torch.autograd.grad(want, inputs)
    inputs = _embeddings()
    got = sigmoid_loss(*(t.float() for t in inputs), chunk=chunk)
    got_grads = torch.autograd.grad(got, inputs)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    for g, w, name in zip(got_grads, want_grads, ("image", "text", "scale", "bias"), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6, msg=name)


def _sigmoid_model():
    cfg = {**model_config("tiny"), "logit_scale": math.log(10.0), "logit_bias": -10.0}
    torch.manual_seed(0)
    return build_from_config(cfg)


def test_a_model_with_a_bias_trains_it_and_gradient_caching_matches_one_pass():
    model = _sigmoid_model()
    assert model.logit_scale.exp().item() == pytest.approx(10.0)
    assert model.logit_bias.item() == -10.0
    images, tokens = model_inputs(model, batch=8)
    batch = {"image": images, "text": tokens}
    objective = Sigmoid(model.logit_bias)
    fp32 = MixedPrecision("fp32", torch.device("cpu"), "test")

    objective(model, batch).backward()
    whole = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert whole["logit_bias"].abs() > 0 and whole["logit_scale"].abs() > 0
    model.zero_grad()
    accumulated_backward(model, batch, objective, 3, fp32)
    for name, p in model.named_parameters():
        if name in whole:
            torch.testing.assert_close(p.grad, whole[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_sigmoid_objective_needs_a_bias():
    with pytest.raises(ValueError, match="logit bias"):
        Sigmoid(build_from_config(model_config("tiny")).logit_bias)


def test_a_sigmoid_teachers_target_for_a_softmax_student_is_its_softmax_with_the_bias():
    """Affinity mimicking (and the reinforced KD) target a softmax student at
    softmax(s·I·Tᵀ + b) per row; b is one constant across a row, so the targets computed from
    (image, text, scale) alone are exactly that — checked against the formula by hand."""
    from compress.distill.losses import affinity_targets

    image, text, scale, bias = (t.detach().float() for t in _embeddings())
    i2t, t2i = affinity_targets([(image, text, scale)])
    n = len(image)
    for i in range(n):
        z = [float(scale * image[i] @ text[j] + bias) for j in range(n)]
        total = sum(math.exp(v) for v in z)
        for j in range(n):
            assert i2t[i, j].item() == pytest.approx(math.exp(z[j]) / total, rel=1e-5)
        zt = [float(scale * text[i] @ image[j] + bias) for j in range(n)]
        total = sum(math.exp(v) for v in zt)
        for j in range(n):
            assert t2i[i, j].item() == pytest.approx(math.exp(zt[j]) / total, rel=1e-5)
