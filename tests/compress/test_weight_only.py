"""Weight-only quantization (w8, w4): the simulation against a hand computation, and each
target's w8/w4 artifact of the tiny model checked against the simulation it was written from."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from compress.models import ModelRecord
from compress.quant.weight_only import GROUP_SIZE, quantize_tower, quantize_weight
from compress.tokenizer import Tokenizer
from export import exporters
from export.artifact import verify_export
from export.driver import export_model
from export.verify import PARITY

CAPTIONS = ["a red circle", "two blue squares", "a small star", "the green triangle"]


def test_w4_groups_match_a_hand_computation():
    # two groups of 32 in one row: scale = max|w| / 7 per group, q = round(w / scale)
    row = torch.zeros(1, 2 * GROUP_SIZE)
    row[0, :3] = torch.tensor([0.7, -0.25, 0.05])  # scale 0.1: 7, -2.5 → -2 (half to even), 0.5 → 0
    row[0, GROUP_SIZE] = -3.5  # scale 0.5: -7, the rest of the group 0
    q = quantize_weight(row, bits=4, group=GROUP_SIZE)
    assert q.values[0, :3].tolist() == [7, -2, 0]
    assert q.values[0, GROUP_SIZE].item() == -7 and not q.values[0, 3:GROUP_SIZE].any()
    assert torch.allclose(q.scales, torch.tensor([[0.1, 0.5]]))
    expected = torch.zeros_like(row)
    expected[0, :2] = torch.tensor([0.7, -0.2])
    expected[0, GROUP_SIZE] = -3.5
    assert torch.allclose(q.dequantize(), expected)


def test_w8_is_per_output_channel_and_keeps_zero_rows():
    weight = torch.tensor([[127.0, -63.4, 0.2], [0.0, 0.0, 0.0], [-2.54, 1.27, 0.0]])
    q = quantize_weight(weight, bits=8)
    assert q.values.tolist() == [[127, -63, 0], [0, 0, 0], [-127, 64, 0]]  # 63.5 → 64 (to even)
    assert torch.allclose(q.scales, torch.tensor([[1.0], [1.0], [0.02]]))  # a zero row: scale 1
    conv = quantize_weight(torch.randn(4, 3, 3, 3), bits=8)  # a filter is one row
    assert conv.scales.shape == (4, 1)
    assert conv.values.abs().flatten(1).amax(1).tolist() == [127] * 4


def test_quantizing_again_gives_the_same_integers():
    # what lets coremltools, which recomputes scales, write the simulation's integers
    weight = torch.randn(8, 64)
    for bits, group in ((8, None), (4, GROUP_SIZE)):
        first = quantize_weight(weight, bits, group)
        again = quantize_weight(first.dequantize(), bits, group)
        assert torch.equal(again.values, first.values)
        assert torch.allclose(again.scales, first.scales, rtol=1e-6)


def test_tower_scheme_by_layer():
    torch.manual_seed(0)
    tower = nn.Sequential(
        nn.Embedding(10, 64), nn.Linear(64, 48), nn.Linear(48, 8), nn.Conv1d(8, 8, 3)
    )
    original = tower[1].weight.clone()
    w4 = quantize_tower(tower, "w4")
    # 48 inputs are not whole groups of 32: 8 bits per channel, as convolutions are
    assert w4.layers() == {
        "0": "int4 per 32",
        "1": "int4 per 32",
        "2": "int8 per channel",
        "3": "int8 per channel",
    }
    assert torch.equal(tower[1].weight, original)  # the model itself is untouched
    assert torch.equal(w4.module[1].weight, w4.weights["1"].dequantize())
    assert set(quantize_tower(tower, "w8").layers().values()) == {"int8 per channel"}
    with pytest.raises(ValueError, match="expected w8 or w4"):
        quantize_tower(tower, "w2")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    record = ModelRecord.named("tiny_mobile")  # ViT text tower, convolutional image tower
    model = record.build().eval()
    images = torch.rand(8, 3, record.image_size, record.image_size) * 2 - 1
    tokens = Tokenizer(record.context_length)(CAPTIONS * 2)
    return model, record, images, tokens


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["w8", "w4"])
@pytest.mark.parametrize("target", ["onnx", "executorch", "coreml"])
def test_weight_only_artifact_matches_its_simulation(tiny, tmp_path, target, precision):
    model, record, images, tokens = tiny
    folder = tmp_path / f"{target}-{precision}"
    summary = export_model(
        model,
        record,
        folder,
        target=target,
        precision=precision,
        sample_images=images,
        sample_tokens=tokens,
        # a random model's texts are near-ties, so rankings flip at any rounding: cosine only
        thresholds=replace(PARITY[precision], min_zero_shot_agreement=0.0),
    )
    backend = exporters.get(target)()
    text = json.loads((folder / "text" / "manifest.json").read_text())
    assert text["precision"] == precision
    layers = text["weight_only"]["layers"]
    assert layers["token_embed"] == ("int4 per 32" if precision == "w4" else "int8 per channel")
    assert layers["mixers.0.mlp.conv"] == "int8 per channel"  # convolutions: 8 bits at w4 too
    for tower in ("image", "text"):
        parity = summary[tower]["parity"]
        assert parity["reference"].startswith(f"{precision} weight-only simulation")
        if backend.runs_here() is None:
            assert parity["status"] == "passed"
            assert parity["cosine_min"] >= PARITY[precision].min_cosine
    if target == "onnx":  # float activations: parity at float rounding
        ops = text["format"]["op_types"]
        assert ops["com.microsoft::MatMulNBits"] > 0 and "MatMul" in ops  # attention stays float
        assert ("com.microsoft::GatherBlockQuantized" in ops) == (precision == "w4")
        assert summary["text"]["parity"]["max_abs"] < 1e-5
    if target == "executorch":  # the token table by the quantized kernels, linears by XNNPACK
        table = "embedding_4bit" if precision == "w4" else "embedding_byte"
        kernels = text["format"]["kernels"]
        assert kernels["quantized_ops_lib"] == [f"quantized_decomposed::{table}.dtype_out"]
        assert not any("linear" in op or "mm" in op for op in kernels["portable_ops_lib"])
    if target == "coreml":  # spec checks (Core ML runs on macOS only)
        details = text["format"]
        assert details["spec_checks"] == "passed"  # with exactly the simulation's weight values
        assert details["minimum_deployment_target"] == ("iOS18" if precision == "w4" else "iOS17")
        compressed = "blockwise_shift_scale" if precision == "w4" else "affine_dequantize"
        assert details["op_types"][f"constexpr_{compressed}"] == len(layers)
        int4 = sum(
            model.text.get_submodule(path).weight.numel()
            for path, kind in layers.items()
            if kind.startswith("int4")
        )
        assert details["weight_dtypes"].get("int4", 0) == int4
    # the tiny text tower is mostly its token table: 8 bits, or 4 with a scale per 32
    table = model.text.token_embed.weight.numel() * 4
    assert summary["text"]["bytes"] < table * (0.3 if precision == "w8" else 0.17)
    checked = verify_export(folder)  # what `edgeclip verify` runs: hashes, samples, golden
    assert checked["precision"] == precision
