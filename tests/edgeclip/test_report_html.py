"""report.html: the Pareto front and plot, a page that is self-contained, and that a real browser
shows the embedded plot; `edgeclip report` writes it for a real run folder, with the final
model's INT8 sensitivity where the run measured it."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from compress.io import sha256_file, write_json
from compress.models import ModelRecord, load_model, reparameterize, save_model
from compress.quant.config import QuantConfig
from compress.quant.sensitivity import plan_float_layers, quantizable_layers
from edgeclip.cli import main
from edgeclip.pipeline import Context, run_pipeline
from edgeclip.recipe import load_recipe
from edgeclip.report_html import render_html
from edgeclip.run_folder import final_model
from edgeclip.run_models import PLAN_FILE, plan_key, save_sensitivity
from edgeclip.stages import STAGES
from edgeclip.stages.report import write_report
from export.profile.pareto import pareto_front, plot_pareto
from tests.helpers import write_tiny_recipe

PNG = b"\x89PNG\r\n\x1a\n"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
POINTS = [
    {"name": "onnx-fp32", "latency_ms": 4.1, "top1": 0.712},
    {"name": "executorch-fp32", "latency_ms": 5.3, "top1": 0.712},
    {"name": "onnx-int8", "latency_ms": 1.2, "top1": 0.695},
    {"name": "executorch-int8", "latency_ms": 0.35, "top1": 0.688},
    {"name": "coreml-fp16", "latency_ms": 9.0, "top1": 0.714},
]
MARKDOWN = """\
# edgeclip run `tiny`

## Profile

| artifact | latency p50 | top-1 |
|---|---:|---:|
| `onnx-int8` | 1.20 ms | 69.5% |
| `onnx-fp32` | 4.10 ms | 71.2% |

![accuracy vs latency](profile/pareto.png)

Raw numbers: [profile/host.json](profile/host.json).
"""


def _names(points: list[dict]) -> list[str]:
    return [p["name"] for p in points]


def test_pareto_front_drops_dominated_points_and_keeps_ties():
    points = [
        {"name": "a", "latency_ms": 1.0, "top1": 0.5},
        {"name": "a-twin", "latency_ms": 1.0, "top1": 0.5},  # equal: neither dominates
        {"name": "b", "latency_ms": 2.0, "top1": 0.7},
        {"name": "as-slow-worse", "latency_ms": 2.0, "top1": 0.6},  # b: as fast, more accurate
        {"name": "slower-as-good", "latency_ms": 3.0, "top1": 0.7},  # b: faster, as accurate
        {"name": "fastest", "latency_ms": 0.5, "top1": 0.2},
        {"name": "best", "latency_ms": 4.0, "top1": 0.9},
    ]
    assert _names(pareto_front(points)) == ["fastest", "a", "a-twin", "b", "best"]
    assert _names(pareto_front(POINTS)) == [
        "executorch-int8",
        "onnx-int8",
        "onnx-fp32",
        "coreml-fp16",
    ]
    assert pareto_front([]) == []


def test_plot_pareto_writes_a_png_and_refuses_no_points(tmp_path):
    plot_pareto(POINTS, tmp_path / "pareto.png", title="image tower, host")
    assert (tmp_path / "pareto.png").read_bytes().startswith(PNG)
    assert [p.name for p in tmp_path.iterdir()] == ["pareto.png"]  # no temp file left behind
    with pytest.raises(ValueError, match="no points"):
        plot_pareto([], tmp_path / "empty.png")


def test_page_is_self_contained(tmp_path):
    plot_pareto(POINTS, tmp_path / "profile" / "pareto.png")
    page = render_html(
        MARKDOWN + "\n![gone](profile/gone.png) ![remote](https://example.com/x.png)\n",
        tmp_path,
        "edgeclip run tiny",
    )
    assert page.startswith("<!DOCTYPE html>") and "<title>edgeclip run tiny</title>" in page
    for external in ('src="http', 'href="http', "<link", "<script", "@import", "url("):
        assert external not in page
    assert page.count('src="data:image/png;base64,iVBORw0KGgo') == 1  # the plot, embedded
    assert 'alt="accuracy vs latency"' in page
    assert "image missing: profile/gone.png" in page  # a note, not a crash
    assert "image not embedded (not a local file): https://example.com/x.png" in page
    assert '<th style="text-align:right">latency p50</th>' in page
    assert '<a href="profile/host.json">' in page  # links stay relative to the run folder


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _coloured_pixels(browser: str, page, shot) -> int:
    """Pixels of a headless-browser screenshot of ``page`` that are strongly coloured: on the
    report only the plots are (the page itself is grey and black)."""
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,1600",
            f"--user-data-dir={shot.parent / 'browser-profile'}",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    hsv = np.asarray(Image.open(shot).convert("HSV"))
    return int(((hsv[..., 1] > 128) & (hsv[..., 2] > 64)).sum())


def test_browser_shows_the_embedded_plot(tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)})")
    plot = tmp_path / "profile" / "pareto.png"
    plot_pareto(POINTS, plot)
    page = tmp_path / "report.html"
    page.write_text(render_html(MARKDOWN, tmp_path, "edgeclip run tiny"))
    with_plot = _coloured_pixels(browser, page, tmp_path / "with_plot.png")
    plot.unlink()  # the control: the same page, its image gone
    page.write_text(render_html(MARKDOWN, tmp_path, "edgeclip run tiny"))
    without_plot = _coloured_pixels(browser, page, tmp_path / "without_plot.png")
    assert with_plot > 300, with_plot  # the markers (~585 pixels at this size)
    assert without_plot < 30, without_plot  # none: the page alone is grey and black


def test_report_command_writes_html_for_a_run(tmp_path, capsys):
    """A tiny run without its (slow) export stage: the report embeds the eval stage's plot."""
    recipe = load_recipe(write_tiny_recipe(tmp_path, steps=2))
    run_dir = run_pipeline(recipe, [s for s in STAGES if s.name != "export"]).run_dir
    assert (run_dir / "report.html").exists()  # the report stage writes it too
    (run_dir / "report.html").unlink()
    capsys.readouterr()  # the run's own log
    assert main(["report", str(run_dir)]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(run_dir / "report.md"), str(run_dir / "report.html")]
    page = (run_dir / "report.html").read_text()
    assert "<h2>Activation outliers</h2>" in page and "image missing" not in page
    assert page.count('<img src="data:image/png;base64,') == 1
    assert 'alt="activation outliers per layer"' in page


