"""Training data path: what one sample costs the training thread, with and without ``data.cache``.

Writes a scenes training split as webdataset shards (into a temporary folder, or reuses
``--scenes DIR``), then reads epochs of it through the trainer's own batch stream
(``compress.data.batches.batch_stream`` over ``WdsDataset``: tar reading, PNG decoding, resize,
normalisation, tokenising, shuffling, collation) and prints JSON: milliseconds a sample for the
first and a later epoch, uncached and cached, and the image transform alone.

Run: python benchmarks/data.py [--samples 8000] [--scenes DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from compress.data.batches import batch_stream
from compress.data.scenes_files import write_scenes
from compress.data.shards import WdsDataset
from compress.data.transforms import image_transform
from compress.models.clip import OPENAI_MEAN, OPENAI_STD
from compress.tokenizer import Tokenizer

BATCH = 128


def epochs_ms(shards: list[str], samples: int, cache: dict | None) -> list[float]:
    """Milliseconds a sample for two epochs of the batch stream."""
    tokenize = Tokenizer(24)
    tokenize("warm up")  # the BPE tables load once per process, not per sample
    dataset = WdsDataset(
        shards,
        image_transform(64, OPENAI_MEAN, OPENAI_STD),
        tokenize,
        shuffle_buffer=2000,
        cache=cache,
    )
    stream = batch_stream(dataset, BATCH, 0, 0, 1, 0)
    per_epoch = samples // BATCH
    result = []
    for _ in range(2):
        start = time.perf_counter()
        for _ in range(per_epoch):
            next(stream)
        result.append((time.perf_counter() - start) / (per_epoch * BATCH) * 1e3)
    return result


def transform_ms(repeats: int = 2000) -> float:
    transform = image_transform(64, OPENAI_MEAN, OPENAI_STD)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    start = time.perf_counter()
    for _ in range(repeats):
        transform(image)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8000, help="training samples to write")
    parser.add_argument("--scenes", type=Path, help="an existing scenes folder to read instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.scenes or Path(tmp) / "scenes"
        if args.scenes is None:
            write_scenes(root, seed=0, image_size=64, sizes={"train": args.samples})
        index = json.loads((root / "scenes.json").read_text())
        shards = [str(root / shard["file"]) for shard in index["shards"]["train"]]
        samples = index["sizes"]["train"]
        uncached = epochs_ms(shards, samples, None)
        cached = epochs_ms(shards, samples, {})
    report = {
        "samples_per_epoch": samples,
        "batch_size": BATCH,
        "ms_per_sample": {
            "uncached_first_epoch": uncached[0],
            "uncached_later_epoch": uncached[1],
            "cached_first_epoch": cached[0],
            "cached_later_epoch": cached[1],
        },
        "image_transform_ms": transform_ms(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
