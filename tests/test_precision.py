"""Mixed precision in the one training loop: bf16 autocast with fp32 losses, fp16 refused off GPU,
and a run that resumes at another precision."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from compress.distill.losses import AffinityMimicking, clip_loss
from compress.errors import UserError
from compress.models import build_model
from compress.pipeline import run_pipeline
from compress.recipe import load_recipe
from compress.stages import STAGES
from compress.train import MixedPrecision, clip_objective
from tests.conftest import model_inputs, write_tiny_recipe


def _bf16_linear_outputs(model) -> list[torch.dtype]:
    seen = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    return seen


def test_bf16_step_matches_fp32_to_bf16_tolerance():
    torch.manual_seed(0)
    model = build_model("tiny", {"kind": "clipped", "alpha": 4.0}, {"kind": "gated"})
    images, tokens = model_inputs(model, batch=16)
    batch = {"image": images, "text": tokens}
    seen = _bf16_linear_outputs(model)
    with MixedPrecision("fp32", torch.device("cpu"), "test").autocast():
        full = clip_objective(model, batch)
    assert set(seen) == {torch.float32}
    seen.clear()
    with MixedPrecision("bf16", torch.device("cpu"), "test").autocast():
        half = clip_objective(model, batch)
    assert torch.bfloat16 in seen, "the towers' matmuls ran in bf16"
    assert half.dtype == torch.float32, "the loss stays fp32"
    assert half.item() == pytest.approx(full.item(), rel=2e-2)
    half.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())


def test_losses_run_in_fp32_under_autocast():
    torch.manual_seed(0)
    image, text = torch.randn(8, 16), torch.randn(8, 16)
    image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    scale = torch.tensor(50.0)
    exact = clip_loss(image, text, scale)
    affinity = AffinityMimicking()
    teacher = (text, image, torch.tensor(30.0))
    exact_affinity = affinity((image, text, scale), [teacher])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        halves = image.bfloat16(), text.bfloat16()
        # bf16 inputs are cast up, and the logits are computed in fp32, not bf16
        assert clip_loss(*halves, scale).dtype == torch.float32
        assert clip_loss(image, text, scale).item() == pytest.approx(exact.item(), rel=1e-6)
        assert affinity((image, text, scale), [teacher]).item() == pytest.approx(
            exact_affinity.item(), rel=1e-6
        )


def test_fp16_off_gpu_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="precision fp16 needs a CUDA GPU .* use bf16"):
        MixedPrecision("fp16", torch.device("cpu"), "pretrain")
    path = write_tiny_recipe(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "compress.cli", "run", str(path), "pretrain.precision=fp16"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("edgeclip: error: pretrain: precision fp16 needs a CUDA GPU")


def test_a_run_killed_in_fp32_resumes_in_bf16(tmp_path, capsys):
    path = write_tiny_recipe(tmp_path, steps=6)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(load_recipe(path), STAGES, stop_after=3)
    run_dir = tmp_path / "runs" / "tiny"
    before = torch.load(run_dir / "pretrain" / "checkpoint.pt", weights_only=True)
    assert before["step"] == 2
    capsys.readouterr()
    run_pipeline(load_recipe(path, ["pretrain.precision=bf16"]), STAGES)
    out = capsys.readouterr().out
    assert "[data] done already" in out and "resuming from the checkpoint at step 2" in out
    trained = json.loads((run_dir / "pretrain" / "train.json").read_text())
    assert trained["steps"] == 6 and trained["precision"] == "bf16"
    assert trained["history"][0] == before["history"][0], "the fp32 steps' log was kept"
    weights = torch.load(run_dir / "pretrain" / "model.pt", weights_only=True)["state_dict"]
    assert all(w.dtype == torch.float32 and w.isfinite().all() for w in weights.values())
