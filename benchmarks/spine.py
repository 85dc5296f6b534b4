"""Spine benchmark: prints JSON figures for the demo pipeline's stages (scenes data so far)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from compress.data.scenes import iter_split


def bench_scenes(n: int = 4000, image_size: int = 64, seed: int = 0) -> dict[str, Any]:
    """Render and caption `n` train scenes in memory on one CPU core.

    Pins the process to core 0 and one torch thread while measuring, then restores both.

    Example:
        >>> bench_scenes(n=200)["image_size"]  # doctest: +SKIP
        64
    """
    affinity = os.sched_getaffinity(0)
    threads = torch.get_num_threads()
    os.sched_setaffinity(0, {min(affinity)})
    torch.set_num_threads(1)
    try:
        for _ in iter_split("train", 200, seed + 1, image_size):  # warm the shape-mask cache
            pass
        start = time.perf_counter()
        count = sum(1 for _ in iter_split("train", n, seed, image_size))
        elapsed = time.perf_counter() - start
    finally:
        os.sched_setaffinity(0, affinity)
        torch.set_num_threads(threads)
    return {
        "scenes_images_per_s_one_core": round(count / elapsed, 1),
        "image_size": image_size,
        "n": count,
    }


# Each section is one benchmark; later stages (pretrain, eval) add theirs here.
SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "scenes": bench_scenes,
}


def main() -> None:
    """Run every section and print the results as one JSON object."""
    print(json.dumps({name: bench() for name, bench in SECTIONS.items()}, indent=2))


if __name__ == "__main__":
    main()
