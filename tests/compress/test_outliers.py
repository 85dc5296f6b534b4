"""Activation outlier statistics: kurtosis and ∞-norm on known tensors, the hooks on every tower
kind, an injected outlier, `edgeclip eval --outliers`, and the eval stage's outputs."""

import copy
import json
import textwrap

import pytest
import torch

from compress.models import ModelRecord, save_model
from compress.quant.outliers import (
    OutlierHooks,
    hooked_layers,
    inf_norm,
    kurtosis,
    measure_heldout,
    measure_outliers,
    outlier_table,
    plot_outliers,
    sample_batches,
)
from edgeclip.cli import main
from edgeclip.pipeline import run_pipeline
from edgeclip.recipe import RecipeError, load_recipe
from edgeclip.stages import STAGES
from tests.helpers import model_inputs

PNG = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# kurtosis and ∞-norm


def test_kurtosis_of_a_plus_minus_one_vector_is_one():
    # μ = 0, every (x − μ)² = 1: E[(x − μ)⁴] / σ⁴ = 1 / 1², the smallest kurtosis there is
    assert kurtosis(torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0])).item() == pytest.approx(1.0)


@pytest.mark.parametrize("n", [4, 10, 100])
def test_kurtosis_of_one_outlier_among_zeros(n):
    # x = (a, 0, …, 0) of length n: μ = a/n; the deviations are a(n−1)/n once and −a/n (n−1)
    # times, so  σ² = a²(n−1)/n²  and  E[(x−μ)⁴] = a⁴(n−1)((n−1)³ + 1)/n⁵, and with
    # (n−1)³ + 1 = n(n² − 3n + 3):  kurtosis = (n² − 3n + 3)/(n − 1), whatever a is
    # (n = 4: 7/3; n = 10: 73/9; n = 100: 9703/99 ≈ 98: it grows like n).
    x = torch.zeros(n)
    x[n // 2] = 37.5
    assert kurtosis(x).item() == pytest.approx((n * n - 3 * n + 3) / (n - 1), rel=1e-6)


def test_kurtosis_of_a_large_normal_sample_is_three():
    x = torch.randn(4, 250_000, generator=torch.Generator().manual_seed(0))
    assert kurtosis(x, dim=1).tolist() == pytest.approx([3.0] * 4, abs=0.05)


def test_kurtosis_of_a_constant_is_zero_not_nan_and_reduces_one_dim():
    x = torch.stack([torch.full((8,), 0.1), torch.tensor([1.0, -1.0] * 4)])  # (2, 8)
    assert kurtosis(x).tolist() == pytest.approx([0.0, 1.0])
    assert kurtosis(torch.randn(3, 5, 7), dim=1).shape == (3, 7)
    assert kurtosis(torch.ones(3, dtype=torch.float16)).dtype == torch.float16
    x64 = torch.randn(6, dtype=torch.float64)
    before = x64.clone()
    kurtosis(x64)  # computes in place on a copy, never on the caller's float64 tensor
    assert torch.equal(x64, before)


def test_inf_norm():
    x = torch.tensor([[1.0, -3.0], [2.0, 0.5]])
    assert inf_norm(x).item() == 3.0
    assert inf_norm(x, dim=1).tolist() == [3.0, 2.0]
    assert inf_norm(x, dim=0).tolist() == [2.0, 3.0]


# ---------------------------------------------------------------------------------------------
# hooks and measurement


def _model(name: str = "tiny", seed: int = 0):
    torch.manual_seed(seed)
    record = ModelRecord.named(name)
    return record.build().eval(), record


def test_hooks_on_the_tiny_model_cover_every_block_and_ffn_and_are_removed():
    model, _ = _model()
    names = [name for name, *_ in hooked_layers(model)]
    assert names == [
        f"{tower}.blocks.{i}{ffn}"
        for tower in ("visual", "text")
        for i in range(2)
        for ffn in ("", ".mlp")
    ]
    images, tokens = model_inputs(model, 3)
    result = measure_outliers(model, [{"image": images, "text": tokens}])
    assert result["samples"] == 3 and len(result["layers"]) == 8
    assert {(la["tower"], la["kind"]) for la in result["layers"]} == {
        (t, k) for t in ("image", "text") for k in ("block", "ffn")
    }
    for la in result["layers"]:
        assert 0 < la["inf_norm"] <= la["inf_norm_max"] and la["kurtosis"] >= 1
    assert not any(m._forward_hooks for m in model.modules())
    json.dumps(result, allow_nan=False)  # JSON-able, all finite


def test_hooks_are_removed_when_the_forward_pass_raises():
    model, _ = _model()
    with pytest.raises(RuntimeError), OutlierHooks(model):
        model.visual(torch.randn(1, 3, 7, 7))  # too small for an 8-pixel patch
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError):
        measure_outliers(model, [{"image": torch.randn(1, 3, 7, 7)}])
    assert not any(m._forward_hooks for m in model.modules())


def test_mobileclip_towers_hook_mixer_and_attention_blocks():
    model, record = _model("tiny_mobile")
    model.train()
    layers = [(name, kind) for name, _, _, kind in hooked_layers(model)]
    assert layers == [
        ("visual.stages.0.blocks.0", "block"),  # a RepMixer block, (B, C, H, W)
        ("visual.stages.0.blocks.0.mlp", "ffn"),
        ("visual.stages.1.blocks.0", "block"),  # an attention block, (B, C, H, W)
        ("visual.stages.1.blocks.0.mlp", "ffn"),
        ("text.mixers.0", "block"),  # Text-RepMixer, (B, C, 1, T)
        ("text.mixers.0.mlp", "ffn"),
        ("text.blocks.0", "block"),
        ("text.blocks.0.mlp", "ffn"),
    ]
    result = measure_heldout(model, record, 4, batch_size=3)
    assert result["samples"] == 4 and len(result["layers"]) == 8
    assert model.training  # measured in eval mode, its mode restored


