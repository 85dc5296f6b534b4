"""The demo teacher's zero-shot accuracy during pretraining: when it learns colours, shapes and
retrieval, and at what cost, for the demo recipe with any overrides.

Trains the recipe's pretrain model exactly as the pretrain stage does (its
:func:`edgeclip.stages.pretrain.pretraining`: same model, data, order, seed and loss; same schedule
and precision choice) and, every ``--every`` steps and at the end, evaluates it on the
scenes' colour+shape and shape zero-shot tasks and text→image retrieval. Prints one JSON line
per evaluation and a last one with the machine. Evaluation time is not counted in ``seconds``.

Run: python benchmarks/teacher_curve.py runs/curve --every 250 [key.path=value ...]
e.g. pretrain.steps=1000 pretrain.lr=6e-4; the run folder's scenes data is written first if
missing. A run folder left by an earlier call resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from compress.evaluate import evaluate_csvs
from compress.precision import machine
from compress.train import train
from edgeclip.pipeline import Context
from edgeclip.recipe.loading import load_recipe
from edgeclip.run_folder import scenes_dir
from edgeclip.stages import data as data_stage
from edgeclip.stages.pretrain import pretraining

ROOT = Path(__file__).resolve().parents[1]


def accuracy(model: torch.nn.Module, scenes: Path) -> dict:
    model.eval()
    with torch.no_grad():
        r = evaluate_csvs(
            model,
            {"colour_shape": scenes / "zs_colour_shape.csv", "shape": scenes / "zs_shape.csv"},
            {"retrieval": scenes / "retrieval.csv"},
            templates=["a small {}", "a large {}"],
        )
    model.train()
    top1 = {f"{task}_top1": round(v["top1"], 4) for task, v in r["zeroshot"].items()}
    return top1 | {"t2i_r1": round(r["retrieval"]["retrieval"]["text_to_image_r1"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--every", type=int, default=250, help="steps between evaluations")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "demo.yaml"))
    parser.add_argument("overrides", nargs="*", help="key.path=value")
    args = parser.parse_intermixed_args()

    recipe = load_recipe(args.recipe, args.overrides)
    ctx = Context(recipe, Path(args.run_dir))
    scenes = scenes_dir(ctx)
    if not (scenes / "scenes.json").exists():
        data_stage.run(ctx, ctx.stage_dir("data"))
    cfg = recipe.pretrain
    setup = pretraining(ctx)
    model = setup.model
    clock = {"start": time.perf_counter(), "paused": 0.0}

    def evaluate(step: int) -> None:
        paused = time.perf_counter()
        seconds = paused - clock["start"] - clock["paused"]
        point = {"step": step, "seconds": round(seconds, 1)} | accuracy(model, scenes)
        print(json.dumps(point), flush=True)
        clock["paused"] += time.perf_counter() - paused

    def batches(start: int):
        for step, batch in enumerate(setup.batches(start), start):
            if step > start and step % args.every == 0:
                evaluate(step)
            yield batch

    summary = train(
        model, batches, cfg, ctx.stage_dir("pretrain"), objective=setup.objective, desc="pretrain"
    )
    evaluate(cfg.steps)
    print(json.dumps({"precision": summary["precision"], "machine": machine()}), flush=True)


if __name__ == "__main__":
    main()
