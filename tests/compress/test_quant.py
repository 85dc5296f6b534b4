"""W8A8 through PT2E: calibration, the INT8 simulation, QAT (train, resume, save, load) and the
int8 artifact of every target, checked against the simulation it was lowered from."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from compress.models import ModelRecord, save_model
from compress.models.record import ModelFileError
from compress.quant.ptq import calibrate, convert, prepare, quantize
from compress.quant.qat import load_quantized, quantized_record, save_quantized, train_qat
from compress.tokenizer import Tokenizer
from compress.train import Interrupted
from edgeclip.cli import main
from edgeclip.pipeline import run_pipeline
from edgeclip.recipe import QatConfig, QuantConfig, load_recipe
from edgeclip.stages import STAGES
from edgeclip.stages.export import _check_accuracy
from export import exporters
from export.artifact import verify_export
from export.driver import Simulation, export_model
from export.manifest import sha256_path
from export.verify import PARITY, ParityError
from tests.helpers import ROOT, write_tiny_recipe

ATTENTION = {"image": {"kind": "clipped", "gamma": -0.02}, "text": {"kind": "gated"}}
CAPTIONS = [
    f"a {size} {colour} {shape}"
    for size in ("small", "large")
    for colour in ("red", "green", "blue", "yellow")
    for shape in ("circle", "square", "triangle", "star")
]


def _model_and_samples(name: str, attention: dict | None = None):
    """A seeded registry model, 32 images and captions, and its calibration batches."""
    torch.manual_seed(0)
    record = ModelRecord.named(name, attention)
    model = record.build().eval()
    size = record.image_size
    images = torch.rand(32, 3, size, size) * 2 - 1
    tokens = Tokenizer(record.context_length)(CAPTIONS)
    batches = [{"image": images[i : i + 8], "text": tokens[i : i + 8]} for i in range(0, 32, 8)]
    return model, record, images, tokens, batches


@pytest.fixture(scope="module")
def tiny():
    return _model_and_samples("tiny", ATTENTION)


@pytest.fixture(scope="module")
def tiny_int8(tiny):
    """The tiny model quantized after training: its INT8 simulation, built once per worker."""
    model, *_, batches = tiny
    return quantize(model, QuantConfig(), batches)


def _int8_export(model, record, images, tokens, quantized, folder, target) -> dict:
    """``quantized`` (``model`` quantized after training) exported at int8, checked against
    its simulation."""
    return export_model(
        model,
        record,
        folder,
        target=target,
        precision="int8",
        sample_images=images,
        sample_tokens=tokens,
        quantized=quantized,
        # a random model's texts are near-ties, so rankings flip at any rounding: cosine only
        thresholds=replace(PARITY["int8"], min_zero_shot_agreement=0.0),
    )


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a, b).min().item()


@pytest.mark.slow
def test_simulation_stays_close_to_the_float_model(tiny, tiny_int8):
    model, _, images, tokens, _ = tiny
    quantized = tiny_int8
    with torch.no_grad():
        assert _cosine(quantized.encode_image(images), model.encode_image(images)) > 0.98
        assert _cosine(quantized.encode_text(tokens), model.encode_text(tokens)) > 0.95


@pytest.mark.slow
def test_percentile_calibration_clips_a_rare_outlier(tiny):
    model, _, images, tokens, _ = tiny
    spiked = images.clone()
    spiked[:, 0, 0, 0] = 50.0  # one outlier pixel per image among 3 * 16 * 16
    ranges = {}
    for calibration in ("minmax", "percentile"):
        prepared = calibrate(
            prepare(model, QuantConfig(calibration=calibration, percentile=99.9)),
            [{"image": spiked, "text": tokens}],
        )
        graph = prepared.visual.graph
        observer = next(  # the one that watches the image input
            graph.get_submodule(n.target)
            for n in graph.graph.nodes
            if n.op == "call_module" and n.args[0].op == "placeholder"
        )
        ranges[calibration] = float(observer.max_val)
    assert ranges["minmax"] == pytest.approx(50.0)
    assert ranges["percentile"] < 1.01  # the pixels themselves are in [-1, 1]


@pytest.mark.slow
def test_qat_trains_resumes_saves_and_converts(tiny, tmp_path, monkeypatch, capsys):
    model, record, images, tokens, _ = tiny
    size = record.image_size

    def batches(start: int):
        generator = torch.Generator().manual_seed(start)
        while True:
            picks = torch.randint(0, len(CAPTIONS), (8,), generator=generator)
            yield {
                "image": torch.rand(8, 3, size, size, generator=generator) * 2 - 1,
                "text": tokens[picks],
                "caption": [CAPTIONS[i] for i in picks],
            }

    cfg = QatConfig(steps=4, batch_size=8, checkpoint_every=2, log_every=2)
    quant = QuantConfig(float_layers=("text.blocks.0.mlp.fc",))  # one layer left in float
    with pytest.raises(Interrupted):  # killed after 3 steps: the checkpoint of step 2 remains
        train_qat(model, quant, cfg, batches, tmp_path, stop_after=3)
    trained, summary = train_qat(model, quant, cfg, batches, tmp_path)
    assert summary["steps"] == 4 and summary["finished"]
    first = [h["step"] for h in summary["history"]]
    assert first == [2, 4]  # resumed at step 2, not from scratch

    path = tmp_path / "model.pt"
    save_quantized(trained, quantized_record(record, quant, "qat"), path)
    loaded, loaded_record = load_quantized(path)
    assert loaded_record.precision == "int8" and loaded_record.quantization["method"] == "qat"
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), trained.encode_image(images))
        assert torch.equal(loaded.encode_text(tokens), trained.encode_text(tokens))
        converted = convert(loaded)  # int8 weights, quantize/dequantize: the fake-quant maths
        # the same maths, but the float matmuls around each rounding sum in a CPU-dependent
        # order, so a value on a rounding edge moves one int8 step: 0.9989 on AVX2, > 0.999 on
        # AVX-512; a wrong scale or zero point falls far below 0.995
        assert _cosine(converted.encode_image(images), loaded.encode_image(images)) > 0.995
        assert _cosine(converted.encode_text(tokens), loaded.encode_text(tokens)) > 0.995
    # the file exports as it is: its own INT8 graphs, checked against their simulation (on
    # cosine: a random model's texts are near-ties, its rankings flip at any rounding)
    monkeypatch.setitem(PARITY, "int8", replace(PARITY["int8"], min_zero_shot_agreement=0.0))
    # (onnx: the quickest target to lower; every target's int8 lowering is tested below)
    args = ["export", str(path), "--target", "onnx", "--precision", "int8", "--samples", "8"]
    assert main(args) == 0
    manifest = json.loads(
        (tmp_path / "exports" / "onnx-int8" / "text" / "manifest.json").read_text()
    )
    assert manifest["precision"] == "int8" and manifest["parity"]["status"] == "passed"
    assert manifest["provenance"]["model_file"] == str(path)  # the INT8 file, as it was
    assert manifest["provenance"]["sha256"] == sha256_path(path)
    assert manifest["provenance"]["record"]["stage"] == "qat"
    assert manifest["float_layers"] == ["blocks.0.mlp.fc"]  # the plan, in the tower's names
    assert manifest["provenance"]["quantization"]["scheme"]["float_layers"] == list(
        quant.float_layers
    )
    assert main(["export", str(path), "--target", "onnx"]) == 2  # an INT8 file is int8 only
    assert main(["eval", str(path), "--outliers"]) == 2  # no float blocks to hook
    assert "is an INT8 model" in capsys.readouterr().err


def test_a_float_model_file_is_not_an_int8_one(tiny, tmp_path):
    model, record, *_ = tiny
    save_model(model, record, tmp_path / "float.pt")
    with pytest.raises(ModelFileError, match="a float model, not an INT8 one"):
        load_quantized(tmp_path / "float.pt")


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "executorch", "coreml"])
def test_int8_artifact_matches_its_simulation(tiny, tiny_int8, tmp_path, target):
    model, record, images, tokens, _ = tiny
    summary = _int8_export(
        model, record, images, tokens, tiny_int8, tmp_path / f"{target}-int8", target
    )
    fp32 = export_model(
        model,
        record,
        tmp_path / f"{target}-fp32",
        target=target,
        sample_images=images[:2],
        sample_tokens=tokens[:2],
    )
    backend = exporters.get(target)()
    for tower in ("image", "text"):
        manifest = json.loads((tmp_path / f"{target}-int8" / tower / "manifest.json").read_text())
        assert manifest["precision"] == "int8"
        if target == "onnx":  # QDQ in the standard operator set: nothing beyond onnxruntime
            assert manifest["format"]["opsets"] == {"": 18}
            assert "DequantizeLinear" in manifest["format"]["op_types"]
        parity = summary[tower]["parity"]
        assert parity["reference"].startswith("INT8 simulation")
        if backend.runs_here() is None:
            assert parity["status"] == "passed" and parity["cosine_min"] >= 0.99
        else:  # Core ML off macOS: the spec checks found mostly 8-bit weights
            weights = manifest["format"]["weight_dtypes"]
            assert weights.get("int8", 0) + weights.get("uint8", 0) > weights["float16"]
    # the tiny text tower is mostly its token table, 8-bit per row too (the tiny image tower
    # is mostly graph, not weights: benchmarks/export_targets.py measures real sizes)
    assert summary["text"]["bytes"] < 0.4 * fp32["text"]["bytes"]
    if target == "executorch":
        _runtime_needs_what_the_manifest_lists(tmp_path / "executorch-int8" / "text")


def _runtime_needs_what_the_manifest_lists(folder):
    """The manifest's kernel libraries, checked in a fresh ExecuTorch runtime: the portable
    kernels alone register every operator listed under them and none of the quantized ones, so
    the program fails to load ("Missing operator") until the quantized kernels are loaded."""
    kernels = json.loads((folder / "manifest.json").read_text())["format"]["kernels"]
    assert "quantized_decomposed::embedding_byte.out" in kernels["quantized_ops_lib"]
    script = """
