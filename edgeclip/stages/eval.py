"""The eval stage: zero-shot classification and retrieval of the final model (and its teacher),
and their activation outlier statistics (Bondarenko et al. 2023)."""

from __future__ import annotations

from pathlib import Path

from compress.io import write_json
from compress.models import CLIP, ModelRecord, load_model
from compress.quant.outliers import measure_outliers, plot_outliers, sample_batches, summary_table
from edgeclip.figures import mean_top1, pct, recall_pct, top1_pct
from edgeclip.pipeline import Context, Stage
from edgeclip.recipe import Recipe
from edgeclip.run_folder import final_model, has_model, own_model
from edgeclip.run_models import evaluate_model, parity_samples, ptq_model, qat_model


def check(recipe: Recipe) -> None:
    """The CSV tasks the recipe names exist (scenes splits are written by the data stage)."""
    cfg = recipe.eval
    for key in ("zeroshot", "retrieval"):
        for i, task in enumerate(getattr(cfg, key)):
            if task.endswith(".csv") and not Path(task).is_file():
                raise recipe.error(f"eval.{key}[{i}]", f"no such file: {task}")


def measure_models(ctx: Context, out: Path, models: dict[str, tuple[CLIP, ModelRecord]]) -> dict:
    """Activation outliers of each model (label → model, record) on the run's held-out samples:
    ``outliers.json`` and ``outliers.png`` in ``out``; returns the summaries for the report."""
    cfg = ctx.recipe.eval
    results, samples = {}, {}
    for label, (model, record) in models.items():
        # models that preprocess alike (the demo's student and teacher) share their samples
        key = (record.image_size, str(record.normalization), record.context_length)
        if key not in samples:
            samples[key] = parity_samples(ctx, record, cfg.outlier_samples)
        batches = sample_batches(*samples[key], cfg.batch_size)
        results[label] = {"name": record.name, **measure_outliers(model, batches)}
    write_json(out / "outliers.json", results)
    plot_outliers(results, out / "outliers.png")
    return {
        "plot": f"{out.name}/outliers.png",  # relative to the run folder, where report.md is
        "samples": next(iter(results.values()))["samples"],
        "models": {label: {"name": r["name"], **r["summary"]} for label, r in results.items()},
    }


def int8_metrics(ctx: Context, model: CLIP, record: ModelRecord) -> dict:
    """The INT8 simulation's metrics: of post-training quantization, and of the QAT model."""
    metrics = {"ptq": evaluate_model(ctx, ptq_model(ctx, model, record))}
    if ctx.recipe.qat is not None:
        metrics["qat"] = evaluate_model(ctx, qat_model(ctx))
    return metrics


def run(ctx: Context, out: Path) -> dict:
    models = {"model": load_model(final_model(ctx))}
    if ctx.recipe.distill is not None:  # what the student kept of its teacher
        models["teacher"] = load_model(own_model(ctx))
    results = evaluate_model(ctx, models["model"][0])
    if "teacher" in models:
        results["teacher"] = evaluate_model(ctx, models["teacher"][0])
    if ctx.recipe.quant is not None or ctx.recipe.qat is not None:
        results["int8"] = int8_metrics(ctx, *models["model"])
    write_json(out / "metrics.json", results)
    if ctx.recipe.eval.outliers:
        results["outliers"] = measure_models(ctx, out, models)
    return results


def _outlier_lines(summary: dict) -> list[str]:
    models = summary["models"]
    per_layer = Path(summary["plot"]).with_suffix(".json")
    rows = summary_table(
        {
            f"`{m['name']}` ({label})": {t: m[t] for t in ("image", "text")}
            for label, m in models.items()
        }
    )
    return [
        "## Activation outliers",
        "",
        f"Block and FFN outputs on {summary['samples']} held-out samples: the largest per-layer "
        "∞-norm (max |x|, averaged over samples) and the kurtosis over the hidden dimension, "
        "averaged and maxed over layers. Large values are what per-tensor int8 activations "
        "cannot represent; clipped softmax and gated attention keep them down "
        f"(Bondarenko et al. 2023). Per layer: [{per_layer}]({per_layer}) and the plot below.",
        "",
        *rows,
        "",
        f"![activation outliers per layer]({summary['plot']})",
    ]


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
    if "int8" in ev:
        lines += [*([""] if lines else []), *_int8_lines(ev)]
    if "outliers" in ev:
        lines += [*([""] if lines else []), *_outlier_lines(ev["outliers"])]
    return lines


INT8_LABELS = {
    "ptq": "INT8 simulation, post-training quantization",
    "qat": "INT8 simulation, quantization-aware training",
}


def _int8_lines(ev: dict) -> list[str]:
    fp = mean_top1(ev)
    lines = [
        "## INT8 (W8A8) in PyTorch",
        "",
        "The quantized model run in PyTorch with quantize/dequantize ops: what the int8 "
        "artifacts compute (their own accuracy is under Exports).",
        "",
        "| model | zero-shot top-1 (mean) | change | retrieval R@1 |",
        "|---|---:|---:|---:|",
        f"| float (fp32) | {top1_pct(ev)} | | {recall_pct(ev)} |",
    ]
    for method, results in ev["int8"].items():
        top1 = mean_top1(results)
        change = f"{100 * (top1 - fp):+.1f} pt" if top1 is not None and fp is not None else "-"
        lines.append(
            f"| {INT8_LABELS[method]} | {top1_pct(results)} | {change} | {recall_pct(results)} |"
        )
    return lines


STAGE = Stage(
    "eval",
    ("data", "pretrain", "teacher", "distill", "quant", "qat", "eval"),
    run,
    lambda r: r.eval is not None and has_model(r),
    "zero-shot classification and retrieval, activation outliers",
    check=check,
    report=report,
)
