"""Shipped export folders: `edgeclip export` from a run or a model file, `edgeclip verify` (file
hashes, then stored parity rerun in the runtime), `edgeclip eval EXPORT_DIR` through the runtime."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress.evaluate import evaluate_csvs
from compress.models import ModelRecord, load_model, model_config
from edgeclip.cli import main
from edgeclip.pipeline import run_pipeline
from edgeclip.recipe import EvalConfig, load_recipe
from edgeclip.stages import STAGES
from export.artifact import ArtifactModel, IntegrityError, verify_export
from export.driver import export_model
from export.manifest import read_manifest, sha256_path
from export.verify import PARITY, ParityError
from tests.helpers import MCI_VIT_SMALL, model_inputs, write_tiny_recipe


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny run with its fp32 ONNX export (the recipe's default target)."""
    folder = tmp_path_factory.mktemp("run")
    return run_pipeline(load_recipe(write_tiny_recipe(folder, steps=2)), STAGES).run_dir


@pytest.fixture
def shipped(run_dir, tmp_path):
    """A private copy of the run's export folder, as an app developer receives it."""
    return shutil.copytree(run_dir / "export" / "onnx-fp32", tmp_path / "onnx-fp32")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("edgeclip: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.slow
def test_export_command_from_a_run_then_verify(run_dir, tmp_path, capsys):
    out = tmp_path / "et16"
    code = main(["export", str(run_dir), "--target", "executorch", "--precision", "fp16"])
    assert code == 0
    default = run_dir / "export" / "executorch-fp16"  # the run's export folder by default
    assert read_manifest(default / "image")["precision"] == "fp16"
    final = run_dir / "pretrain" / "model.pt"  # the tiny run's final model
    for folder in (default, run_dir / "export" / "onnx-fp32"):  # the command's, the stage's
        origin = read_manifest(folder / "text")["provenance"]  # which file it came from
        assert Path(origin["model_file"]).resolve() == final.resolve()
        assert origin["sha256"] == sha256_path(final) and origin["record"]["stage"] == "pretrain"
    assert main(["export", str(run_dir), "--target", "onnx", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["verify", str(run_dir / "export")]) == 0  # every export folder below it
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        str(run_dir / "export" / "executorch-fp16"),
        str(run_dir / "export" / "onnx-fp32"),
    ]
    assert all("files match their sha256" in line for line in lines)
    summary = verify_export(out)
    assert summary["parity"]["image"]["cosine_min"] >= 0.9999
    assert summary["files"] == 5  # model ×2, parity samples ×2, vocabulary
    # the golden files rerun through the artifact as an app's self-check does
    assert summary["golden"]["image"]["cosine_min"] >= 0.9999
    assert summary["golden"]["text"]["rows"] >= 20
    assert all("golden files: min cosine" in line for line in lines)
    shutil.rmtree(default)


def test_export_command_from_a_model_file_uses_rendered_heldout_scenes(run_dir, tmp_path):
    model = shutil.copy(run_dir / "pretrain" / "model.pt", tmp_path / "model.pt")
    assert main(["export", str(model), "--target", "onnx", "--samples", "12"]) == 0
    manifest = read_manifest(tmp_path / "exports" / "onnx-fp32" / "text")
    assert manifest["parity"]["zero_shot_texts"] == 12 and manifest["recipe_hash"] is None
    assert manifest["provenance"]["model_file"] == str(model)
    assert manifest["provenance"]["sha256"] == sha256_path(model)


@pytest.mark.slow
def test_int8_export_of_a_model_file_is_calibrated_on_rendered_training_scenes(
    run_dir, tmp_path, monkeypatch
):
    # checked on cosine: a model trained 2 steps ranks near-tied texts, which flip at any rounding
    monkeypatch.setitem(PARITY, "int8", replace(PARITY["int8"], min_zero_shot_agreement=0.0))
    model = shutil.copy(run_dir / "pretrain" / "model.pt", tmp_path / "model.pt")
    args = ["export", str(model), "--target", "onnx", "--precision", "int8", "--samples", "12"]
    assert main(args) == 0
    manifest = read_manifest(tmp_path / "exports" / "onnx-int8" / "image")
    assert manifest["precision"] == "int8"
    assert manifest["parity"]["reference"].startswith("INT8 simulation")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--target", "coreml", "--precision", "int4"],
            "--precision int4: the coreml target exports",
        ),
        (["--target", "tflite"], "--target tflite: unknown target; expected one of: coreml"),
    ],
)
def test_export_command_refuses_unsupported_pairs(run_dir, args, message, capsys):
    assert main(["export", str(run_dir), *args]) == 2
    assert message in _one_error_line(capsys)


