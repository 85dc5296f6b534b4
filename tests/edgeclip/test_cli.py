"""The `edgeclip` command: ls, validate, eval and report on real (tiny) runs, and its error contract."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compress.models import model_names
from edgeclip.cli import main
from edgeclip.pipeline import run_pipeline
from edgeclip.recipe import load_recipe
from edgeclip.stages import STAGES
from tests.helpers import ROOT


def test_ls_models_prints_every_model_with_counts(capsys):
    assert main(["ls", "models"]) == 0
    out = capsys.readouterr().out
    for name in model_names():
        assert name in out
    assert "149.62M" in out  # vit_b16, equal to open_clip's ViT-B-16
    assert "image 11.41M vs 11.40M, text 42.44M vs 42.40M" in out  # mobileclip_s0 vs published


def test_ls_openclip_lists_loadable_architectures_and_tags(capsys):
    assert main(["ls", "openclip"]) == 0
    out = capsys.readouterr().out
    assert "openclip:ViT-B-32" in out and "laion2b_s34b_b79k" in out
    assert "openclip:MobileCLIP2-S0" in out and "openclip:RN50 " not in out
    for arch in ("MobileCLIP-B", "MobileCLIP2-B", "MobileCLIP2-S3", "MobileCLIP2-S4"):
        assert f"  openclip:{arch} " in out
    assert " *openclip:ViT-B-16-SigLIP " in out  # Python only: its tokenizer is not ours yet


def test_ls_apple_lists_apples_mobileclips_with_counts(capsys):
    assert main(["ls", "apple"]) == 0
    out = capsys.readouterr().out
    assert "mobileclip:s0   image 11.4M, text 42.4M" in out  # MobileCLIP-S0 as published
    assert "mobileclip:b    image 86.3M, text 63.4M" in out  # MobileCLIP-B as published


def test_ls_recipes_and_stages(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["ls", "recipes"]) == 0
    assert "recipes/demo.yaml" in capsys.readouterr().out
    assert main(["ls", "stages"]) == 0
    out = capsys.readouterr().out
    assert all(s.name in out for s in STAGES)


def test_validate_ok(capsys):
    assert main(["validate", str(ROOT / "recipes/demo.yaml"), "pretrain.steps=5"]) == 0
    assert "ok" in capsys.readouterr().out


def test_help_shows_an_example():
    out = subprocess.run(
        [sys.executable, "-m", "edgeclip.cli", "--help"], capture_output=True, text=True
    ).stdout
    assert "edgeclip run recipes/demo.yaml" in out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished tiny run that tests only read; a test that changes a run uses `own_run`."""
    from tests.helpers import write_tiny_recipe

    folder = tmp_path_factory.mktemp("run")
    return run_pipeline(load_recipe(write_tiny_recipe(folder, steps=2)), STAGES).run_dir


@pytest.fixture
def own_run(tiny_run, tmp_path) -> tuple[Path, Path]:
    """A private copy of the tiny run: (its recipe, its run folder), free to change."""
    folder = shutil.copytree(tiny_run.parents[1], tmp_path / "copy")
    recipe = folder / "tiny.yaml"
    recipe.write_text(recipe.read_text().replace(str(tiny_run.parents[1]), str(folder)))
    return recipe, folder / "runs" / "tiny"


@pytest.mark.slow
def test_eval_command_on_csv_datasets(tiny_run, tmp_path, capsys):
    scenes = tiny_run / "data" / "scenes"
    out = tmp_path / "metrics.json"
    code = main(
        [
            "eval",
            str(tiny_run / "pretrain/model.pt"),
            "--zeroshot",
            str(scenes / "zs_shape.csv"),
            "--retrieval",
            str(scenes / "retrieval.csv"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["zeroshot"][str(scenes / "zs_shape.csv")]["classes"] == 6
    assert "text_to_image_r1" in result["retrieval"][str(scenes / "retrieval.csv")]


def test_eval_bad_inputs_exit_2(tiny_run, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.pt"), "--zeroshot", "x.csv"]) == 2
    assert "missing.pt: no such model file" in capsys.readouterr().err
    bad = tmp_path / "labels.csv"
    bad.write_text("filepath,caption\nimg.png,a cat\n")
    assert main(["eval", str(tiny_run / "pretrain/model.pt"), "--zeroshot", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("edgeclip: error: ")
        and "labels.csv" in err
        and "label" in err
        and "\n" not in err
    )


def test_report_command_rewrites_report(own_run, capsys):
    _, run_dir = own_run
    (run_dir / "report.md").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert "## Zero-shot classification" in (run_dir / "report.md").read_text()


def test_run_bad_from_stage_exit_2(capsys):
    assert main(["run", str(ROOT / "recipes/demo.yaml"), "--from", "nope"]) == 2
    assert "--from nope: unknown stage" in capsys.readouterr().err


def test_parity_failure_is_an_error_not_a_warning(own_run, capsys):
    """An export that misses its parity threshold stops the run with one line and exit code 1."""
    recipe, run_dir = own_run
    good = run_dir / "export" / "onnx-fp32"
    before = {p: p.read_bytes() for p in sorted(good.rglob("*")) if p.is_file()}
    assert main(["run", str(recipe), "export.tolerance=1e-12"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgeclip: error: ") and "parity check failed" in err and "\n" not in err
    assert not (run_dir / "export" / "done.json").exists()
    # the last good export is still there, byte for byte, and nothing half-written beside it
    assert {p: p.read_bytes() for p in sorted(good.rglob("*")) if p.is_file()} == before
    assert sorted(p.name for p in (run_dir / "export").iterdir() if p.is_dir()) == ["onnx-fp32"]


@pytest.mark.slow
def test_export_stage_keeps_only_what_the_recipe_lists(own_run):
    recipe, run_dir = own_run
    assert main(["run", str(recipe), "export.targets=[executorch-fp32]"]) == 0
    folders = sorted(p.name for p in (run_dir / "export").iterdir() if p.is_dir())
    assert folders == ["executorch-fp32"]  # onnx-fp32, no longer listed, is gone
    report = (run_dir / "report.md").read_text()
    assert "`executorch-fp32`" in report and "`onnx-fp32`" not in report
