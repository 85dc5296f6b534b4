"""The export stage: the final model's towers exported to each listed target and precision,
checked against PyTorch on held-out samples, then evaluated through the artifact's own runtime."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from compress.models import load_model
from edgeclip.figures import mb, mean_top1, pct, recall_pct, top1_pct
from edgeclip.pipeline import Context, Stage
from edgeclip.recipe import Recipe
from edgeclip.run_folder import evaluation, export_dir, exported_model, final_model, has_model
from edgeclip.run_models import evaluate_model, int8_model, parity_samples


def run(ctx: Context, out: Path) -> dict:
    cfg = ctx.recipe.export
    listed = [f"{target}-{precision}" for target, precision in cfg.artifacts()]
    # The int8 artifacts share one converted INT8 model; the float ones need only the model.
    # Exporting is mostly single-threaded Python (graph capture, lowering passes), so the two
    # groups run side by side where there are two cores: about 40% off the stage.
    groups = [[a for a in cfg.artifacts() if (a[1] == "int8") == int8] for int8 in (False, True)]
    exported, simulated = {}, None
    for artifacts, int8_simulation in _in_workers(ctx, [g for g in groups if g]):
        exported.update(artifacts)
        simulated = simulated or int8_simulation
    for folder in out.iterdir():  # artifacts the recipe no longer lists
        if folder.is_dir() and not folder.name.startswith(".") and folder.name not in exported:
            shutil.rmtree(folder)
    pytorch = None
    if ctx.recipe.eval is not None and ctx.recipe.eval.tasks():
        evaluated = evaluation(ctx)  # the eval stage measured this model on these tasks before
        pytorch = (
            evaluated.model if evaluated else evaluate_model(ctx, load_model(final_model(ctx))[0])
        )
    artifacts = {name: exported[name] for name in listed}
    return {"artifacts": artifacts, "pytorch": pytorch, "int8_simulation": simulated}


def _in_workers(
    ctx: Context, groups: list[list[tuple[str, str]]]
) -> list[tuple[dict, dict | None]]:
    """:func:`_export` of each group of artifacts: in this process on one core, else in one
    process per group (spawned: a forked torch can hang), sharing this process's threads."""
    workers = min(len(groups), len(os.sched_getaffinity(0)))
    if workers < 2:
        return [_export(ctx, group) for group in groups]
    threads = max(1, torch.get_num_threads() // workers)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        runs = [
            pool.submit(_export_in_worker, ctx.recipe, ctx.run_dir, group, threads)
            for group in groups
        ]
        return [run.result() for run in runs]


def _export_in_worker(
    recipe: Recipe, run_dir: Path, group: list[tuple[str, str]], threads: int
) -> tuple[dict, dict | None]:
    from edgeclip.stages import STAGES

    torch.set_num_threads(threads)
    return _export(Context(recipe, run_dir, STAGES), group)


def _export(ctx: Context, group: list[tuple[str, str]]) -> tuple[dict, dict | None]:
    """Export, check and evaluate one group of ``(target, precision)`` artifacts; their
    summaries by name, and the INT8 simulation's accuracy where the group has int8 ones."""
    from export.artifact import ArtifactModel
    from export.driver import export_model
    from export.targets import exporters

    cfg = ctx.recipe.export
    model, record = load_model(final_model(ctx))
    images, tokens = parity_samples(ctx, record, cfg.samples)
    evaluate = ctx.recipe.eval is not None and bool(ctx.recipe.eval.tasks())
    quantized = method = simulated = None
    if any(precision == "int8" for _, precision in group):
        quantized, method = int8_model(ctx, model, record)
        if evaluate:  # the simulation the eval stage measured, or measured here
            evaluated = evaluation(ctx)
            earlier = evaluated.int8.get(method) if evaluated else None
            simulated = earlier or evaluate_model(ctx, quantized)
    artifacts = {}
    for target, precision in group:
        folder = export_dir(ctx, target, precision)
        summary = export_model(
            model,
            record,
            folder,
            target=target,
            precision=precision,
            sample_images=images,
            sample_tokens=tokens,
            batch_size=cfg.batch_size,
            recipe_hash=ctx.recipe.hash,
            thresholds=cfg.thresholds(precision),
            quantized=quantized if precision == "int8" else None,
            source=exported_model(ctx, precision),
        )
        if evaluate:  # the accuracy an app will see: through the artifact's own runtime
            unrunnable = exporters.get(target)().runs_here()
            summary["eval"] = unrunnable or evaluate_model(ctx, ArtifactModel(summary["dir"]))
            if precision == "int8" and not unrunnable:
                _check_int8_accuracy(summary["eval"], simulated, folder, cfg.max_int8_drop)
        if precision == "int8":
            summary["quantization"] = method
        artifacts[f"{target}-{precision}"] = summary
    return artifacts, simulated