def test_verify_fails_on_a_tampered_model(shipped, capsys):
    model = shipped / "image" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    model.write_bytes(bytes(data))
    assert main(["verify", str(shipped)]) == 1
    err = _one_error_line(capsys)
    assert str(model) in err and "sha256 differs" in err


def test_verify_fails_on_a_truncated_or_missing_file(shipped, capsys):
    model = shipped / "text" / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(IntegrityError, match="changed or truncated"):
        verify_export(shipped)
    model.unlink()
    assert main(["verify", str(shipped)]) == 1
    assert f"{model}: missing" in _one_error_line(capsys)


def test_verify_fails_on_a_changed_golden_picture_or_embedding(shipped, capsys):
    golden = json.loads((shipped / "golden.json").read_text())
    saved = (shipped / "golden_input.png").read_bytes()
    Image.new("RGB", (32, 32)).save(shipped / "golden_input.png")
    assert main(["verify", str(shipped)]) == 1
    assert "a golden picture differs" in _one_error_line(capsys)

    (shipped / "golden_input.png").write_bytes(saved)
    golden["image_embedding"] = [-v for v in golden["image_embedding"]]
    (shipped / "golden.json").write_text(json.dumps(golden))
    with pytest.raises(ParityError, match="golden.json"):
        verify_export(shipped)


def test_verify_refuses_a_folder_that_is_no_export(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "not an export folder" in _one_error_line(capsys)


def test_artifact_eval_matches_pytorch_eval(run_dir, shipped, capsys):
    scenes = run_dir / "data" / "scenes"
    tasks = {"zs_colour_shape": scenes / "zs_colour_shape.csv"}
    retrieval = {"retrieval": scenes / "retrieval.csv"}
    kwargs = {"templates": EvalConfig.templates, "batch_size": 64}
    model, _ = load_model(run_dir / "pretrain" / "model.pt")
    torch_results = evaluate_csvs(model, tasks, retrieval, **kwargs)
    artifact_results = evaluate_csvs(ArtifactModel(shipped), tasks, retrieval, **kwargs)
    ours, theirs = torch_results["zeroshot"], artifact_results["zeroshot"]
    # fp32 parity (cosine ≥ 0.9999, same best text) means the same predictions
    assert ours["zs_colour_shape"]["top1"] == pytest.approx(theirs["zs_colour_shape"]["top1"])
    r1 = "image_to_text_r1"
    assert torch_results["retrieval"]["retrieval"][r1] == pytest.approx(
        artifact_results["retrieval"]["retrieval"][r1]
    )
    assert main(["eval", str(shipped), "--zeroshot", str(tasks["zs_colour_shape"])]) == 0
    assert '"top1"' in capsys.readouterr().out


@pytest.mark.slow
def test_every_runtime_reads_a_strided_picture_array_as_its_values(tmp_path):
    """What ``np.asarray(img).transpose(2, 0, 1)`` gives: a CHW view of HWC memory. ExecuTorch's
    runtime misread it without a copy (a conv stem's embeddings moved; drawn pictures' cosine
    fell as low as -0.05), while onnxruntime read it right."""
    torch.manual_seed(0)
    record = ModelRecord("conv_stem", {**model_config("tiny"), "vision": MCI_VIT_SMALL})
    model = record.build().eval()
    size = record.image_size
    images, tokens = model_inputs(model)
    hwc = np.random.default_rng(0).uniform(-1, 1, (3, size, size, 3)).astype(np.float32)
    chw = hwc.transpose(0, 3, 1, 2)  # (N, C, H, W) strides over (N, H, W, C) memory
    assert not chw.flags.c_contiguous
    for target in ("onnx", "executorch"):
        out = tmp_path / target
        export_model(model, record, out, target=target, sample_images=images, sample_tokens=tokens)
        artifact = ArtifactModel(out)
        expected = artifact.run("image", np.ascontiguousarray(chw))
        np.testing.assert_array_equal(artifact.run("image", chw), expected, err_msg=target)
