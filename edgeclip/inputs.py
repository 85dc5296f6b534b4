"""What a run reads from outside its recipe: the training data and the given models, checked
before anything runs (each stage's ``check``), and the training data as each trainer reads it."""

from __future__ import annotations

from pathlib import Path

from compress.data.datasets import CsvDataset
from compress.data.scenes import SPLITS
from compress.data.shards import WdsDataset, expand_shards
from compress.data.transforms import image_transform
from compress.models import ModelRecord
from compress.models.given import TeacherConfig
from edgeclip.pipeline import Context
from edgeclip.recipe import Recipe, RecipeError
from edgeclip.run_folder import scenes_dir

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
    tokenize = record.tokenizer()
    source = data.train
    cache = None
    if data.cache:  # shared by the stages that read the same data at the same size and tokens
        own = record.config["text"].get("tokenizer", {}).get("sha256")
        key = (source, record.image_size, record.context_length, own)
        cache = ctx.decoded.setdefault(key, {})
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


def check_batch(section: str, batch_size: int, world: int) -> None:
    if batch_size % world:
        raise RecipeError(
            f"{section}.batch_size: {batch_size} does not split evenly across {world} processes"
        )


def check_given(recipe: Recipe, key: str, cfg: TeacherConfig) -> None:
    """A given model's inputs exist: its checkpoint file, its open_clip architecture and tag."""
    from compress.models.loaders import (
        UnsupportedArchitecture,
        foreign_tokenizer,
        missing_tokenizer,
        openclip_config,
        parse_name,
        supported_architectures,
    )

    if cfg.checkpoint is not None and not Path(cfg.checkpoint).is_file():
        raise recipe.error(f"{key}.checkpoint", f"no such file: {cfg.checkpoint}")
    if cfg.tokenizer is not None and not Path(cfg.tokenizer).exists():
        raise recipe.error(f"{key}.tokenizer", f"no such file or folder: {cfg.tokenizer}")
    arch = parse_name(cfg.model)
    if arch is None:
        return
    try:
        openclip_config(arch)  # this one alone: listing every supported one takes seconds
    except UnsupportedArchitecture:
        supported = supported_architectures()
        raise recipe.error(
            f"{key}.model",
            f"open_clip architecture {arch!r} is not supported; supported: {', '.join(supported)}",
        ) from None
    tokenizer = foreign_tokenizer(arch)
    if tokenizer is not None and cfg.tokenizer is None:
        raise recipe.error(f"{key}.tokenizer", f"missing: {missing_tokenizer(arch, tokenizer)}")
    if cfg.pretrained is not None:
        from compress.compat import open_clip

        tags = open_clip().list_pretrained_tags_by_model(arch)
        if cfg.pretrained not in tags:
            raise recipe.error(
                f"{key}.pretrained",
                f"open_clip has no tag {cfg.pretrained!r} for "
                f"{arch}; tags: {', '.join(tags) or 'none'}",
            )
