"""Teacher ensembles: the averaged affinity targets by hand, and a distill run whose loss really
sees both teachers (the run's model and an extra one with other preprocessing)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from compress.distill.losses import AffinityMimicking, affinity_targets
from edgeclip.pipeline import run_pipeline
from edgeclip.recipe import load_recipe
from edgeclip.stages import STAGES
from tests.helpers import DISTILL_TRAIN, distill_recipe

B = 6


def _members(seed: int = 0):
    """Two teachers' (image, text, scale) of different widths and scales, and a student's."""
    g = torch.Generator().manual_seed(seed)

    def emb(dim: int) -> torch.Tensor:
        return F.normalize(torch.randn(B, dim, generator=g), dim=-1)

    a = (emb(32), emb(32), torch.tensor(20.0))
    b = (emb(128), emb(128), torch.tensor(7.0))
    student = (emb(16), emb(16), torch.tensor(12.0))
    return a, b, student


def _by_hand(student, teachers, student_scale=None, teacher_scale=None):
    """L_aff = ½[softCE(A_s, mean_m softmax(A_m)) + softCE(A_sᵀ, mean_m softmax(A_mᵀ))], from scratch."""
    n = student[0].shape[0]
    i2t = torch.zeros(n, n, dtype=torch.float64)
    t2i = torch.zeros(n, n, dtype=torch.float64)
    for image, text, scale in teachers:
        s = float(scale if teacher_scale is None else teacher_scale)
        logits = s * image.double() @ text.double().T
        i2t += torch.exp(logits - torch.logsumexp(logits, dim=1, keepdim=True)) / len(teachers)
        t2i += torch.exp(logits.T - torch.logsumexp(logits.T, dim=1, keepdim=True)) / len(teachers)
    image, text, scale = student
    s = float(scale if student_scale is None else student_scale)
    a_s = s * image.double() @ text.double().T
    ce = lambda z, p: -(p * (z - torch.logsumexp(z, dim=1, keepdim=True))).sum(1).mean()  # noqa: E731
    return i2t, t2i, 0.5 * (ce(a_s, i2t) + ce(a_s.T, t2i))


# -- the loss ---------------------------------------------------------------------------------


def test_ensemble_targets_are_the_mean_of_each_members_softmax():
    a, b, student = _members()
    i2t, t2i = affinity_targets([a, b])
    want_i2t, want_t2i, _ = _by_hand(student, [a, b])
    torch.testing.assert_close(i2t.double(), want_i2t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t2i.double(), want_t2i, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(i2t.sum(-1), torch.ones(B))
    torch.testing.assert_close(t2i.sum(-1), torch.ones(B))
    # the mean of the probabilities, not the softmax of the mean logits
    mean_logits = 0.5 * (a[2] * a[0] @ a[1].T + b[2] * b[0] @ b[1].T)
    assert (i2t - mean_logits.softmax(-1)).abs().max() > 1e-3
    # and each member's own scale is used (not the first one's for all)
    one_scale, _ = affinity_targets([a, (b[0], b[1], a[2])])
    assert (i2t - one_scale).abs().max() > 1e-3


def test_ensemble_loss_equals_the_hand_computation():
    a, b, student = _members()
    _, _, want = _by_hand(student, [a, b])
    value = AffinityMimicking(alpha=1.0)(student, [a, b])
    assert value.item() == pytest.approx(want.item(), rel=1e-5)
    _, _, fixed = _by_hand(student, [a, b], student_scale=50.0, teacher_scale=50.0)
    value = AffinityMimicking(alpha=1.0, student_scale=50.0, teacher_scale=50.0)(student, [a, b])
    assert value.item() == pytest.approx(fixed.item(), rel=1e-5)


def test_one_member_differs_from_two_and_duplicates_change_nothing():
    a, b, student = _members()
    loss = AffinityMimicking(alpha=1.0)
    only_a, only_b, both = loss(student, [a]), loss(student, [b]), loss(student, [a, b])
    assert abs(only_a.item() - both.item()) > 1e-4 and abs(only_b.item() - both.item()) > 1e-4
    assert loss(student, [b, a]).item() == pytest.approx(both.item(), rel=1e-6)  # order-free
    assert loss(student, [a, a]).item() == pytest.approx(only_a.item(), rel=1e-6)
    # softCE is linear in the targets: the two-member loss is the mean of the one-member losses
    assert both.item() == pytest.approx(0.5 * (only_a.item() + only_b.item()), rel=1e-5)


def test_the_students_gradient_sees_both_teachers():
    a, b, (s_img, s_txt, s) = _members()
    grads = []
    for teachers in ([a], [a, b]):
        image = s_img.clone().requires_grad_(True)
        AffinityMimicking(alpha=1.0)((image, s_txt, s), teachers).backward()
        grads.append(image.grad)
    assert (grads[0] - grads[1]).abs().max() > 1e-4


def test_learnable_teacher_scale_is_shared_by_the_members():
    a, b, student = _members()
    loss = AffinityMimicking(alpha=1.0, teacher_scale="learnable")
    value = loss(student, [a, b])
    assert loss.teacher_log_scale.exp().item() == pytest.approx(20.0)  # the first member's
    _, _, want = _by_hand(student, [a, b], teacher_scale=20.0)
    assert value.item() == pytest.approx(want.item(), rel=1e-5)


# -- the distill stage ------------------------------------------------------------------------

# the extra teacher: 64 px, context 24, embed dim 128 (the run's model: 32 px, 16, 32)
MEMBER = "demo_student"


def _spy(monkeypatch):
    """Record the teachers' outputs and the value at every affinity-loss call."""
    calls = []
    real = AffinityMimicking.forward

    def forward(self, student, teachers):
        value = real(self, student, teachers)
        calls.append(
            {
                "student": tuple(x.detach().clone() for x in student),
                "teachers": [tuple(x.detach().clone() for x in t) for t in teachers],
                "value": value.item(),
            }
        )
        return value

    monkeypatch.setattr(AffinityMimicking, "forward", forward)
    return calls


