"""Profiling on the host: record schema, percentile maths, the FLOP counter, each runtime timed
for real on a tiny export, the CLI, and the profile stage in a run with its report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from compress.models import ModelRecord, save_model
from compress.tokenizer import Tokenizer
from edgeclip.cli import main
from export.driver import export_model
from export.profile.devices import Settings, Tower, parse_address
from export.profile.flops import count_flops
from export.profile.host import HostDevice
from export.profile.profiler import PYTORCH, profile
from export.profile.record import (
    FIELDS,
    Measurement,
    check_record,
    percentile,
    profile_record,
    summarize,
    top_ops,
)
from export.profile.runner import onnxruntime_ops
from tests.helpers import write_tiny_recipe

MANIFEST = {
    "model": "tiny",
    "tower": "image",
    "target": "onnx",
    "precision": "int8",
    "file": "model.onnx",
    "sha256": "0" * 64,
    "inputs": [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32"}],
    "flops": 2_000_000,
}


def test_percentiles_interpolate_between_ranks_like_numpy():
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile(list(range(1, 11)), 90) == pytest.approx(9.1)
    assert percentile([7.0], 90) == 7.0
    values = np.random.default_rng(0).exponential(size=101).tolist()
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    stats = summarize([3.0, 1.0, 2.0, 10.0])
    assert stats == {"p50": 2.5, "p90": pytest.approx(7.9), "mean": 4.0, "min": 1.0, "max": 10.0}
    with pytest.raises(ValueError):
        percentile([], 50)


def test_record_carries_every_field_and_the_gemm_fraction_of_its_precision():
    measured = Measurement(
        runtime="onnxruntime 1.31.1",
        compute_unit="CPUExecutionProvider",
        times_ms=[2.0, 1.0, 4.0, 3.0],
        load_ms=5.0,
        first_inference_ms=9.0,
        ops={"QGemm": 1.5, "Add": 0.5},
        gemm_gflops={"fp32": 100.0, "int8": 400.0},
        device={"cpu": "test cpu", "cores": 2},
    )
    record = profile_record(measured, MANIFEST, artifact="onnx-int8", warmup=3)
    check_record(record)
    assert set(record) == set(FIELDS)
    assert record["latency_ms"]["p50"] == 2.5 and record["runs"] == 4
    assert record["achieved_gflops"] == pytest.approx(2e6 / 2.5e6)  # FLOPs over p50 seconds
    assert record["gemm_fraction"] == pytest.approx(0.8 / 400)  # int8 against the int8 GEMM
    assert record["ops"][0] == {"op": "QGemm", "ms": 1.5, "share": 0.75}
    json.dumps(record, allow_nan=False)  # strict JSON

    fp32 = profile_record(measured, {**MANIFEST, "precision": "fp32"}, artifact="a", warmup=0)
    assert fp32["gemm_fraction"] == pytest.approx(0.8 / 100)
    # XNNPACK's int8 kernels are not onnxruntime's: no int8 reference, so no fraction
    xnnpack = replace(measured, runtime="executorch 1.5.1 runtime, XNNPACK delegate")
    assert profile_record(xnnpack, MANIFEST, artifact="a", warmup=0)["gemm_fraction"] is None
    no_flops = profile_record(measured, {**MANIFEST, "flops": None}, artifact="a", warmup=0)
    assert no_flops["achieved_gflops"] is None and no_flops["gemm_fraction"] is None

    for broken in (
        {k: v for k, v in record.items() if k != "load_ms"},
        {**record, "latency_ms": {**record["latency_ms"], "p90": 0.1}},
        {**record, "ops": [{"op": "x", "ms": 1.0, "share": 2.0}]},
    ):
        with pytest.raises(ValueError):
            check_record(broken)


def test_top_ops_rank_by_time_with_shares():
    ranked = top_ops({"a": 1.0, "b": 3.0, "c": 0.0, "d": 1.0}, top=3)
    assert [r["op"] for r in ranked] == ["b", "a", "d"]
    assert ranked[0]["share"] == 0.6


def test_onnxruntime_trace_aggregates_kernel_events_per_inference():
    trace = [
        {"cat": "Session", "name": "model_run", "dur": 900},
        {"cat": "Node", "name": "mm_kernel_time", "dur": 300, "args": {"op_name": "MatMul"}},
        {"cat": "Node", "name": "mm_fence_before", "dur": 5, "args": {"op_name": "MatMul"}},
        {"cat": "Node", "name": "mm2_kernel_time", "dur": 100, "args": {"op_name": "MatMul"}},
        {"cat": "Node", "name": "add_kernel_time", "dur": 200, "args": {"op_name": "Add"}},
    ]
    assert onnxruntime_ops(trace, runs=2) == {"MatMul": 0.2, "Add": 0.1}


def test_flop_counter_matches_a_hand_count():
    class Hand(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, kernel_size=3)  # 1×3×6×6 → 1×4×4×4
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            y = self.conv(x).flatten(1)  # (1, 64)
            z = y.unsqueeze(1) @ y.unsqueeze(2)  # a (1×64)·(64×1) batched matmul
            return self.fc(y) + z.squeeze(2)

    conv = 2 * (4 * 4 * 4) * (3 * 3 * 3)  # 2 per multiply-add, per output, per input tap
    fc = 2 * 64 * 10
    bmm = 2 * 64
    assert count_flops(Hand(), torch.rand(1, 3, 6, 6)) == conv + fc + bmm == 4864


def test_device_addresses():
    assert parse_address("host").kind == "host"
    with pytest.raises(Exception, match="unknown kind 'tpu'"):
        parse_address("tpu:0")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model's file and its fp32 exports to ONNX and ExecuTorch."""
    root = tmp_path_factory.mktemp("profile")
    torch.manual_seed(0)
    record = ModelRecord.named("tiny")
    model = record.build().eval()
    save_model(model, record, root / "model.pt")
    images = torch.randn(4, 3, model.visual.image_size, model.visual.image_size)
    tokens = Tokenizer(context_length=model.text.context_length)(["a red circle", "two stars"])
    for target in ("onnx", "executorch"):
        export_model(
            model,
            record,
            root / "exports" / f"{target}-fp32",
            target=target,
            sample_images=images,
            sample_tokens=tokens,
        )
    return root


