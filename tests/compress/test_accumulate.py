"""Large effective batches: a batch embedded in parts (gradient caching) gives the full batch's
gradient, for pretraining and for distillation, and trains the same model through the pipeline."""

from __future__ import annotations

import pytest
import torch

from compress.distill.losses import AffinityMimicking
from compress.distill.student import DistillObjective
from compress.grad_cache import accumulated_backward, split_batch
from compress.models import build_model
from compress.objectives import clip_objective
from compress.precision import MixedPrecision
from edgeclip.pipeline import run_pipeline
from edgeclip.recipe import load_recipe
from edgeclip.stages import STAGES
from tests.helpers import model_inputs, torchrun_edgeclip, write_tiny_recipe

FP32 = MixedPrecision("fp32", torch.device("cpu"), "test")


def _grads(modules) -> dict[str, torch.Tensor]:
    return {
        f"{i}.{name}": p.grad.clone()
        for i, module in enumerate(modules)
        for name, p in module.named_parameters()
        if p.grad is not None
    }


def _zero(modules) -> None:
    for module in modules:
        module.zero_grad(set_to_none=True)


def _batch(model, n: int) -> dict:
    images, tokens = model_inputs(model, batch=n)
    return {"image": images, "text": tokens, "caption": [f"caption {i}" for i in range(n)]}


def test_split_batch_keeps_order_and_counts():
    batch = {"image": torch.arange(7), "caption": list("abcdefg"), "skipped": 3}
    pieces = split_batch(batch, 3)
    assert [p["image"].tolist() for p in pieces] == [[0, 1], [2, 3, 4], [5, 6]]
    assert "".join("".join(p["caption"]) for p in pieces) == "abcdefg"
    assert [p["skipped"] for p in pieces] == [3, 0, 0]


@pytest.mark.parametrize("parts", [2, 3, 12])
def test_accumulated_clip_gradient_is_the_full_batch_gradient(parts):
    torch.manual_seed(0)
    model = build_model("tiny", {"kind": "clipped", "alpha": 4.0}, {"kind": "gated"}).train()
    batch = _batch(model, 12)
    full = clip_objective(model, batch)
    full.backward()
    expected = _grads([model])
    _zero([model])
    value = accumulated_backward(model, batch, clip_objective, parts, FP32)
    assert value.item() == pytest.approx(full.item(), rel=1e-6)
    got = _grads([model])
    assert got.keys() == expected.keys() and "0.logit_scale" in got
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_accumulated_distillation_gradient_is_the_full_batch_gradient():
    """Affinity mimicking with a learnable teacher scale, against a teacher of another size."""
    torch.manual_seed(0)
    teacher = build_model("tiny").eval().requires_grad_(False)
    student = build_model("tiny_student").train()
    loss = AffinityMimicking(alpha=0.5, teacher_scale="learnable")
    objective = DistillObjective(loss, [teacher], student)
    batch = _batch(student, 8)
    full = objective(student, batch)
    full.backward()
    expected = _grads([student, loss])
    assert "1.teacher_log_scale" in expected
    _zero([student, loss])
    value = accumulated_backward(student, batch, objective, 4, FP32)
    assert value.item() == pytest.approx(full.item(), rel=1e-6)
    got = _grads([student, loss])
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_pretraining_with_accumulation_trains_the_same_model(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "four").mkdir()
    one = run_pipeline(
        load_recipe(write_tiny_recipe(tmp_path / "one", steps=3, precision="fp32")), STAGES
    )
    recipe = load_recipe(
        write_tiny_recipe(tmp_path / "four", steps=3, precision="fp32"), ["pretrain.accumulate=4"]
    )
    four = run_pipeline(recipe, STAGES)
    a = torch.load(one.run_dir / "pretrain/model.pt", weights_only=True)["state_dict"]
    b = torch.load(four.run_dir / "pretrain/model.pt", weights_only=True)["state_dict"]
    for key in a:
        if key.endswith("qkv.bias"):  # the key bias has a zero true gradient (see test_pipeline)
            a[key], b[key] = a[key].view(3, -1)[[0, 2]], b[key].view(3, -1)[[0, 2]]
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_two_process_accumulation_matches_one_process(tmp_path):
    """Under torchrun each rank embeds its share in parts; only the last part synchronises."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = run_pipeline(
        load_recipe(write_tiny_recipe(tmp_path / "one", steps=3, precision="fp32")), STAGES
    )
    double = write_tiny_recipe(tmp_path / "two", steps=3, precision="fp32")
    double.write_text(double.read_text().replace("  steps: 3\n", "  steps: 3\n  accumulate: 2\n"))
    proc = torchrun_edgeclip(double, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "accumulate: 2" in (tmp_path / "two/runs/tiny/recipe.yaml").read_text()
    a = torch.load(single.run_dir / "pretrain/model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "two/runs/tiny/pretrain/model.pt", weights_only=True)["state_dict"]
    for key in a:
        if key.endswith("qkv.bias"):  # the key bias has a zero true gradient (see test_pipeline)
            a[key], b[key] = a[key].view(3, -1)[[0, 2]], b[key].view(3, -1)[[0, 2]]
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
