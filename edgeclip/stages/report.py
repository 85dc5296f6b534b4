"""The report stage: report.json for tools, report.md and report.html for people.

The report shows the run's stages, the final model (and the teacher it was distilled from), then
each finished stage's own section (``Stage.report``), in pipeline order, and the final model's
INT8 sensitivity where the run measured it (its quant plan's, or ``edgeclip eval RUN
--sensitivity``'s). report.html is the same markdown as one self-contained page, its plots
embedded (:mod:`edgeclip.report_html`).
"""

from __future__ import annotations

from pathlib import Path

from compress.io import write_json, write_text
from compress.models import read_record, tower_params
from compress.quant.sensitivity import plot_sensitivity, sensitivity_table
from edgeclip.figures import mb
from edgeclip.pipeline import Context, Stage
from edgeclip.report_html import write_html
from edgeclip.run_folder import final_model, own_model
from edgeclip.run_models import measured_sensitivity

SENSITIVITY_PLOT = "quant_sensitivity.png"  # in the run folder, beside the plan it is drawn from
SENSITIVITY_ROWS = 20  # the report's table: the most sensitive layers (and any kept in float)


def collect(ctx: Context) -> dict:
    """Everything the report shows, read from the stages' done markers and model records."""
    recipe = ctx.recipe
    stages = {}
    for stage in ctx.stages:  # in pipeline order
        done = ctx.done(stage.name)
        if done is not None:
            stages[stage.name] = {k: done.get(k) for k in ("finished", "seconds", "summary")}
    out = {
        "name": recipe.name,
        "recipe_hash": recipe.hash,
        "recipe": recipe.to_dict(),
        "stages": stages,
    }
    final, own = final_model(ctx), own_model(ctx)
    if final.exists():
        out["model"] = _describe(final)
        if final != own and own.exists():
            out["teacher"] = _describe(own)
    sensitivity = measured_sensitivity(ctx)
    if sensitivity is not None:
        out["int8_sensitivity"] = {**sensitivity, "plot": SENSITIVITY_PLOT}
    return out


def _describe(path: Path) -> dict:
    """Architecture, attention, precision, provenance and parameter counts of a saved model."""
    record = read_record(path)
    counts = tower_params(record.config)
    return {
        "name": record.name,
        "architecture": record.config,
        "attention": record.attention,
        "precision": record.precision,
        "provenance": record.provenance,
        "parameters": {k: counts[k] for k in ("image", "text", "total")},
        "fp32_bytes": 4 * counts["total"],
    }


def _model_lines(info: dict) -> list[str]:
    m = info["model"]
    p = m["parameters"]
    attn = ", ".join(
        f"{tower}: {(spec or {'kind': 'softmax'})['kind']}"
        for tower, spec in m["attention"].items()
    )
    lines = [
        "## Model",
        "",
        f"`{m['name']}` — {p['total'] / 1e6:.2f} M parameters "
        f"(image {p['image'] / 1e6:.2f} M, text {p['text'] / 1e6:.2f} M), {mb(m['fp32_bytes'])} in fp32; attention {attn}.",
    ]
    if "teacher" in info:
        t = info["teacher"]["parameters"]["total"]
        lines.append(
            f"Distilled from `{info['teacher']['name']}` ({t / 1e6:.2f} M parameters): "
            f"{t / p['total']:.1f}× fewer parameters."
        )
    return lines


def _sensitivity_lines(sens: dict) -> list[str]:
    """The final model's INT8 sensitivity: the ranking, what the plan made of it, the plot."""
    rows, floats, source = sens["layers"], sens["float_layers"], sens["source"]
    listed = (
        f"the {SENSITIVITY_ROWS} most sensitive and any kept in float; every layer in "
        if len(rows) > SENSITIVITY_ROWS
        else "also in "
    )
    lines = [
        "## INT8 sensitivity",
        "",
        f"Each of the {len(rows)} layers the W8A8 scheme quantizes, quantized alone (every other "
        "op in float): the mean and worst 1 − cosine between its tower's embeddings and the float "
        f"model's on {sens['samples']} held-out samples, most sensitive first ({listed}"
        f"[{source}]({source})).",
        "",
        *sensitivity_table(rows, floats, limit=SENSITIVITY_ROWS),
    ]
    plan = sens.get("plan")
    if plan is not None:
        verdict = "within" if plan["within_budget"] else "still over"
        lines += [
            "",
            f"The plan (`quant.max_drop`: {100 * plan['max_drop']:g} pt): the INT8 simulation "
            "(post-training quantization) evaluated on the zero-shot tasks, the most sensitive "
            "layers sent to float one at a time until its mean top-1 drop fits. It keeps "
            f"{len(floats)} layer{'s' if len(floats) != 1 else ''} in float, "
            f"{100 * plan['drop']:.2f} pt below the float model: {verdict} the budget.",
            "",
            "| layers in float | mean top-1 drop |",
            "|---|---:|",
        ]
        for i, step in enumerate(plan["steps"]):  # each step adds one layer to the last's
            first = ", ".join(f"`{layer}`" for layer in step["float_layers"]) or "none"
            kept = f"+ `{step['float_layers'][-1]}`" if i else first
            lines.append(f"| {kept} | {100 * step['drop']:.2f} pt |")
    return [*lines, "", f"![INT8 sensitivity per layer]({sens['plot']})"]


def render_markdown(info: dict, stages: list[Stage]) -> str:
    lines = [
        f"# edgeclip run `{info['name']}`",
        "",
        f"Recipe hash `{info['recipe_hash']}` · resolved recipe in `recipe.yaml`.",
        "",
        "## Stages",
        "",
        "| stage | finished | seconds |",
        "|---|---|---:|",
    ]
    done = info["stages"]
    lines += [f"| {name} | {s['finished']} | {s['seconds'] or ''} |" for name, s in done.items()]
    if "model" in info:
        lines += ["", *_model_lines(info)]
    for stage in stages:
        if stage.report is not None and stage.name in done:
            section = stage.report(done[stage.name]["summary"])
            if section:
                lines += ["", *section]
    if "int8_sensitivity" in info:
        lines += ["", *_sensitivity_lines(info["int8_sensitivity"])]
    return "\n".join(lines) + "\n"


def write_report(ctx: Context) -> dict:
    info = collect(ctx)
    sens = info.get("int8_sensitivity")
    if sens is not None:
        plot_sensitivity(
            sens["layers"], ctx.run_dir / sens["plot"], sens["float_layers"], sens.get("plan")
        )
    write_json(ctx.run_dir / "report.json", info)
    write_text(ctx.run_dir / "report.md", render_markdown(info, ctx.stages))
    html = write_html(ctx.run_dir, title=f"edgeclip run {info['name']}")
    return {"report": str(ctx.run_dir / "report.md"), "html": str(html)}


STAGE = Stage(
    "report",
    (),
    lambda ctx, out: write_report(ctx),
    lambda r: True,
    "write report.md, report.html and report.json",
)