import json, sys
from executorch.extension.pybindings import portable_lib
from executorch.runtime import Runtime
from export.profile.runner import load_quantized_kernels

def loads():
    try:
        Runtime.get().load_program(sys.argv[1]).load_method("forward")
        return True
    except Exception as err:
        return str(err)

portable, before = set(portable_lib._get_operator_names()), loads()
load_quantized_kernels()
print(json.dumps({"portable": sorted(portable), "before": before, "after": loads()}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script, str(folder / "model.pte")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(kernels["portable_ops_lib"]) <= set(result["portable"])
    assert not set(kernels["quantized_ops_lib"]) & set(result["portable"])
    assert result["before"] is not True and result["after"] is True


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_siglip_layout_int8_artifact_matches_its_simulation(tmp_path, target):
    """Attention pooling, no class token and last-position text pooling through the INT8
    quantizer and each runtime's int8 kernels."""
    model, record, images, tokens, batches = _model_and_samples("tiny_siglip")
    quantized = quantize(model, QuantConfig(), batches)
    summary = _int8_export(model, record, images, tokens, quantized, tmp_path / "int8", target)
    for tower in ("image", "text"):
        parity = summary[tower]["parity"]
        assert parity["status"] == "passed" and parity["cosine_min"] >= 0.99, parity


@pytest.fixture(scope="module")
def tiny_pe():
    """PE-Core's layout, small, and its INT8 simulation, quantized once per worker."""
    model, record, images, tokens, batches = _model_and_samples("tiny_pe")
    return model, record, images, tokens, quantize(model, QuantConfig(), batches)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "executorch", "coreml"])
