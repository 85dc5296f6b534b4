"""The Core ML target with the real coremltools: both towers of the tiny families at fp16 and fp32,
checked by reading the saved spec (what Linux can do), and checks that fail when they should."""

from __future__ import annotations

import platform

import pytest
import torch

from compress.compat import torch_export_quiet
from compress.models import ModelRecord, reparameterize
from compress.models.clip import NormalizedTower
from compress.tokenizer import Tokenizer
from export import exporters
from export.coreml import CoreMLTarget, _conversion_quiet, check_spec
from export.manifest import tensor_spec
from export.verify import ParityError

SOFTMAX = {"kind": "softmax"}
BATCH = 2
FLOATS = {"fp32": "float32", "fp16": "float16"}
CAPTIONS = ["a red circle", "two blue squares"]


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return Tokenizer(16)(CAPTIONS)  # (2, 16) int64, as the driver passes them


def _towers(model, tokens):
    """(tower name, input name, NormalizedTower, example) for both towers of a folded model."""
    size = model.visual.image_size
    images = torch.rand(len(tokens), 3, size, size, generator=torch.Generator().manual_seed(0))
    return [
        ("image", "image", NormalizedTower(model.visual), images),
        ("text", "tokens", NormalizedTower(model.text), tokens),
    ]


def test_registered():
    assert exporters.get("coreml") is CoreMLTarget
    target = CoreMLTarget()
    assert (target.file_name, target.precisions) == (
        "model.mlpackage",
        ("fp32", "fp16", "int8", "w8", "w4"),
    )
    assert target.runtime().startswith("coremltools 9.0")


# Softmax attention at both precisions here, for what only this target has (op histogram, casts,
# weight dtypes); tests/export/test_export.py runs every attention variant × precision through
# the driver.
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
@pytest.mark.parametrize("family", ["tiny", "tiny_mobile"])  # ViT and MobileCLIP-style (folded)
def test_export_spec(family, precision, tokens, tmp_path):
    torch.manual_seed(0)
    record = ModelRecord.named(family, {"image": SOFTMAX, "text": SOFTMAX})
    model = reparameterize(record.build().eval())
    target = CoreMLTarget()
    expected_inputs = {
        "image": tensor_spec("image", [BATCH, 3, 32, 32], "float32"),
        "tokens": tensor_spec("tokens", [BATCH, 16], "int32"),  # Core ML has no int64
    }
    for tower, input_name, module, example in _towers(model, tokens):
        path = tmp_path / tower / target.file_name
        path.parent.mkdir()
        details = target.export(module, example, path, input_name, precision)

        assert path.is_dir() and (path / "Manifest.json").is_file()  # an .mlpackage bundle
        assert details["spec_checks"] == "passed"
        assert details["minimum_deployment_target"] == "iOS17"
        assert details["specification_version"] >= 8 and details["opset"] == "CoreML7"
        assert details["compute_precision"] == precision
        ops = details["op_types"]
        assert ops["const"] > 0 and ops.get("linear", 0) > 0
        if tower == "image":  # fp16 inside: one cast in (the image), one out (the embedding)
            assert ops.get("cast", 0) == (2 if precision == "fp16" else 0)
        weights = details["weight_dtypes"]
        assert {d for d in weights if d.startswith("float")} == {FLOATS[precision]}
        # all the tower's weights are there (give or take the few values passes fold or add)
        assert weights[FLOATS[precision]] >= 0.99 * sum(p.numel() for p in module.parameters())

        inputs, outputs = target.io_specs(path, input_name)
        assert inputs == [expected_inputs[input_name]]
        assert outputs == [
            {"name": "embedding", "shape": [BATCH, 32], "dtype": "float32", "l2_normalized": True}
        ]


@pytest.fixture(scope="module")
def fp32_image(tmp_path_factory):
    """A tiny image tower written at fp32, and what its spec should say."""
    model = reparameterize(ModelRecord.named("tiny").build().eval())
    path = tmp_path_factory.mktemp("coreml") / "model.mlpackage"
    example = torch.rand(1, 3, 32, 32)
    CoreMLTarget().export(NormalizedTower(model.visual), example, path, "image", "fp32")
    io = {
        "inputs": [tensor_spec("image", [1, 3, 32, 32], "float32")],
        "outputs": [tensor_spec("embedding", [1, 32], "float32")],
    }
    return path, io


def test_spec_check_passes_what_it_should(fp32_image):
    path, io = fp32_image
    assert check_spec(path, precision="fp32", **io)["spec_checks"] == "passed"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"precision": "fp16"}, r"float32 constants in a fp16 program"),
        ({"inputs": [tensor_spec("image", [1, 3, 32, 32], "float16")]}, r"inputs are .* expected"),
        ({"inputs": [tensor_spec("pixels", [1, 3, 32, 32], "float32")]}, r"inputs are .* expected"),
        ({"outputs": [tensor_spec("embedding", [2, 32], "float32")]}, r"outputs are .* expected"),
    ],
)
def test_spec_check_fails_on_a_mismatch(fp32_image, change, message):
    path, io = fp32_image
    kwargs = {"precision": "fp32", **io, **change}
    with pytest.raises(ParityError, match=message) as error:
        check_spec(path, **kwargs)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_spec_check_fails_on_an_older_deployment_target(fp32_image, tmp_path):
    import coremltools as ct
    import numpy as np

    path, io = fp32_image
    model = reparameterize(ModelRecord.named("tiny").build().eval())
    with torch_export_quiet(), _conversion_quiet():
        program = torch.export.export(NormalizedTower(model.visual), (torch.rand(1, 3, 32, 32),))
        older = ct.convert(
            program.run_decompositions({}),
            inputs=[ct.TensorType(name="image", shape=(1, 3, 32, 32), dtype=np.float32)],
            outputs=[ct.TensorType(name="embedding", dtype=np.float32)],
            minimum_deployment_target=ct.target.iOS16,
            compute_precision=ct.precision.FLOAT32,
        )
    older.save(str(tmp_path / "model.mlpackage"))
    with pytest.raises(ParityError, match="specification version 7 is older than iOS17"):
        check_spec(tmp_path / "model.mlpackage", precision="fp32", **io)


def test_no_op_slice_converts(tmp_path):
    """torch.export writes ``pos[:, :L]`` (L the full length) as aten.alias, which coremltools
    9.0 cannot convert on its own (docs/library-traps.md)."""

    class Positions(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos = torch.nn.Parameter(torch.randn(1, 8, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize((x + self.pos[:, : x.shape[1]]).sum(1), dim=-1)

    example = torch.randn(1, 8, 4)
    program = torch.export.export(Positions(), (example,))
    assert any("alias" in str(node.target) for node in program.graph.nodes)
    details = CoreMLTarget().export(Positions(), example, tmp_path / "model.mlpackage", "x", "fp16")
    assert details["spec_checks"] == "passed"


def test_unknown_precision(tmp_path):
    with pytest.raises(ValueError, match="'int4'; expected fp32, fp16, int8, w8, w4"):
        CoreMLTarget().export(
            torch.nn.Identity(), torch.rand(1, 4), tmp_path / "model.mlpackage", "x", "int4"
        )


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML runs on macOS")
def test_runs_only_on_macos(fp32_image):
    path, _ = fp32_image
    target = CoreMLTarget()
    assert target.runs_here() == "needs macOS"
    with pytest.raises(RuntimeError, match="needs macOS"):
        target.load(path)
