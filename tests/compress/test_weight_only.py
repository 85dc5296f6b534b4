"""Weight-only quantization (w8, w4): the simulation against a hand computation, and each
target's mixed artifacts of two tiny models (w8+w4, w4+w8) checked against the simulation."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from compress.models import ModelRecord, model_config
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


def _model(record: ModelRecord):
    torch.manual_seed(0)
    model = record.build().eval()
    images = torch.rand(8, 3, record.image_size, record.image_size) * 2 - 1
    return model, record, images, Tokenizer(record.context_length)(CAPTIONS * 2)


@pytest.fixture(scope="module")
def tiny():
    # ViT text tower with a RepMixer (convolutions), convolutional image tower with attention
    return _model(ModelRecord.named("tiny_mobile"))


@pytest.fixture(scope="module")
def bare():
    # no blocks: a patch convolution, the token table and the projections (cheap to lower)
    config = model_config("tiny")
    towers = {tower: {**config[tower], "layers": 0} for tower in ("vision", "text")}
    return _model(ModelRecord("tiny_bare", {**config, **towers}))


# Each target's two artifacts between them lower a convolution, a linear and the token table at
# both w8 and w4: tiny_mobile's image tower at w8 and its text tower at w4, then the bare
# model's image tower at w4 and its text tower (the token table) at w8
ARTIFACTS = {"tiny": "w8+w4", "bare": "w4+w8"}
CONVS = {
    ("tiny", "image"): "stem.0.fused",
    ("tiny", "text"): "mixers.0.mlp.conv",
    ("bare", "image"): "patch_embed",
}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "executorch", "coreml"])
@pytest.mark.parametrize("name", ["tiny", "bare"])
def test_weight_only_artifact_matches_its_simulation(request, tmp_path, target, name):
    model, record, images, tokens = request.getfixturevalue(name)
    precision = ARTIFACTS[name]
    precisions = dict(zip(("image", "text"), precision.split("+"), strict=True))
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
        thresholds={
            tower: replace(PARITY[p], min_zero_shot_agreement=0.0)
            for tower, p in precisions.items()
        },
    )
    backend = exporters.get(target)()
    for tower, p in precisions.items():
        manifest = json.loads((folder / tower / "manifest.json").read_text())
        assert manifest["precision"] == summary[tower]["precision"] == p
        layers = manifest["weight_only"]["layers"]
        module = model.visual if tower == "image" else model.text
        linears = [path for path, m in module.named_modules() if isinstance(m, nn.Linear)]
        assert linears and all(path in layers for path in linears)
        kinds = {kind for path, kind in layers.items() if path in linears}
        assert kinds == ({"int4 per 32"} if p == "w4" else {"int8 per channel"})
        if tower == "text":
            table = "int4 per 32" if p == "w4" else "int8 per channel"
            assert layers["token_embed"] == table
        others = {kind for path, kind in layers.items() if path not in [*linears, "token_embed"]}
        assert others <= {"int8 per channel"}  # convolutions: 8 bits at w4 too
        if (name, tower) in CONVS:
            assert layers[CONVS[name, tower]] == "int8 per channel"
        parity = summary[tower]["parity"]
        assert parity["reference"].startswith(f"{p} weight-only simulation")
        if backend.runs_here() is None:
            assert parity["status"] == "passed"
            assert parity["cosine_min"] >= PARITY[p].min_cosine
        details = manifest["format"]
        if target == "onnx":  # float activations: parity at float rounding
            ops = details["op_types"]
            assert ops["com.microsoft::MatMulNBits"] > 0
            assert ("com.microsoft::GatherBlockQuantized" in ops) == (tower == "text" and p == "w4")
            if name == "tiny":
                assert "MatMul" in ops  # attention stays float
            assert parity["max_abs"] < 1e-5
        if target == "executorch":  # the token table by the quantized kernels, linears by XNNPACK
            kernels = details["kernels"]
            if tower == "text":
                table = "embedding_4bit" if p == "w4" else "embedding_byte"
                assert kernels["quantized_ops_lib"] == [f"quantized_decomposed::{table}.dtype_out"]
            assert not any("linear" in op or "mm" in op for op in kernels["portable_ops_lib"])
        if target == "coreml":  # spec checks (Core ML runs on macOS only)
            assert details["spec_checks"] == "passed"  # with exactly the simulation's weight values
            assert details["minimum_deployment_target"] == ("iOS18" if p == "w4" else "iOS17")
            compressed = "blockwise_shift_scale" if p == "w4" else "affine_dequantize"
            assert details["op_types"][f"constexpr_{compressed}"] == len(layers)
            int4 = sum(
                module.get_submodule(path).weight.numel()
                for path, kind in layers.items()
                if kind.startswith("int4")
            )
            assert details["weight_dtypes"].get("int4", 0) == int4
    # the tiny text tower is mostly its token table: 8 bits, or 4 with a scale per 32
    table = model.text.token_embed.weight.numel() * 4
    assert summary["text"]["bytes"] < table * (0.3 if precisions["text"] == "w8" else 0.17)
    checked = verify_export(folder)  # what `edgeclip verify` runs: hashes, samples, golden
    assert checked["precision"] == precision


def test_coreml_layers_with_equal_weights_share_one_constant(tmp_path):
    # a random MobileCLIP-S0's two text RepMixers fold to the same fp16 kernel; coremltools'
    # const_deduplication then leaves one constant for both, compressed once
    torch.manual_seed(0)
    tower = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    tower[2].weight.data.copy_(tower[0].weight.data)
    simulation = quantize_tower(tower, "w8")
    details = exporters.get("coreml")().export(
        simulation, torch.randn(1, 32), tmp_path / "model.mlpackage", "x", "w8"
    )
    assert details["spec_checks"] == "passed"  # the integers of both layers, one 8-bit copy
    assert details["op_types"]["constexpr_affine_dequantize"] == 1
    assert 32 * 32 <= details["weight_dtypes"]["int8"] < 2 * 32 * 32