def test_pe_core_layout_int8_artifact_matches_its_simulation(tiny_pe, tmp_path, target):
    """Rotary embeddings (their sin and cos tables, the pair swap's slices and concatenation),
    the class token and attention pooling with its own heads through the INT8 quantizer and
    each target's int8 lowering; the simulation itself stays near the float model."""
    model, record, images, tokens, quantized = tiny_pe
    with torch.no_grad():  # the image tower's (the text tower is CLIP's, as in tiny)
        assert _cosine(quantized.encode_image(images), model.encode_image(images)) > 0.98
    summary = _int8_export(model, record, images, tokens, quantized, tmp_path / "int8", target)
    for tower in ("image", "text"):
        parity = summary[tower]["parity"]
        if exporters.get(target)().runs_here() is None:
            assert parity["status"] == "passed" and parity["cosine_min"] >= 0.99, parity
        else:  # Core ML off macOS: its spec checks passed (the export raises otherwise)
            manifest = json.loads((tmp_path / "int8" / tower / "manifest.json").read_text())
            assert manifest["format"]["spec_checks"] == "passed"
            weights = manifest["format"]["weight_dtypes"]
            assert weights.get("int8", 0) + weights.get("uint8", 0) > weights["float16"]


def test_int8_exports_need_the_quantized_model(tiny, tmp_path):
    model, record, images, tokens, _ = tiny
    with pytest.raises(ValueError, match="int8 exports take the converted model"):
        export_model(
            model,
            record,
            tmp_path / "x",
            target="onnx",
            precision="int8",
            sample_images=images,
            sample_tokens=tokens,
        )
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_qat_stage_killed_mid_training_resumes(tmp_path):
    path = write_tiny_recipe(tmp_path, steps=2)
    path.write_text(
        path.read_text()
        + "quant: {samples: 32, batch_size: 16}\n"
        + "qat: {steps: 6, batch_size: 16, checkpoint_every: 2, log_every: 2}\n"
    )
    run_dir = tmp_path / "runs" / "tiny"
    with pytest.raises(Interrupted):  # pretraining (2 steps) finishes; QAT stops after 3
        run_pipeline(load_recipe(path), STAGES, stop_after=3)
    assert (run_dir / "pretrain" / "done.json").exists()
    assert torch.load(run_dir / "qat" / "checkpoint.pt", weights_only=True)["step"] == 2
    ctx = run_pipeline(load_recipe(path), STAGES)
    qat = ctx.done("qat")["summary"]
    assert qat["steps"] == 6 and not (run_dir / "qat" / "checkpoint.pt").exists()
    _, record = load_quantized(run_dir / "qat" / "model.pt")
    assert record.quantization["method"] == "qat" and record.provenance["parent"] == "tiny"
    int8 = ctx.done("eval")["summary"]["int8"]  # beside the float model: PTQ and QAT simulated
    assert set(int8) == {"ptq", "qat"} and "zs_colour" in int8["qat"]["zeroshot"]
    assert "INT8 simulation, quantization-aware training" in (run_dir / "report.md").read_text()