@pytest.mark.slow
def test_host_times_each_runtime_with_its_operators(exported, tmp_path):
    settings = Settings(runs=4, warmup=1, threads=1)
    done = profile(exported / "exports", "host", tmp_path, settings)
    done_torch = profile(exported / "model.pt", "host", tmp_path, settings)
    assert sorted(done["records"]) == ["executorch-fp32", "onnx-fp32"]
    assert not done["skipped"]
    records = {
        (artifact, tower): json.loads(Path(path).read_text())
        for result in (done, done_torch)
        for artifact, towers in result["records"].items()
        for tower, path in towers.items()
    }
    assert len(records) == 6
    runtimes = {artifact: r["runtime"].split()[0] for (artifact, _), r in records.items()}
    assert runtimes == {
        "onnx-fp32": "onnxruntime",
        "executorch-fp32": "executorch",
        PYTORCH: "torch",
    }
    flops = {tower: set() for tower in ("image", "text")}
    for (artifact, tower), record in records.items():
        check_record(record)
        assert record["runs"] == 4 and record["threads"] == 1
        assert record["load_ms"] > 0 and record["first_inference_ms"] > 0
        assert 10 < record["peak_rss_mb"] < 4000
        assert record["device"]["cores"] >= 1 and record["environment"]["libraries"]["torch"]
        assert record["gemm_gflops"]["fp32"] > 0
        flops[tower].add(record["flops"])
        if artifact != PYTORCH:  # eager has no operator profile
            assert record["ops"], (artifact, tower)
    # the same arithmetic whichever runtime runs it: counted once per tower
    assert all(len(counts) == 1 and counts.pop() > 0 for counts in flops.values())
    gemm = records[("executorch-fp32", "image")]["ops"]
    assert any("GEMM" in op["op"] for op in gemm)  # XNNPACK's kernels, from the ETDump


def test_host_skips_what_cannot_run_here(exported):
    folder = exported / "exports" / "onnx-fp32" / "image"
    manifest = json.loads((folder / "manifest.json").read_text())
    coreml = Tower(folder, {**manifest, "target": "coreml"}, "coreml-fp16")
    reason = HostDevice().skip_reason(coreml)
    assert reason is None or "macOS" in reason


@pytest.mark.slow
def test_profile_command(exported, tmp_path, capsys):
    out = tmp_path / "records"
    args = ["profile", str(exported / "exports" / "onnx-fp32"), "--runs", "3", "--warmup", "0"]
    assert main([*args, "--no-ops", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "onnx-fp32 image: p50" in printed and "onnx-fp32 text: p50" in printed
    assert json.loads((out / "host" / "onnx-fp32" / "image.json").read_text())["ops"] is None

    assert main([*args, "--device", "tpu"]) == 2
    assert main([*args, "-o", "novalue"]) == 2
    assert main(["profile", str(tmp_path / "nothing")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("edgeclip: error:") for e in errors)


@pytest.mark.slow
def test_profile_stage_in_a_run_and_its_report(tmp_path):
    recipe = write_tiny_recipe(tmp_path, steps=2)
    recipe.write_text(recipe.read_text() + "profile:\n  runs: 3\n  warmup: 1\n")
    assert main(["run", str(recipe)]) == 0
    run = tmp_path / "runs" / "tiny"
    done = json.loads((run / "profile" / "done.json").read_text())["summary"]
    rows = done["devices"]["host"]["rows"]
    assert {(r["artifact"], r["tower"]) for r in rows} == {
        (a, t) for a in ("onnx-fp32", PYTORCH) for t in ("image", "text")
    }
    assert (run / "profile" / "pareto.png").stat().st_size > 0
    report = (run / "report.md").read_text()
    assert (
        "## Latency on `host`" in report and "![accuracy vs latency](profile/pareto.png)" in report
    )
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 1


def test_a_device_that_cannot_open_stops_the_run_before_training(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, steps=2)
    recipe.write_text(recipe.read_text() + "profile:\n  devices: ['ssh://board']\n")
    assert main(["run", str(recipe)]) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert "profile.devices[0]" in error and "user" in error
    assert not (tmp_path / "runs" / "tiny" / "pretrain").exists()


def test_gemm_rates_measure_int8_with_the_runtime_kernels():
    from export.profile.runner import gemm_rates

    measured = gemm_rates(threads=1)
    rates = measured["gemm_gflops"]
    assert rates["fp32"] > 1 and rates["int8"] > 1  # GOP/s: real kernels, not emulation
    assert "int8: onnxruntime" in measured["gemm_engine"]