def _model_only_run(tmp_path, quant: str, seed: int = 0) -> Context:
    """A run folder of the tiny recipe with ``quant`` whose only output is its final model
    (random init): what a saved sensitivity measurement is checked against."""
    recipe = write_tiny_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("export:\n", f"quant: {quant}\nexport:\n"))
    ctx = Context(load_recipe(recipe), tmp_path / "runs" / "tiny", STAGES)
    torch.manual_seed(seed)
    record = ModelRecord.named("tiny")
    save_model(record.build(), record, final_model(ctx))
    shutil.copy(recipe, ctx.run_dir / "recipe.yaml")  # a run folder for `edgeclip report`
    return ctx


def _ranking(ctx: Context) -> list[dict]:
    """The final model's layers as a sensitivity ranking, costs falling tenfold every four ranks
    (measuring them takes a minute; the report draws whatever was measured)."""
    layers = quantizable_layers(reparameterize(load_model(final_model(ctx))[0]), QuantConfig())
    return [
        {
            "layer": name,
            "tower": name.split(".")[0],
            "params": 100 * (i + 1),
            "cosine_drop": 10 ** (-2 - i / 4),
            "cosine_drop_max": 2 * 10 ** (-2 - i / 4),
        }
        for i, name in enumerate(layers)
    ]


def _runs_in(report: str) -> dict[str, str]:
    """The sensitivity table of report.md: each layer's last column (float or int8)."""
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| `")]
    return {cells[0].strip("|` "): cells[-1].strip("| ") for cells in rows if len(cells) == 6}


def test_the_report_shows_a_current_quant_plans_sensitivity(tmp_path):
    ctx = _model_only_run(tmp_path, "{max_drop: 0.005}")
    run_dir = ctx.run_dir
    write_report(ctx)
    assert "INT8 sensitivity" not in (run_dir / "report.md").read_text()  # nothing measured
    assert not (run_dir / "quant_sensitivity.png").exists()
    rows = _ranking(ctx)
    plan = plan_float_layers(lambda: rows, lambda floats: 0.02 - 0.008 * len(floats), 0.005)
    assert plan["float_layers"] == [rows[0]["layer"], rows[1]["layer"]]  # 0.4 pt fits 0.5
    write_json(run_dir / PLAN_FILE, {"key": plan_key(ctx, sha256_file(final_model(ctx))), **plan})
    write_report(ctx)
    report = (run_dir / "report.md").read_text()
    assert "## INT8 sensitivity" in report and f"[{PLAN_FILE}]({PLAN_FILE})" in report
    floats = set(plan["float_layers"])
    assert _runs_in(report) == {
        r["layer"]: "float" if r["layer"] in floats else "int8" for r in rows
    }  # every layer (tiny has 20), the plan's in float
    assert f"| + `{rows[1]['layer']}` | 0.40 pt |" in report  # the plan's last step
    assert (run_dir / "quant_sensitivity.png").read_bytes().startswith(PNG)
    page = (run_dir / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 1 and "image missing" not in page
    assert 'alt="INT8 sensitivity per layer"' in page
    saved = json.loads((run_dir / "report.json").read_text())["int8_sensitivity"]
    assert saved["layers"] == rows and saved["plan"]["steps"] == plan["steps"]
    _model_only_run(tmp_path, "{max_drop: 0.005}", seed=1)  # a new final model: the plan is stale
    write_report(ctx)
    assert "INT8 sensitivity" not in (run_dir / "report.md").read_text()


def test_the_report_shows_what_eval_sensitivity_kept_in_the_run(tmp_path, capsys):
    """`edgeclip eval RUN --sensitivity` without a budget keeps its ranking in the run; the
    report marks the layers the recipe lists in float."""
    ctx = _model_only_run(tmp_path, "{float_layers: [image.blocks.1.mlp.fc]}")
    rows = _ranking(ctx)
    save_sensitivity(ctx, rows, 32)
    assert main(["report", str(ctx.run_dir)]) == 0
    report = (ctx.run_dir / "report.md").read_text()
    assert "on 32 held-out samples" in report and "[quant_sensitivity.json]" in report
    runs_in = _runs_in(report)
    assert (
        set(runs_in) == {r["layer"] for r in rows}
        and runs_in.pop("image.blocks.1.mlp.fc") == "float"
    )
    assert set(runs_in.values()) == {"int8"} and "The plan" not in report
    assert (ctx.run_dir / "quant_sensitivity.png").read_bytes().startswith(PNG)