def test_a_quantized_artifact_that_loses_more_than_its_allowance_fails(tmp_path):
    def results(*top1):
        return {"zeroshot": {f"task{i}": {"top1": t} for i, t in enumerate(top1)}}

    folder = tmp_path / "onnx-int8"
    folder.mkdir()
    int8 = {"max_int8_drop": 0.01}
    _check_accuracy(results(0.80, 0.70), results(0.80, 0.715), folder, int8)  # -0.75 pt
    assert folder.exists()
    with pytest.raises(ParityError, match=r"75.0% through the runtime, 76.5% in the simulation"):
        _check_accuracy(results(0.80, 0.70), results(0.80, 0.73), folder, int8)
    assert not folder.exists()  # not a good artifact: removed
    # an int8 tower beside a w4 one: the larger allowance, both fields named
    folder.mkdir()
    both = {"max_int8_drop": 0.02, "max_weight_only_drop": 0.005}
    _check_accuracy(results(0.70), results(0.715), folder, both)
    with pytest.raises(ParityError, match=r"export.max_int8_drop / export.max_weight_only_drop"):
        _check_accuracy(results(0.70), results(0.73), folder, both)


@pytest.mark.slow
def test_an_int8_image_tower_beside_a_w4_text_tower(tiny, tiny_int8, tmp_path):
    """A precision per tower (export.targets ``onnx-int8+w4``): each tower lowered, checked
    against its own reference and described at its own precision; its simulation (what the
    export stage evaluates it against) is each tower's reference."""
    model, record, images, tokens, _ = tiny
    folder = tmp_path / "onnx-int8+w4"
    summary = export_model(
        model,
        record,
        folder,
        target="onnx",
        precision="int8+w4",
        sample_images=images[:8],
        sample_tokens=tokens[:8],
        quantized=tiny_int8,
    )
    assert summary["precision"] == "int8+w4"
    image, text = (
        json.loads((folder / t / "manifest.json").read_text()) for t in ("image", "text")
    )
    assert (image["precision"], text["precision"]) == ("int8", "w4")
    assert "weight_only" not in image and "float_layers" in image
    assert text["weight_only"]["layers"]["token_embed"] == "int4 per 32"
    assert "float_layers" not in text
    assert "DequantizeLinear" in image["format"]["op_types"]
    assert "com.microsoft::GatherBlockQuantized" in text["format"]["op_types"]
    assert image["parity"]["reference"].startswith("INT8 simulation")
    assert text["parity"]["reference"].startswith("w4 weight-only simulation")
    # each tower's own bounds, one agreement for the pair (the looser of the two)
    assert image["parity"]["thresholds"] == vars(PARITY["int8"])
    assert text["parity"]["thresholds"] == vars(PARITY["w4"])
    golden = json.loads((folder / "golden.json").read_text())
    assert "image tower: INT8 simulation" in golden["reference"]
    assert "text tower: w4 weight-only simulation" in golden["reference"]
    checked = verify_export(folder)
    assert checked["precision"] == "int8+w4"
    simulation = Simulation(model, "int8+w4", tiny_int8)
    assert simulation.tokenize is model.tokenize  # evaluated as the model is
    with torch.no_grad():
        assert torch.equal(simulation.encode_image(images), tiny_int8.encode_image(images))
        w4_text, float_text = simulation.encode_text(tokens), model.encode_text(tokens)
    assert 0.9 < _cosine(w4_text, float_text) < 1 - 1e-6  # the w4 weights, not the float ones
    with pytest.raises(ValueError, match="not 'w2' \\(the text tower's\\)"):
        export_model(
            model,
            record,
            tmp_path / "x",
            target="onnx",
            precision="int8+w2",
            sample_images=images,
            sample_tokens=tokens,
            quantized=tiny_int8,
        )


@pytest.mark.slow
def test_onnx_int8_artifact_is_exact_on_a_cpu_without_vnni(tiny, tiny_int8, tmp_path):
    """onnxruntime picks its integer kernels by CPU: the same artifact must pass `edgeclip verify`
    on an AVX2 CPU (no VNNI), here emulated by QEMU as a Haswell. With int8 weights its U8S8
    kernels saturated there (a tiny text tower's cosine fell to 0.963)."""
    qemu = shutil.which("qemu-x86_64")
    if platform.machine() != "x86_64" or (qemu is None and not os.environ.get("CI")):
        pytest.skip("needs QEMU user emulation on x86-64 (Debian: qemu-user; CI installs it)")
    model, record, images, tokens, _ = tiny
    out = tmp_path / "onnx-int8"
    _int8_export(model, record, images, tokens, tiny_int8, out, "onnx")
    verify = [qemu, "-cpu", "Haswell", sys.executable, "-m", "edgeclip.cli", "verify", str(out)]
    proc = subprocess.run(verify, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert ": ok (" in proc.stdout