def _run(folder, teacher, ensemble: str):
    folder.mkdir()
    distill = DISTILL_TRAIN + f"model: tiny_student\nsteps: 3\n{ensemble}"
    return run_pipeline(load_recipe(distill_recipe(folder, teacher, distill)), STAGES).run_dir


def test_distillation_with_an_ensemble_uses_both_teachers(tmp_path, teacher_file, monkeypatch):
    calls = _spy(monkeypatch)
    run_dir = _run(tmp_path / "two", teacher_file, f"ensemble: [{{model: {MEMBER}}}]\n")
    summary = json.loads((run_dir / "distill" / "done.json").read_text())["summary"]
    assert summary["stages"][0]["train"]["steps"] == 3
    assert (run_dir / "distill" / "model.pt").is_file()
    assert len(calls) == 3
    for call in calls:
        first, second = call["teachers"]
        assert first[0].shape == (16, 32) and second[0].shape == (16, 128)  # tiny, then the member
        assert torch.isfinite(second[0]).all() and torch.isfinite(second[1]).all()
        _, _, want = _by_hand(call["student"], call["teachers"])
        assert call["value"] == pytest.approx(want.item(), rel=1e-4)
        _, _, first_only = _by_hand(call["student"], [first])
        assert abs(call["value"] - first_only.item()) > 1e-5
    recorded = [c["value"] for c in calls]
    history = summary["stages"][0]["train"]["history"]
    assert history[0]["loss"] == pytest.approx(sum(recorded[:2]) / 2, rel=1e-5)  # log_every: 2

    # the same run without the extra teacher trains another student from the same start
    monkeypatch.undo()
    single = _run(tmp_path / "one", teacher_file, "")
    a = torch.load(single / "distill/model.pt", weights_only=True)["state_dict"]
    b = torch.load(run_dir / "distill/model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
