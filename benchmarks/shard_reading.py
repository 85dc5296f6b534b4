"""Shard reading: our tar reader against the webdataset library's pipeline, and what each does
with bad data.

Writes ``--samples`` scenes (64 px PNGs) as webdataset shards of ``--shard-size`` into a
temporary folder, then prints JSON with samples/s (best of ``--repeats``) of:
``iter_tar_samples`` over local paths and over ``pipe:cat`` URLs; ``webdataset.WebDataset(urls,
shardshuffle=False)`` yielding raw samples over the same two; and both with every PNG decoded
to RGB (ours: ``load_image(...).convert("RGB")``; the library: ``.decode("pil")``, which also
decodes the text and JSON members). Then it records how each reports a truncated shard and a
sample missing its image, under the library's default handler and ``warn_and_continue``, and
ours raising and with ``skip_bad``: exception type and message, whether it names the shard,
whether the skips are counted. Run it alone on the machine: other work on the 2 cores moves
every number.

Run: python benchmarks/shard_reading.py [--samples 4000] [--shard-size 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import webdataset as wds

from compress.data.datasets import load_image
from compress.data.scenes_files import write_scenes
from compress.data.shards import WdsDataset, iter_tar_samples
from compress.data.transforms import image_transform
from compress.models.clip import OPENAI_MEAN, OPENAI_STD


def ours(urls: list[str], decode: bool) -> Iterable:
    for url in urls:
        for _, members in iter_tar_samples(url):
            yield load_image(io.BytesIO(members["png"])).convert("RGB") if decode else members


def library(urls: list[str], decode: bool, **kw) -> Iterable:
    dataset = wds.WebDataset(urls, shardshuffle=False, **kw)
    return (
        dataset.decode("pil", handler=kw.get("handler", wds.reraise_exception))
        if decode
        else dataset
    )


def samples_per_s(read: Callable[[], Iterable], count: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(1 for _ in read())
        best = min(best, time.perf_counter() - start)
        assert n == count, (n, count)
    return round(count / best, 1)


def outcome(read: Callable[[], Iterable], shard: str, counted: Callable[[], dict] | None = None):
    """What reading does: samples yielded (and the last one's members, when raw), the exception
    or warnings, and the skip counters, if any."""
    got, last, error = 0, None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for sample in read():
                got, last = got + 1, sample
        except Exception as err:  # noqa: BLE001 - recording whatever the reader raises
            error = err
    result: dict = {"samples": got}
    if isinstance(last, dict) and "__key__" in last:
        result["last_sample"] = [last["__key__"], sorted(k for k in last if k[:2] != "__")]
    if error is not None:
        result |= {
            "raises": type(error).__name__,
            "message": str(error)[:300],
            "one_line": "\n" not in str(error),
            "names_shard": shard in str(error),
        }
    if caught:
        result |= {
            "warnings": [str(w.message)[:300] for w in caught],
            "names_shard": [shard in str(w.message) for w in caught],
        }
    if counted is not None:
        result["skips_counted"] = counted()
    return result


def uncounted() -> str:
    return "nowhere: no counter in the pipeline, only the warnings"


def bad_shards(folder: Path, good: Path) -> dict[str, Path]:
    """Copies of `good` cut mid-member and at a member's header, and a 3-sample shard whose
    middle sample has no image."""
    data = good.read_bytes()
    with tarfile.open(good) as tar:
        header = [info.offset for info in tar.getmembers()][40]  # the 11th sample's first header
    shards = {"truncated_shard": data[: len(data) // 2], "truncated_at_a_header": data[:header]}
    for name, cut in shards.items():
        (folder / f"{name}.tar").write_bytes(cut)
    first = list(iter_tar_samples(good))[:3]
    with tarfile.open(folder / "sample_missing_image.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, (key, members) in enumerate(first):
            for ext, payload in members.items():
                if i == 1 and ext == "png":
                    continue
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return {name: folder / f"{name}.tar" for name in (*shards, "sample_missing_image")}


def behaviour(path: Path) -> dict:
    """How each reader reports the bad shard at `path`, read through `pipe:cat`."""
    shard = f"pipe:cat {path}"
    warn = wds.handlers.warn_and_continue

    def as_tuple(**kw):  # the library notices a missing image only when a trainer uses it
        return library([shard], True, **kw).to_tuple("png", "txt", **kw)

    def dataset(skip_bad: bool) -> WdsDataset:
        return WdsDataset([shard], image_transform(64, OPENAI_MEAN, OPENAI_STD), skip_bad=skip_bad)

    skipping = dataset(True)
    return {
        "webdataset_default": outcome(as_tuple, shard),
        "webdataset_warn_and_continue": outcome(partial(as_tuple, handler=warn), shard, uncounted),
        "webdataset_raw_warn_and_continue": outcome(
            partial(library, [shard], False, handler=warn), shard, uncounted
        ),
        "ours": outcome(partial(dataset, False), shard),
        "ours_skip_bad": outcome(
            lambda: skipping,
            shard,
            lambda: {"skipped": skipping.skipped, "truncated_shards": skipping.truncated_shards},
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "scenes"
        sizes = {"train": args.samples}
        write_scenes(root, seed=0, image_size=64, sizes=sizes, shard_size=args.shard_size)
        local = sorted(map(str, (root / "wds").glob("train-*.tar")))
        piped = [f"pipe:cat {s}" for s in local]
        result = {
            "samples": args.samples,
            "shards": len(local),
            "image_size": 64,
            "mean_shard_bytes": round(sum(Path(s).stat().st_size for s in local) / len(local)),
            "webdataset": wds.__version__,
        }
        runs = {
            "ours_local": (ours, local),
            "ours_pipe": (ours, piped),
            "webdataset_local": (library, local),
            "webdataset_pipe": (library, piped),
        }
        for decode in (False, True):
            key = "decoded_rgb_samples_per_s" if decode else "raw_samples_per_s"
            result[key] = {}
            for name, (reader, urls) in runs.items():
                print(key, name, file=sys.stderr, flush=True)
                read = partial(reader, urls, decode)
                result[key][name] = samples_per_s(read, args.samples, args.repeats)
        bad = bad_shards(Path(tmp), Path(local[0]))
        result["bad_data"] = {name: behaviour(path) for name, path in bad.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
