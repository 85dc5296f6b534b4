"""The report stage: report.json for tools, report.md and report.html for people.

The report shows the run's stages, the final model (and the teacher it was distilled from), then
each finished stage's own section (``Stage.report``), in pipeline order. report.html is the same
markdown as one self-contained page, its plots embedded (:mod:`edgeclip.report_html`).
"""

from __future__ import annotations

from pathlib import Path

from compress.io import write_json, write_text
from compress.models import read_record, tower_params
from edgeclip.figures import mb
from edgeclip.pipeline import Context, Stage
from edgeclip.report_html import write_html
from edgeclip.run_folder import final_model, own_model


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
    return "\n".join(lines) + "\n"


def write_report(ctx: Context) -> dict:
    info = collect(ctx)
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
