"""Per-layer INT8 sensitivity and layers kept in float: a model with an injected outlier channel
has its most sensitive layers where the outlier is, and a layer named in ``float_layers`` keeps
its float weights through PTQ while every other layer is quantized."""

from __future__ import annotations

import functools

import pytest
import torch

from compress.models import ModelRecord, reparameterize
from compress.quant.config import QuantConfig
from compress.quant.outliers import inject_outlier
from compress.quant.ptq import quantize
from compress.quant.sensitivity import plan_float_layers, quantizable_layers, sensitivity
from compress.tokenizer import Tokenizer
from edgeclip.recipe.loading import parse_recipe
from edgeclip.recipe.sections import RecipeError

CAPTIONS = [f"a {s} {c} {t}" for s in ("small", "large") for c in ("red", "blue") for t in "xyz"]
OUTLIER = (
    "image.blocks.1.mlp.fc"  # one output channel of it scaled ×200 (and back in the projection)
)


def _model():
    torch.manual_seed(0)
    record = ModelRecord.named("tiny")
    model = record.build().eval()
    inject_outlier(model.visual.blocks[1].mlp, 200)  # between fc and proj, unseen at the output
    size, n = record.image_size, len(CAPTIONS)
    inputs = {
        "image": torch.rand(2 * n, 3, size, size) * 2 - 1,
        "text": Tokenizer(record.context_length)(CAPTIONS * 2),
    }
    calibration = {k: v[:n] for k, v in inputs.items()}
    heldout = {k: v[n:] for k, v in inputs.items()}
    return model, calibration, heldout


@pytest.mark.slow
def test_the_injected_outlier_is_where_quantization_hurts_most():
    model, calibration, heldout = _model()
    layers = quantizable_layers(reparameterize(model), QuantConfig())
    assert "text.token_embed" in layers and "image.blocks.1.mlp.proj" in layers
    # the outlier's block and a few others of the image tower (each layer costs a PT2E prepare)
    chosen = [n for n in layers if n.startswith(("image.blocks.1.", "image.blocks.0.mlp.fc"))]
    rows = sensitivity(model, QuantConfig(), calibration, heldout, chosen)
    assert sorted(r["layer"] for r in rows) == sorted(chosen) and len(chosen) == 5  # each once
    assert all(0 <= r["cosine_drop"] <= r["cosine_drop_max"] <= 2 for r in rows)
    assert {r["layer"] for r in rows[:2]} == {OUTLIER, "image.blocks.1.mlp.proj"}, rows[:4]
    assert rows[1]["cosine_drop"] > 10 * rows[2]["cosine_drop"]  # far above the rest

    # the plan: with a budget that all-W8A8 misses, the outlier's layers go to float first
    @functools.cache  # each plan's PTQ once (PTQ is deterministic)
    def drop(floats: tuple[str, ...]) -> float:  # the image embeddings' mean 1 − cosine
        int8 = quantize(model, QuantConfig(float_layers=floats), [calibration])
        with torch.no_grad():
            want = torch.nn.functional.normalize(model.visual(heldout["image"]), dim=-1)
            return float(1 - (int8.visual(heldout["image"]) * want).sum(-1).mean())

    everything, outlier_float = drop(()), drop((rows[0]["layer"], rows[1]["layer"]))
    budget = (everything + outlier_float) / 2
    plan = plan_float_layers(lambda: rows, drop, budget)
    assert plan["within_budget"] and plan["drop"] <= budget < everything
    assert plan["float_layers"]  # where global W8A8 misses the budget: the outlier's, in float
    assert set(plan["float_layers"]) <= {OUTLIER, "image.blocks.1.mlp.proj"}
    assert [s["float_layers"] for s in plan["steps"]][0] == []  # all W8A8 first
    spared = plan_float_layers(lambda: 1 / 0, drop, everything)  # fits: nothing is measured
    assert spared["float_layers"] == [] and spared["sensitivity"] is None