def test_one_tower_alone_and_the_summary():
    model, _ = _model()
    images, _ = model_inputs(model, 2)
    result = measure_outliers(model, [{"image": images}])
    assert {la["tower"] for la in result["layers"]} == {"image"}
    summary = result["summary"]
    assert summary["text"] == {"max_inf_norm": None, "mean_kurtosis": None, "max_kurtosis": None}
    assert summary["all"] == summary["image"]
    assert summary["image"]["max_inf_norm"] == max(la["inf_norm"] for la in result["layers"])


def test_an_injected_outlier_raises_inf_norm_and_kurtosis():
    model, record = _model()
    spiked = copy.deepcopy(model)
    with torch.no_grad():  # one hidden channel of the first image FFN's output, 100x larger
        spiked.visual.blocks[0].mlp.proj.weight[5] *= 100
        spiked.visual.blocks[0].mlp.proj.bias[5] *= 100
    images, tokens = model_inputs(model, 8)
    base = measure_outliers(model, sample_batches(images, tokens, 4))
    high = measure_outliers(spiked, sample_batches(images, tokens, 4))
    for key in ("max_inf_norm", "max_kurtosis", "mean_kurtosis"):
        assert high["summary"]["image"][key] > 2 * base["summary"]["image"][key], key
    assert high["summary"]["text"] == base["summary"]["text"]  # the text tower is untouched
    ffn = {la["name"]: la for la in high["layers"]}["visual.blocks.0.mlp"]
    assert ffn["kurtosis"] > 10  # one channel dominates the 32 hidden dims


# ---------------------------------------------------------------------------------------------
# presentation, CLI and the eval stage


def test_table_and_plot(tmp_path):
    model, record = _model()
    result = measure_heldout(model, record, 4)
    lines = outlier_table(result, "`tiny`")
    assert sum(line.startswith("| `visual.blocks.") for line in lines) == 4
    assert any(line.startswith("| `tiny` | all |") for line in lines)
    plot_outliers({"model": result, "teacher": result}, tmp_path / "both.png")
    assert (tmp_path / "both.png").read_bytes().startswith(PNG)
    assert [p.name for p in tmp_path.iterdir()] == ["both.png"]  # no temp file left behind


def test_cli_outliers_writes_json_and_png(tmp_path, capsys):
    model, record = _model()
    save_model(model, record, tmp_path / "model.pt")
    out, plot = tmp_path / "outliers.json", tmp_path / "outliers.png"
    args = ["eval", str(tmp_path / "model.pt"), "--outliers", "--samples", "6"]
    assert main([*args, "--batch-size", "4", "--out", str(out), "--plot", str(plot)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == str(tmp_path / "model.pt")
    assert result["outliers"]["samples"] == 6 and len(result["outliers"]["layers"]) == 8
    assert plot.read_bytes().startswith(PNG)
    printed = capsys.readouterr().out
    assert "| `visual.blocks.0.mlp` | image | ffn |" in printed and "| `tiny` | all |" in printed


def test_cli_outliers_user_errors(tmp_path, capsys):
    export_folder = tmp_path / "onnx-fp32"
    export_folder.mkdir()
    assert main(["eval", str(export_folder), "--outliers"]) == 2
    err = capsys.readouterr().err.strip()
    assert "export folder" in err and "\n" not in err
    assert main(["eval", str(tmp_path / "m.pt"), "--plot", "x.png", "--zeroshot", "x.csv"]) == 2
    assert "--plot goes with --outliers" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "m.pt"), "--outliers", "--samples", "0"]) == 2
    assert main(["eval", str(tmp_path / "m.pt")]) == 2


def test_recipe_checks_outlier_samples(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\neval: {retrieval: [retrieval], outlier_samples: 0}\n")
    with pytest.raises(RecipeError, match="eval.outlier_samples: must be >= 1, got 0"):
        load_recipe(path)


def test_eval_stage_measures_the_student_and_its_teacher(tmp_path):
    model, record = _model()
    save_model(model, record, tmp_path / "teacher.pt")
    path = tmp_path / "d.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: d
        runs_dir: {tmp_path / "runs"}
        data:
          format: csv
          scenes: {{image_size: 32, train: 64, val: 16, retrieval: 32, zeroshot: 36, shard_size: 64}}
        teacher: {{model: tiny, checkpoint: {tmp_path / "teacher.pt"}}}
        distill: {{model: tiny_student, steps: 1, batch_size: 8, warmup: 0}}
        eval: {{zeroshot: [zs_colour], retrieval: [retrieval], batch_size: 16, outlier_samples: 20}}
        """)
    )
    run_dir = run_pipeline(load_recipe(path), STAGES).run_dir
    saved = json.loads((run_dir / "eval" / "outliers.json").read_text())
    assert {label: r["name"] for label, r in saved.items()} == {
        "model": "tiny_student",
        "teacher": "tiny",
    }
    assert all(r["samples"] == 20 for r in saved.values())
    assert (run_dir / "eval" / "outliers.png").read_bytes().startswith(PNG)
    summary = json.loads((run_dir / "eval" / "done.json").read_text())["summary"]["outliers"]
    assert summary["plot"] == "eval/outliers.png" and summary["samples"] == 20
    assert summary["models"]["teacher"]["image"] == saved["teacher"]["summary"]["image"]
    report = (run_dir / "report.md").read_text()
    assert "## Activation outliers" in report and "](eval/outliers.png)" in report
    assert "| `tiny_student` (model) | image |" in report
    assert "| `tiny` (teacher) | text |" in report
