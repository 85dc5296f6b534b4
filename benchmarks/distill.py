"""Distillation benchmark: does weight inheritance make the demo student learn faster?

Trains the demo student (recipes/demo.yaml's distill section) from the demo run's teacher three
times at the same step budget: from a random initialisation, with TinyCLIP's leading-slice
inheritance, and with importance inheritance. Evaluates zero-shot colour+shape top-1 every
``--eval-every`` steps and prints JSON: the curves, the steps each inherited run needed to reach
the random-init run's final accuracy (and the speed-up), and the fraction of the teacher's
top-1 each final student keeps.

Needs a finished demo run (its teacher and scenes): ``edgeclip run recipes/demo.yaml`` first.

Run: python benchmarks/distill.py [--run runs/demo] [--steps 600] [--eval-every 50] [key=value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from compress.data.batches import batch_stream
from compress.distill.inherit import inherit
from compress.distill.losses import losses
from compress.distill.student import (
    DistillObjective,
    Extras,
    build_student,
    freeze,
    loss_options,
)
from compress.evaluate import evaluate_csvs
from compress.models import ModelRecord, count_params, load_model
from compress.train import Interrupted, train
from edgeclip.inputs import train_dataset
from edgeclip.pipeline import Context
from edgeclip.recipe import DistillStep, InheritConfig, load_recipe
from edgeclip.run_folder import own_model, task_csv

TASK = "zs_colour_shape"


def zero_shot(ctx: Context, model) -> float:
    cfg = ctx.recipe.eval
    result = evaluate_csvs(
        model, {TASK: task_csv(ctx, TASK)}, {}, templates=cfg.templates, batch_size=cfg.batch_size
    )
    return result["zeroshot"][TASK]["top1"]


def run(
    ctx: Context, teacher, parent: ModelRecord, method: str, steps: int, every: int, work: Path
) -> list[dict]:
    """One distillation of ``steps`` steps, evaluated every ``every`` steps (and at step 0)."""
    # a checkpoint at every segment's end: each train() call resumes where the last one stopped
    cfg = replace(ctx.recipe.distill, steps=steps, checkpoint_every=every)
    step = DistillStep(cfg.model, InheritConfig(method=method), steps)
    torch.manual_seed(0)
    student, record = build_student(step, cfg, parent)
    if method != "none":
        calibration = None
        if method == "importance":
            calibration = next(iter(batches(ctx, record, 0, step.inherit.calibration)))
        inherit(teacher, student, method=method, calibration=calibration)
    loss = losses.get(cfg.loss.kind)(**loss_options(cfg))
    step_loss = DistillObjective(loss, [teacher], student)
    curve = [{"step": 0, "top1": zero_shot(ctx, student.eval())}]
    out = work / method
    start = time.perf_counter()
    for done in range(every, steps + 1, every):
        with contextlib.suppress(Interrupted):  # the end of a segment, not of training
            train(
                student,
                lambda s: batches(ctx, record, s, cfg.batch_size),
                cfg,
                out,
                objective=step_loss,
                extra=Extras(loss, None),
                desc=method,
                stop_after=every,
            )
        curve.append({"step": done, "top1": zero_shot(ctx, student.eval())})
        print(f"{method}: step {done} top-1 {curve[-1]['top1']:.3f}", file=sys.stderr)
    curve[-1]["seconds"] = time.perf_counter() - start
    return curve


def batches(ctx: Context, record: ModelRecord, start: int, size: int):
    dataset = train_dataset(ctx, record)
    return batch_stream(dataset, size, ctx.recipe.seed, 0, 1, start)


def steps_to_reach(curve: list[dict], target: float) -> int | None:
    return next((point["step"] for point in curve if point["top1"] >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="a finished demo run folder")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--methods", default="none,leading,importance")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. distill.lr=2e-3")
    args = parser.parse_args()
    run_dir = Path(args.run)
    recipe = load_recipe(run_dir / "recipe.yaml", args.overrides)
    # the CSV copy of the scenes: resuming a segment jumps straight to its step
    recipe = replace(recipe, data=replace(recipe.data, format="csv"))
    if recipe.distill is None or recipe.eval is None:
        sys.exit(f"{run_dir}/recipe.yaml: needs distill and eval sections")
    ctx = Context(recipe, run_dir)
    teacher, parent = load_model(own_model(ctx))
    freeze(teacher)
    teacher_top1 = zero_shot(ctx, teacher)
    curves = {}
    with tempfile.TemporaryDirectory() as work:
        for method in args.methods.split(","):
            curves[method] = run(
                ctx, teacher, parent, method, args.steps, args.eval_every, Path(work)
            )
    baseline = curves.get("none", [{}])[-1].get("top1")
    result = {
        "task": TASK,
        "steps": args.steps,
        "batch_size": recipe.distill.batch_size,
        "teacher": {
            "model": recipe.pretrain.model,
            "params": count_params(teacher),
            "top1": teacher_top1,
        },
        "student": {"model": recipe.distill.model},
        "random_init_final_top1": baseline,
        "runs": {},
    }
    for method, curve in curves.items():
        reach = steps_to_reach(curve, baseline) if baseline is not None else None
        result["runs"][method] = {
            "curve": curve,
            "final_top1": curve[-1]["top1"],
            "kept_of_teacher": curve[-1]["top1"] / teacher_top1,
            "steps_to_random_init_final": reach,
            "speedup_vs_random_init": args.steps / reach if reach else None,
            "train_seconds": curve[-1].get("seconds"),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
