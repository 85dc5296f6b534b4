"""The reinforce stage: the training data reinforced once with the teachers' knowledge
(MobileCLIP), written as DataCompDR-layout shards with an index in ``reinforce/``; a distill
stage with ``loss.kind: reinforced`` then trains from it without running any teacher.

A killed run resumes: the shards already finished are kept and their samples skipped.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from PIL import Image

from compress.data.reinforce import Sample
from compress.pipeline import Context, Stage
from compress.recipe import Recipe
from compress.stages.data import SCENES, check_train_data
from compress.stages.layout import own_model, scenes_dir
from compress.stages.teacher import check_given

INDEX = "index.json"


def index_path(ctx: Context) -> Path:
    """The reinforced dataset's index, as distillation reads it."""
    return ctx.stage_dir("reinforce") / INDEX


def check(recipe: Recipe) -> None:
    check_train_data(recipe)
    for i, member in enumerate(recipe.reinforce.ensemble):
        check_given(recipe, f"reinforce.ensemble[{i}]", member)


def source_samples(ctx: Context) -> Iterator[Sample]:
    """The training data as it is stored, keys numbered in order (the source key is the uid):
    webdataset shards (the scenes data's, or the recipe's) or a CSV of image paths and captions."""
    data = ctx.recipe.data
    source = data.train
    if source.endswith(".csv"):
        yield from _csv_samples(Path(source), data.image_key, data.caption_key)
        return
    from compress.data.reinforced import IMAGE_EXTS
    from compress.data.shards import expand_shards, iter_tar_samples

    shards = (
        sorted(map(str, (scenes_dir(ctx) / "wds").glob("train-*.tar")))
        if source == SCENES
        else expand_shards(source)
    )
    count = 0
    for shard in shards:
        for key, members in iter_tar_samples(shard):
            ext = next((e for e in IMAGE_EXTS if e in members), None)
            if ext is None or "txt" not in members:
                continue
            syn = json.loads(members["syn.json"])["syn_text"] if "syn.json" in members else None
            image = Image.open(io.BytesIO(members[ext])).convert("RGB")
            yield Sample(f"{count:09d}", image, members["txt"].decode(), syn, uid=key)
            count += 1


def _csv_samples(path: Path, image_key: str, caption_key: str) -> Iterator[Sample]:
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            image = Image.open(path.parent / row[image_key]).convert("RGB")
            yield Sample(f"{i:09d}", image, row[caption_key], None, uid=row[image_key])


def run(ctx: Context, out: Path) -> dict:
    from compress.data.augment import Augmentation
    from compress.data.reinforce import captioners, reinforce, text_embeddings
    from compress.data.reinforced import ReinforcedWriter, done_keys, read_index
    from compress.distill.student import freeze
    from compress.models import load_model
    from compress.models.loaders import load_given

    cfg = ctx.recipe.reinforce
    model, record = load_model(own_model(ctx))
    teachers = [freeze(model)]
    teachers += [freeze(load_given(t.model, t.checkpoint, t.pretrained)[0]) for t in cfg.ensemble]
    names = [record.name, *(t.model for t in cfg.ensemble)]
    dims = [int(text_embeddings([t], ["a"]).shape[1]) for t in teachers]
    size = teachers[0].visual.image_size  # augmentations stored at the first teacher's size
    settings = {"size": size, "flip": False, "rand_augment": True}
    resume = (out / INDEX).exists()
    done = done_keys(read_index(out / INDEX)) if resume else ()
    writer = ReinforcedWriter(
        out,
        "train",
        names,
        dims,
        k=cfg.k,
        n=cfg.n,
        augmentation=settings,
        samples_per_shard=cfg.samples_per_shard,
        fp16=cfg.fp16,
        scales=[float(t.logit_scale.exp()) for t in teachers],
        resume=resume,
    )
    with writer:
        written = reinforce(
            islice(source_samples(ctx), cfg.limit),
            teachers,
            Augmentation(size),
            captioners.get(cfg.captioner),
            writer,
            k=cfg.k,
            n=cfg.n,
            seed=ctx.recipe.seed,
            done=lambda key: key in done,
            batch_size=cfg.batch_size,
        )
    index = read_index(out / INDEX)
    shard_bytes = sum((out / s["file"]).stat().st_size for s in index["shards"])
    return {
        "samples": index["samples"],
        "written_now": written,
        "teachers": names,
        "dims": dims,
        "k": cfg.k,
        "n": cfg.n,
        "shards": len(index["shards"]),
        "bytes_per_sample": shard_bytes / max(1, index["samples"]),
    }


def report(summary: dict) -> list[str]:
    return [
        "## Reinforced data",
        "",
        f"{summary['samples']} training images reinforced once with "
        f"{', '.join(f'`{t}`' for t in summary['teachers'])} (embedding dims "
        f"{summary['dims']}): {summary['k']} stored augmentations and {summary['n']} synthetic "
        f"captions each, {summary['bytes_per_sample'] / 1024:.1f} KiB per sample in "
        f"{summary['shards']} shards.",
    ]


STAGE = Stage(
    "reinforce",
    ("data", "pretrain", "teacher", "reinforce"),
    run,
    lambda r: r.reinforce is not None,
    "reinforce the training data with the teachers' knowledge (MobileCLIP), once",
    check=check,
    report=report,
)
