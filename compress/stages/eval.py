"""The eval stage: zero-shot classification and retrieval of the final model (and its teacher)."""

from __future__ import annotations

from pathlib import Path

from compress.evaluate import Encoder
from compress.io import write_json
from compress.models import CLIP, load_model
from compress.pipeline import Context, Stage
from compress.recipe import Recipe
from compress.stages.layout import final_model, has_model, own_model, task_csv
from compress.stages.report import pct


def check(recipe: Recipe) -> None:
    """The CSV tasks the recipe names exist (scenes splits are written by the data stage)."""
    cfg = recipe.eval
    for key in ("zeroshot", "retrieval"):
        for i, task in enumerate(getattr(cfg, key)):
            if task.endswith(".csv") and not Path(task).is_file():
                raise recipe.error(f"eval.{key}[{i}]", f"no such file: {task}")


def evaluate_model(ctx: Context, model: CLIP | Encoder) -> dict:
    """The recipe's zero-shot and retrieval metrics of one model."""
    from compress.evaluate import evaluate_csvs

    cfg = ctx.recipe.eval
    return evaluate_csvs(
        model,
        {task: task_csv(ctx, task) for task in cfg.zeroshot},
        {task: task_csv(ctx, task) for task in cfg.retrieval},
        templates=cfg.templates,
        label_key=cfg.label_key,
        batch_size=cfg.batch_size,
        skip_bad=ctx.recipe.data.skip_bad,
    )


def run(ctx: Context, out: Path) -> dict:
    results = evaluate_model(ctx, load_model(final_model(ctx))[0])
    if ctx.recipe.distill is not None:  # what the student kept of its teacher
        results["teacher"] = evaluate_model(ctx, load_model(own_model(ctx))[0])
    write_json(out / "metrics.json", results)
    return results


def report(ev: dict) -> list[str]:
    teacher = ev.get("teacher", {}).get("zeroshot", {})
    lines = []
    if ev["zeroshot"]:
        extra = " teacher top-1 | kept |" if teacher else ""
        lines += [
            "## Zero-shot classification",
            "",
            "| task | classes | images | top-1 | top-5 |" + extra,
            "|---|---:|---:|---:|---:|" + ("---:|---:|" if teacher else ""),
        ]
        for task, r in ev["zeroshot"].items():
            row = (
                f"| {task} | {r['classes']} | {r['images']} | {pct(r['top1'])} | {pct(r['top5'])} |"
            )
            if task in teacher:
                t1 = teacher[task]["top1"]
                row += f" {pct(t1)} | {pct(r['top1'] / t1) if t1 else '-'} |"
            lines.append(row)
    if ev["retrieval"]:
        lines += [
            *([""] if lines else []),
            "## Retrieval",
            "",
            "| split | pairs | direction | R@1 | R@5 | R@10 |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for task, r in ev["retrieval"].items():
            for key, label in (("image_to_text", "image→text"), ("text_to_image", "text→image")):
                lines.append(
                    f"| {task} | {r['pairs']} | {label} | {pct(r[key + '_r1'])} | {pct(r[key + '_r5'])} | {pct(r[key + '_r10'])} |"
                )
    return lines


STAGE = Stage(
    "eval",
    ("data", "pretrain", "teacher", "distill", "eval"),
    run,
    lambda r: r.eval is not None and has_model(r),
    "zero-shot classification and retrieval",
    check=check,
    report=report,
)
