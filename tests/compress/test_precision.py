"""Mixed precision in the one training loop: bf16 autocast with fp32 losses, fp16 refused off GPU,
a run that resumes at another precision, and ``precision: auto`` decided by measurement."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from compress.distill.losses import AffinityMimicking, clip_loss
from compress.errors import UserError
from compress.models import build_model
from compress.objectives import clip_objective
from compress.precision import (
    CpuRates,
    MixedPrecision,
    cache_path,
    choose,
    cpu_rates,
    resolve_precision,
)
from edgeclip.pipeline import run_pipeline
from edgeclip.recipe import load_recipe
from edgeclip.stages import STAGES
from tests.helpers import model_inputs, write_tiny_recipe


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
        [sys.executable, "-m", "edgeclip.cli", "run", str(path), "pretrain.precision=fp16"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("edgeclip: error: pretrain: precision fp16 needs a CUDA GPU")


@pytest.mark.slow
def test_a_run_killed_in_fp32_resumes_in_bf16(tmp_path, capsys):
    path = write_tiny_recipe(tmp_path, steps=6)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(load_recipe(path, ["pretrain.precision=fp32"]), STAGES, stop_after=3)
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


def _rates(fp32: float, bf16: float) -> CpuRates:
    return CpuRates(
        cpu="a test CPU", capability="AVX2", threads=2, fp32_gflops=fp32, bf16_gflops=bf16
    )


CPU = torch.device("cpu")


def test_auto_trains_in_bf16_only_where_it_was_measured_faster(monkeypatch):
    assert choose(_rates(97.0, 0.8), CPU) == "fp32"  # AVX2: bf16 emulated, 120x slower
    assert choose(_rates(128.0, 50.0), CPU) == "fp32"  # AVX-512 without its BF16 instructions
    assert choose(_rates(100.0, 110.0), CPU) == "fp32"  # not clearly faster: not worth bf16
    assert choose(_rates(100.0, 230.0), CPU) == "bf16"  # AVX-512 BF16 / AMX
    assert choose(None, torch.device("mps")) == "fp32"
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert choose(None, cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert choose(None, cuda) == "fp16"  # loss-scaled (MixedPrecision's GradScaler)


def test_an_explicit_bf16_is_kept_with_one_warning_where_it_is_slow(monkeypatch, capsys):
    monkeypatch.setattr("compress.precision.cpu_rates", lambda: _rates(97.0, 0.8))
    about = resolve_precision("bf16", CPU, "pretrain")
    assert about["chosen"] == "bf16" and about["bf16_gflops"] == 0.8
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("pretrain: warning: bf16 runs 121x slower than fp32 on this CPU")
    assert line.endswith("precision: auto would train in fp32")
    monkeypatch.setattr("compress.precision.cpu_rates", lambda: _rates(100.0, 230.0))
    resolve_precision("bf16", CPU, "pretrain")
    assert capsys.readouterr().err == ""
    assert resolve_precision("fp32", CPU, "pretrain") == {
        "requested": "fp32",
        "chosen": "fp32",
        "device": "cpu",
    }  # an explicit fp32 measures nothing


@pytest.mark.slow
def test_the_real_probe_runs_once_and_its_choice_is_in_train_json(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = write_tiny_recipe(tmp_path, steps=2)
    run_pipeline(load_recipe(path), STAGES)  # precision: auto, the default
    trained = json.loads((tmp_path / "runs/tiny/pretrain/train.json").read_text())
    choice = trained["precision_choice"]
    assert choice["requested"] == "auto" and choice["chosen"] == trained["precision"]
    assert choice["capability"] == torch.backends.cpu.get_cpu_capability()
    assert choice["fp32_gflops"] > 0 and choice["bf16_gflops"] > 0
    expected = "bf16" if choice["bf16_gflops"] >= 1.3 * choice["fp32_gflops"] else "fp32"
    assert choice["chosen"] == expected
    assert "Precision: " + choice["chosen"] in (tmp_path / "runs/tiny/report.md").read_text()
    # measured once per machine: the cached rates come back without measuring
    cached = json.loads(cache_path().read_text())
    assert len(cached) == 1
    monkeypatch.setattr("compress.precision.measure_rates", lambda: pytest.fail("measured again"))
    assert cpu_rates().fp32_gflops == choice["fp32_gflops"]