@pytest.mark.slow
def test_float_layers_keep_their_weights_and_the_rest_is_quantized():
    model, calibration, heldout = _model()
    batches = [calibration]
    floats = (OUTLIER, "image.blocks.1.mlp.proj")
    planned = quantize(model, QuantConfig(float_layers=floats), batches)
    everything = quantize(model, QuantConfig(), batches)

    def quantized_weights(graph) -> int:  # int8 weight constants in a converted graph
        return sum(1 for t in graph.state_dict().values() if t.dtype == torch.int8)

    image_plan, image_all = planned.visual.graph, everything.visual.graph
    assert quantized_weights(image_plan) == quantized_weights(image_all) - 2
    assert quantized_weights(planned.text.graph) == quantized_weights(everything.text.graph)
    with torch.no_grad():
        float_image = torch.nn.functional.normalize(model.visual(heldout["image"]), dim=-1)
        cos_plan = (planned.visual(heldout["image"]) * float_image).sum(-1).mean()
        cos_all = (everything.visual(heldout["image"]) * float_image).sum(-1).mean()
    assert cos_plan > cos_all  # keeping the outlier's layers in float recovers the embeddings


@pytest.mark.parametrize("name", ["blocks.0.mlp.fc", "vision.blocks.0", "image"])
def test_a_float_layer_names_its_tower(name):
    with pytest.raises(RecipeError, match="quant.float_layers"):
        parse_recipe(f"name: r\nquant: {{float_layers: [{name}]}}\n")


def test_the_cli_measures_float_pytorch_models_only(tmp_path, capsys):
    from edgeclip.cli import main

    export_folder = tmp_path / "onnx-int8"
    export_folder.mkdir()
    assert main(["eval", str(export_folder), "--sensitivity"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--sensitivity:" in err and "export folder" in err and "\n" not in err
    assert main(["eval", str(tmp_path / "m.pt"), "--sensitivity", "--samples", "0"]) == 2


@pytest.mark.slow
def test_a_budget_the_run_meets_plans_nothing_and_says_so(tmp_path):
    """quant.max_drop in a run: the plan is saved in the run (keyed by the model file and the
    sections it measures with) and the int8 manifests list the layers it keeps in float."""
    import json

    from edgeclip.figures import mean_top1
    from edgeclip.pipeline import run_pipeline
    from edgeclip.recipe import load_recipe
    from edgeclip.stages import STAGES
    from tests.helpers import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path, steps=2)
    text = recipe.read_text().replace("export:\n", "quant: {max_drop: 0.9}\nexport:\n")
    # an int8 image tower beside a w4 text tower: the stage's path for a precision per tower
    recipe.write_text(text + "  targets: [onnx-int8+w4]\n")
    run_dir = run_pipeline(load_recipe(recipe), STAGES).run_dir
    plan = json.loads((run_dir / "quant_plan.json").read_text())
    assert plan["within_budget"] and plan["float_layers"] == [] and plan["sensitivity"] is None
    assert plan["key"]["model_sha256"] and len(plan["steps"]) == 1
    manifest = json.loads((run_dir / "export/onnx-int8+w4/image/manifest.json").read_text())
    assert manifest["float_layers"] == [] and manifest["precision"] == "int8"
    text = json.loads((run_dir / "export/onnx-int8+w4/text/manifest.json").read_text())
    assert text["precision"] == "w4" and "float_layers" not in text
    report = (run_dir / "report.md").read_text()
    assert "INT8 sensitivity" not in report  # no ranking measured
    # evaluated through onnxruntime beside its simulation (each tower's, in PyTorch), and
    # held to it (export.max_weight_only_drop / max_int8_drop)
    done = json.loads((run_dir / "export" / "done.json").read_text())["summary"]
    mixed = done["artifacts"]["onnx-int8+w4"]
    assert mixed["precision"] == "int8+w4" and mixed["quantization"] == "ptq"
    assert abs(mean_top1(mixed["eval"]) - mean_top1(mixed["simulation"])) <= 0.01
    assert "| simulation (image int8, text w4) | torch, weight-only weights |" in report
