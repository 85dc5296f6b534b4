"""The README's path end to end: `edgeclip run recipes/demo.yaml` (shortened by overrides) in a fresh folder."""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_demo_recipe_runs_end_to_end(tmp_path):
    short = [
        "pretrain.steps=30",
        "pretrain.warmup=5",
        "distill.steps=20",
        "distill.warmup=5",
        "data.scenes.train=2000",
        "data.scenes.retrieval=200",
        "data.scenes.zeroshot=144",
        "export.samples=16",
        "qat.steps=6",
        "qat.warmup=2",
        # a model trained 30 steps ranks near-tied texts, which flip at any int8 rounding:
        # parity on cosine, and no accuracy bar between an int8 artifact and its simulation
        "export.min_agreement=0.0",
        "export.max_int8_drop=1.0",
        "profile.runs=3",
        "profile.warmup=1",
    ]
    cmd = [sys.executable, "-m", "edgeclip.cli", "run", str(ROOT / "recipes/demo.yaml"), *short]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "demo"
    report = json.loads((run_dir / "report.json").read_text())
    # the report stage writes its own marker after the report
    assert set(report["stages"]) == {
        *("data", "pretrain", "reinforce", "distill", "qat", "eval", "export", "profile")
    }
    reinforced = report["stages"]["reinforce"]["summary"]
    assert reinforced["samples"] == 2000 and reinforced["teachers"] == ["demo_teacher"]
    assert report["stages"]["qat"]["summary"]["steps"] == 6
    assert report["stages"]["pretrain"]["summary"]["steps"] == 30
    distilled = report["stages"]["distill"]["summary"]
    assert distilled["stages"][0]["train"]["steps"] == 20
    assert distilled["teacher_parameters"] / distilled["parameters"] >= 5
    assert report["model"]["name"] == "demo_student" and report["teacher"]["name"] == "demo_teacher"
    artifacts = report["stages"]["export"]["summary"]["artifacts"]
    assert sorted(artifacts) == sorted(
        ["onnx-fp32", "onnx-fp16", "executorch-fp32", "coreml-fp16"]
        + ["onnx-int8", "executorch-int8", "coreml-int8"]
    )  # each verified in its own runtime where it runs
    for name, artifact in artifacts.items():
        for tower in ("image", "text"):
            assert (tmp_path / artifact[tower]["model"]).exists(), (name, tower)  # cwd-relative
        if name.startswith("coreml"):
            assert artifact["eval"] == "needs macOS"
        else:
            assert artifact["image"]["parity"]["status"] == "passed"
            assert set(artifact["eval"]["zeroshot"]) == {
                "zs_shape",
                "zs_colour",
                "zs_colour_shape",
                "zs_count",
            }
    verify = [sys.executable, "-m", "edgeclip.cli", "verify", str(run_dir / "export")]
    proc = subprocess.run(verify, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.count(": ok (") == 7
    host = report["stages"]["profile"]["summary"]["devices"]["host"]
    timed = {row["artifact"] for row in host["rows"]}
    assert timed == {name for name in artifacts if not name.startswith("coreml")} | {"pytorch-fp32"}
    assert len(host["rows"]) == 2 * len(timed)  # both towers of each
    assert set(host["skipped"]) == {"coreml-fp16", "coreml-int8"}
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2  # the outliers and Pareto plots
    markdown = (run_dir / "report.md").read_text()
    assert (
        "## Retrieval" in markdown and "## Distillation" in markdown and "teacher top-1" in markdown
    )
