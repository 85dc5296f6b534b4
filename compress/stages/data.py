"""The data stage (writes the embedded scenes dataset) and the training data every trainer reads."""

from __future__ import annotations

from pathlib import Path

from compress.data.datasets import CsvDataset
from compress.data.scenes import SPLITS, ZEROSHOT_TASKS
from compress.data.shards import WdsDataset, expand_shards
from compress.data.transforms import image_transform
from compress.models import ModelRecord
from compress.pipeline import Context, Stage
from compress.recipe import Recipe
from compress.stages.layout import scenes_dir
from compress.tokenizer import Tokenizer

SCENES = "scenes"


def uses_scenes(recipe: Recipe) -> bool:
    """Whether the run trains or evaluates on the embedded scenes dataset (so must write it)."""
    tasks = recipe.eval.tasks() if recipe.eval else ()
    reads = (recipe.pretrain, recipe.distill, recipe.reinforce)
    trains = any(r is not None for r in reads) and recipe.data.train == SCENES
    return trains or any(task in SPLITS for task in tasks)


def check_train_data(recipe: Recipe) -> None:
    """The training data the recipe names exists (a CSV file, or at least one shard file; URL
    shards, such as `pipe:…` or `https://…`, are only opened when read)."""
    from compress.data.shards import is_url

    train = recipe.data.train
    if train.endswith(".csv") and not Path(train).is_file():
        raise recipe.error("data.train", f"no such file: {train}")
    shards = expand_shards(train) if train.endswith(".tar") else []
    if shards and not any(is_url(s) or Path(s).is_file() for s in shards):
        raise recipe.error("data.train", f"no shard file matches {train}")


def train_shards(ctx: Context) -> list[str]:
    """The training data's webdataset shards: the scenes data's, or the recipe's pattern."""
    train = ctx.recipe.data.train
    if train == SCENES:
        return sorted(map(str, (scenes_dir(ctx) / "wds").glob("train-*.tar")))
    return expand_shards(train)


def train_dataset(ctx: Context, record: ModelRecord):
    """This process's training data for a model of ``record``'s input size and normalisation."""
    data = ctx.recipe.data
    transform = image_transform(record.image_size, **record.normalization)
    tokenize = Tokenizer(record.context_length)
    source = data.train
    cache = None
    if data.cache:  # shared by the stages that read the same data at the same size
        cache = ctx.decoded.setdefault((source, record.image_size, record.context_length), {})
    if source == SCENES:
        source = str(scenes_dir(ctx) / "train.csv") if data.format == "csv" else train_shards(ctx)
    if isinstance(source, str) and source.endswith(".csv"):
        columns = {"image_key": data.image_key, "caption_key": data.caption_key}
        return CsvDataset(
            source, transform, tokenize, skip_bad=data.skip_bad, cache=cache, **columns
        )
    return WdsDataset(  # a list of shards, or a brace pattern it expands
        source,
        transform,
        tokenize,
        shuffle_buffer=2000,
        seed=ctx.recipe.seed,
        rank=ctx.rank,
        world_size=ctx.world,
        skip_bad=data.skip_bad,
        cache=cache,
    )


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