def _check_int8_accuracy(artifact: dict, simulated: dict, folder: Path, max_drop: float) -> None:
    """An int8 artifact keeps its simulation's mean zero-shot top-1 within ``max_drop`` (the
    recipe's ``export.max_int8_drop``, a point by default); one that does not is removed (it
    is not a good artifact) and the stage fails."""
    from export.verify import ParityError

    got, want = mean_top1(artifact), mean_top1(simulated)
    if got is not None and want is not None and not got >= want - max_drop:
        shutil.rmtree(folder, ignore_errors=True)
        raise ParityError(
            f"{folder}: zero-shot top-1 {pct(got)} through the runtime, {pct(want)} in the "
            f"INT8 simulation it came from: more than {100 * max_drop:.1f} points below "
            "(export.max_int8_drop)"
        )


def report(summary: dict) -> list[str]:
    lines = [
        "## Exports (checked against PyTorch on held-out samples)",
        "",
        "| artifact | tower | size | min cosine | max abs diff | zero-shot agreement |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, result in summary["artifacts"].items():
        for tower in ("image", "text"):
            a = result[tower]
            par = a["parity"]
            if par["status"] == "passed":
                measured = (
                    f"{par['cosine_min']:.6f} | {par['max_abs']:.2e} | "
                    f"{pct(par['zero_shot_agreement'])}"
                )
            else:
                measured = f"{par['status']} (spec checks passed) | | "
            lines.append(
                f"| `{name}` | `{tower}/{Path(a['model']).name}` | {mb(a['bytes'])} | {measured} |"
            )
    pytorch = summary.get("pytorch")
    if pytorch is not None:
        lines += [
            "",
            "Accuracy through each artifact's own runtime (mean zero-shot top-1 over the tasks, "
            "image→text R@1 of the first retrieval task), next to the PyTorch model's:",
            "",
            "| model | runtime | zero-shot top-1 | retrieval R@1 |",
            "|---|---|---:|---:|",
            f"| PyTorch (fp32 eager) | torch | {top1_pct(pytorch)} | {recall_pct(pytorch)} |",
        ]
        simulated = summary.get("int8_simulation")
        if simulated is not None:
            method = next(
                r["quantization"] for r in summary["artifacts"].values() if "quantization" in r
            )
            lines.append(
                f"| INT8 simulation ({method}) | torch, quantize/dequantize | "
                f"{top1_pct(simulated)} | {recall_pct(simulated)} |"
            )
        for name, result in summary["artifacts"].items():
            ev, runtime = result["eval"], result["image"]["parity"]["runtime"]
            if isinstance(ev, str):
                lines.append(f"| `{name}` | {runtime} | {ev} | {ev} |")
            else:
                lines.append(f"| `{name}` | {runtime} | {top1_pct(ev)} | {recall_pct(ev)} |")
    return lines


STAGE = Stage(
    "export",
    ("data", "pretrain", "teacher", "distill", "quant", "qat", "eval", "export"),
    run,
    lambda r: r.export is not None and has_model(r),
    "export the towers to each target and precision, check them against PyTorch",
    report=report,
    keeps_outputs=True,
)
