"""The reinforce stage: the training data reinforced once with the teachers' knowledge
(MobileCLIP), written as DataCompDR-layout shards with an index in ``reinforce/``; a distill
stage with ``loss.kind: reinforced`` then trains from it without running any teacher.

A killed run resumes: the shards already finished are kept and their samples skipped.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from compress.data.datasets import DECODE_ERRORS, CsvDataset, DataError, load_image, reason
from compress.data.reinforced import IMAGE_EXTS
from compress.data.shards import iter_tar_samples
from compress.distill.reinforce import Sample
from edgeclip.inputs import SCENES, check_given, check_train_data, train_shards
from edgeclip.pipeline import Context, Stage
from edgeclip.recipe import Recipe
from edgeclip.run_folder import INDEX, own_model


def check(recipe: Recipe) -> None:
    check_train_data(recipe)
    cfg = recipe.reinforce
    for i, member in enumerate(cfg.ensemble):
        check_given(recipe, f"reinforce.ensemble[{i}]", member)
    if cfg.captioner == "coca" and cfg.coca.checkpoint and not Path(cfg.coca.checkpoint).is_file():
        raise recipe.error("reinforce.coca.checkpoint", f"no such file: {cfg.coca.checkpoint}")


class TrainingSource:
    """The training data as stored, numbered in order: webdataset shards (the scenes data's, or
    the recipe's) or a CSV of image paths and captions. Every process numbers all samples the
    same way and decodes only its own (every ``world``-th from ``rank``), so a run on any number
    of processes reinforces the same samples under the same keys (the source key is the uid).

    A sample without an image or caption, an unreadable image or a broken shard is a one-line
    `DataError` naming it; with ``data.skip_bad`` it is skipped (unnumbered) and counted.
    """

    def __init__(self, ctx: Context, limit: int | None = None) -> None:
        data = ctx.recipe.data
        self.source, self.limit, self.skip_bad = data.train, limit, data.skip_bad
        self.image_key, self.caption_key = data.image_key, data.caption_key
        self.rank, self.world = ctx.rank, ctx.world
        self.shards = [] if self.source.endswith(".csv") else train_shards(ctx)
        self.skipped = 0  # malformed records (every process counts all of them)
        self.unreadable = 0  # images that would not decode (each process counts its own)

    def _records(self) -> Iterator[tuple[str, str, str, str, Callable[[], bytes], list | None]]:
        """(where, uid, caption, image extension, image file reader, synthetic captions or None)
        per usable record."""
        if self.source.endswith(".csv"):
            rows = CsvDataset(
                self.source,
                None,
                image_key=self.image_key,
                caption_key=self.caption_key,
                skip_bad=self.skip_bad,
            )
            self.skipped += rows.skipped
            for i, caption in enumerate(rows.captions):
                path = rows.image_path(i)
                ext = path.suffix[1:].lower()
                yield (
                    f"{self.source}: image '{path}'",
                    str(path),
                    caption,
                    ext,
                    path.read_bytes,
                    None,
                )
            return
        for shard in self.shards:
            samples = iter_tar_samples(shard)
            while True:
                try:
                    key, members = next(samples)
                except StopIteration:
                    break
                except DataError:
                    if not self.skip_bad:
                        raise
                    self.skipped += 1  # the sample the shard broke off in
                    break
                ext = next((e for e in IMAGE_EXTS if e in members), None)
                if ext is None or "txt" not in members:
                    if not self.skip_bad:
                        raise DataError(
                            f"{shard}: sample '{key}' has no image (.{'/.'.join(IMAGE_EXTS)}) "
                            f"or no caption (.txt); it has {', '.join(members)}"
                        )
                    self.skipped += 1
                    continue
                syn = json.loads(members["syn.json"])["syn_text"] if "syn.json" in members else None
                caption = members["txt"].decode("utf-8", errors="replace").strip()
                read = partial(bytes, members[ext])
                yield f"{shard}: sample '{key}.{ext}'", key, caption, ext, read, syn

    def __iter__(self) -> Iterator[Sample]:
        count = 0
        for where, uid, caption, ext, read, syn in self._records():
            if self.limit is not None and count >= self.limit:
                return
            number, count = count, count + 1
            if number % self.world != self.rank:
                continue
            try:
                data = read()
                pixels = load_image(io.BytesIO(data))
            except DECODE_ERRORS as err:
                if not self.skip_bad:
                    raise DataError(f"{where} cannot be read: {reason(err)}") from err
                self.unreadable += 1
                continue
            # a file the shards can hold is stored as it is; another format becomes a JPEG
            encoded = (ext, data) if ext in IMAGE_EXTS else None
            yield Sample(f"{number:09d}", pixels, caption, syn, uid=uid, encoded=encoded)


def _own_files(out: Path, rank: int, world: int) -> tuple[str, Path]:
    """This process's shard prefix and index file (one set per process of a world size)."""
    tag = f"r{rank}of{world}"
    return f"train-{tag}", out / f"index-{tag}.json"


def _drop_other_worlds(out: Path, world: int) -> None:
    """Files a killed run left under another process count: this run writes its own."""
    for path in out.iterdir():
        found = re.fullmatch(r"(train-r\d+of(\d+)-\d+\.tar|index-r\d+of(\d+)\.json)", path.name)
        if found and int(found[2] or found[3]) != world:
            path.unlink()


def _teachers(ctx: Context) -> tuple[list, list[str], list[int]]:
    """The frozen teachers (the run's model, then the ensemble), their names and embedding sizes."""
    from compress.distill.reinforce import text_embeddings
    from compress.distill.student import freeze
    from compress.models import load_model
    from compress.models.given import load_given

    cfg = ctx.recipe.reinforce
    model, record = load_model(own_model(ctx))
    teachers = [freeze(model)]
    teachers += [
        freeze(load_given(t.model, t.checkpoint, t.pretrained, t.tokenizer)[0])
        for t in cfg.ensemble
    ]
    names = [record.name, *(t.model for t in cfg.ensemble)]
    dims = [int(text_embeddings([t], ["a"]).shape[1]) for t in teachers]
    return teachers, names, dims


def _writer(ctx: Context, out: Path, teachers: list, names: list[str], dims: list[int], settings):
    """This process's shard writer, resuming its own index where a killed run left it; and the
    keys it already wrote."""
    from compress.data.reinforced import ReinforcedWriter, done_keys, read_index

    cfg = ctx.recipe.reinforce
    if ctx.rank == 0:
        _drop_other_worlds(out, ctx.world)
    prefix, own_index = _own_files(out, ctx.rank, ctx.world)
    resume = own_index.exists()
    done = done_keys(read_index(own_index)) if resume else ()  # before the writer opens it
    writer = ReinforcedWriter(
        out,
        prefix,
        names,
        dims,
        k=cfg.k,
        n=cfg.n,
        augmentation=settings,
        samples_per_shard=cfg.samples_per_shard,
        fp16=cfg.fp16,
        scales=[float(t.logit_scale.exp()) for t in teachers],
        biases=[None if t.logit_bias is None else float(t.logit_bias) for t in teachers],
        index_name=own_index.name,
        resume=resume,
    )
    return writer, done


def _captioner(ctx: Context):
    """The recipe's captioner, the CoCa one set up with its model and the run's seed."""
    from compress.data.captioners import captioners, configure_coca

    cfg = ctx.recipe.reinforce
    if cfg.captioner == "coca":
        coca = cfg.coca
        configure_coca(
            model=coca.model,
            pretrained=coca.pretrained,
            checkpoint=coca.checkpoint,
            seed=ctx.recipe.seed,
        )
    return captioners.get(cfg.captioner)


def _progress(ctx: Context, source: TrainingSource) -> tqdm:
    """This process's samples with a progress bar (a resumed run counts the finished ones too)."""
    cfg = ctx.recipe.reinforce
    known = ctx.recipe.data.scenes.train if ctx.recipe.data.train == SCENES else None
    total = min(filter(None, (cfg.limit, known)), default=None)
    return tqdm(
        source,
        desc="reinforce",
        total=-(-total // ctx.world) if total else None,
        unit="img",
        disable=ctx.rank != 0,
        dynamic_ncols=True,
        mininterval=1.0,
    )


def run(ctx: Context, out: Path) -> dict:
    from compress.data.augment import Augmentation
    from compress.data.reinforced import merge_indexes
    from compress.distill.reinforce import reinforce

    cfg = ctx.recipe.reinforce
    teachers, names, dims = _teachers(ctx)
    settings = {  # augmentations stored at the first teacher's size
        "size": teachers[0].visual.image_size,
        "scale": list(cfg.crop_scale),
        "flip": cfg.flip,
        "rand_augment": cfg.rand_augment,
    }
    writer, done = _writer(ctx, out, teachers, names, dims, settings)
    source = TrainingSource(ctx, cfg.limit)
    with writer:
        written = reinforce(
            _progress(ctx, source),
            teachers,
            Augmentation.from_settings(settings),
            _captioner(ctx),
            writer,
            k=cfg.k,
            n=cfg.n,
            seed=ctx.recipe.seed,
            done=lambda key: key in done,
            batch_size=cfg.batch_size,
        )
    unreadable = torch.tensor([source.unreadable])
    if ctx.world > 1:
        dist.all_reduce(unreadable)  # also waits for every process to close its index
    if ctx.rank != 0:
        return {}
    index = merge_indexes([_own_files(out, r, ctx.world)[1] for r in range(ctx.world)], out / INDEX)
    shard_bytes = sum((out / s["file"]).stat().st_size for s in index["shards"])
    return {
        "samples": index["samples"],
        "written_now": written,
        "skipped": source.skipped + int(unreadable),
        "processes": ctx.world,
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
    distributed=True,
    check=check,
    report=report,
)
