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
    # The artifacts with an int8 tower share one converted INT8 model; the others need only the
    # model. Exporting is mostly single-threaded Python (graph capture, lowering passes), so the
    # two groups run side by side where there are two cores.
    groups = [[a for a in cfg.artifacts() if _has_int8(a[1]) == int8] for int8 in (False, True)]
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


def _has_int8(precision: str) -> bool:
    from export.verify import tower_precisions

    return "int8" in tower_precisions(precision).values()


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
    from export.driver import Simulation, export_model
    from export.targets import exporters
    from export.verify import tower_precisions

    cfg = ctx.recipe.export
    model, record = load_model(final_model(ctx))
    images, tokens = parity_samples(ctx, record, cfg.samples)
    evaluate = ctx.recipe.eval is not None and bool(ctx.recipe.eval.tasks())
    quantized = method = simulated = None
    if any(_has_int8(precision) for _, precision in group):
        quantized, method = int8_model(ctx, model, record)
        if evaluate:  # the simulation the eval stage measured, or measured here
            evaluated = evaluation(ctx)
            earlier = evaluated.int8.get(method) if evaluated else None
            simulated = earlier or evaluate_model(ctx, quantized)
    artifacts, simulations = {}, {}  # weight-only simulations' accuracy, by precision
    for target, precision in group:
        towers = tower_precisions(precision)
        int8, weight_only = "int8" in towers.values(), bool({"w8", "w4"} & {*towers.values()})
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
            quantized=quantized if int8 else None,
            source={tower: exported_model(ctx, p) for tower, p in towers.items()},
        )
        if evaluate:  # the accuracy an app will see: through the artifact's own runtime
            unrunnable = exporters.get(target)().runs_here()
            summary["eval"] = unrunnable or evaluate_model(ctx, ArtifactModel(summary["dir"]))
            if weight_only and not unrunnable:  # its simulation: each tower's, in PyTorch
                if precision not in simulations:
                    simulation = Simulation(model, precision, quantized if int8 else None)
                    simulations[precision] = evaluate_model(ctx, simulation)
                summary["simulation"] = simulations[precision]
            if not unrunnable and (int8 or weight_only):
                fields = {"max_int8_drop": int8, "max_weight_only_drop": weight_only}
                _check_accuracy(
                    summary["eval"],
                    summary["simulation"] if weight_only else simulated,
                    folder,
                    {field: getattr(cfg, field) for field, used in fields.items() if used},
                )
        if int8:
            summary["quantization"] = method
        artifacts[f"{target}-{precision}"] = summary
    return artifacts, simulated


def _check_accuracy(
    artifact: dict, simulated: dict, folder: Path, max_drops: dict[str, float]
) -> None:
    """A quantized artifact keeps the mean zero-shot top-1 of the simulation it was lowered
    from (each tower's in PyTorch) within the recipe's allowance (``export.max_int8_drop`` for
    an int8 tower, ``export.max_weight_only_drop`` for a w8/w4 one, a point each by default;
    the larger where it has both); one that does not is removed (it is not a good artifact)
    and the stage fails."""
    from export.verify import ParityError

    got, want = mean_top1(artifact), mean_top1(simulated)
    max_drop = max(max_drops.values())
    if got is not None and want is not None and not got >= want - max_drop:
        shutil.rmtree(folder, ignore_errors=True)
        raise ParityError(
            f"{folder}: zero-shot top-1 {pct(got)} through the runtime, {pct(want)} in the "
            f"simulation it came from: more than {100 * max_drop:.1f} points below "
            f"(export.{' / export.'.join(max_drops)})"
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
        weight_only = {r["precision"]: r.get("simulation") for r in summary["artifacts"].values()}
        for precision, ev in weight_only.items():
            if ev is not None:
                lines.append(
                    f"| {_simulation_name(precision)} | torch, weight-only weights | "
                    f"{top1_pct(ev)} | {recall_pct(ev)} |"
                )
        for name, result in summary["artifacts"].items():
            ev, runtime = result["eval"], result["image"]["parity"]["runtime"]
            if isinstance(ev, str):
                lines.append(f"| `{name}` | {runtime} | {ev} | {ev} |")
            else:
                lines.append(f"| `{name}` | {runtime} | {top1_pct(ev)} | {recall_pct(ev)} |")
    return lines


def _simulation_name(precision: str) -> str:
    """The simulation of an artifact with a w8/w4 tower, in the report's words."""
    from export.verify import tower_precisions

    towers = tower_precisions(precision)
    if towers["image"] == towers["text"]:
        return f"{precision} weight-only simulation"
    return f"simulation (image {towers['image']}, text {towers['text']})"


STAGE = Stage(
    "export",
    ("data", "pretrain", "teacher", "distill", "quant", "qat", "eval", "export"),
    run,
    lambda r: r.export is not None and has_model(r),
    "export the towers to each target and precision, check them against PyTorch",
    report=report,
    keeps_outputs=True,
)
