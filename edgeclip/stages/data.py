"""The data stage: writes the embedded scenes dataset (the training data every trainer reads is
in :mod:`edgeclip.inputs`)."""

from __future__ import annotations

from pathlib import Path

from compress.data.scenes import ZEROSHOT_TASKS
from edgeclip.inputs import uses_scenes
from edgeclip.pipeline import Context, Stage
from edgeclip.run_folder import scenes_dir


def run(ctx: Context, out: Path) -> dict:
    from compress.data.scenes_files import write_scenes

    s = ctx.recipe.data.scenes
    sizes = {"train": s.train, "val": s.val, "retrieval": s.retrieval}
    sizes |= dict.fromkeys(ZEROSHOT_TASKS, s.zeroshot)
    write_scenes(
        scenes_dir(ctx),
        seed=ctx.recipe.seed,
        image_size=s.image_size,
        sizes=sizes,
        shard_size=s.shard_size,
    )
    return {"splits": sizes}


def report(summary: dict) -> list[str]:
    splits = summary.get("splits", {})
    return [
        "## Data",
        "",
        "Scenes splits: " + ", ".join(f"{k} {v}" for k, v in splits.items()) + ".",
    ]


STAGE = Stage(
    "data",
    ("data",),
    run,
    uses_scenes,
    "write the scenes dataset (CSV + webdataset shards)",
    report=report,
)
