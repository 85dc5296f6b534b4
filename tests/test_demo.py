"""The README's path end to end: `edgeclip run recipes/demo.yaml` (shortened by overrides) in a fresh folder."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_recipe_runs_end_to_end(tmp_path):
    short = ["pretrain.steps=30", "pretrain.warmup=5", "data.scenes.train=2000", "data.scenes.retrieval=200",
             "data.scenes.zeroshot=144", "export.samples=16"]  # fmt: skip
    cmd = [sys.executable, "-m", "compress.cli", "run", str(ROOT / "recipes/demo.yaml"), *short]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "demo"
    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["stages"]) == {
        "data",
        "pretrain",
        "eval",
        "export",
    }  # written by the report stage itself
    assert report["stages"]["pretrain"]["summary"]["steps"] == 30
    assert (run_dir / "export/onnx/image/model.onnx").is_file() and (
        run_dir / "export/onnx/text/model.onnx"
    ).is_file()
    assert "## Retrieval" in (run_dir / "report.md").read_text()
