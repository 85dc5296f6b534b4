"""Spine benchmark: prints JSON figures for the demo pipeline: scenes rate, pretrain and eval throughput.

Run: python benchmarks/spine.py
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from compress.data.scenes import iter_split
from compress.distill.losses import clip_loss
from compress.models import build_model
from compress.train import param_groups


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


def _demo_model():
    torch.manual_seed(0)
    return build_model("demo_teacher", {"kind": "clipped", "alpha": 4.0}, {"kind": "gated"})


def _demo_batch(model, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    size, ctx = model.visual.image_size, model.text.context_length
    tokens = torch.randint(1, 49000, (batch, ctx))
    tokens[:, 12] = model.text.eot_id
    return torch.randn(batch, 3, size, size), tokens


def bench_pretrain(batch: int = 128, steps: int = 8) -> dict[str, Any]:
    """Training steps per second of the demo teacher (forward, CLIP loss, backward, AdamW), all cores."""
    model = _demo_model().train()
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4)
    images, tokens = _demo_batch(model, batch)

    def step() -> None:
        loss = clip_loss(*model(images, tokens))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    return {
        "model": "demo_teacher",
        "batch": batch,
        "samples_per_s": round(batch * steps / elapsed, 1),
        "threads": torch.get_num_threads(),
    }


@torch.no_grad()
def bench_eval(batch: int = 256, batches: int = 8) -> dict[str, Any]:
    """Inference throughput of the demo teacher's towers, as the eval stage runs them."""
    model = _demo_model().eval()
    images, tokens = _demo_batch(model, batch)
    model.encode_image(images)
    start = time.perf_counter()
    for _ in range(batches):
        model.encode_image(images)
    image_rate = batch * batches / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(batches):
        model.encode_text(tokens)
    text_rate = batch * batches / (time.perf_counter() - start)
    return {
        "model": "demo_teacher",
        "batch": batch,
        "images_per_s": round(image_rate, 1),
        "texts_per_s": round(text_rate, 1),
    }


# Each section is one benchmark.
SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "scenes": bench_scenes,
    "pretrain": bench_pretrain,
    "eval": bench_eval,
}


def main() -> None:
    """Run every section and print the results as one JSON object."""
    print(json.dumps({name: bench() for name, bench in SECTIONS.items()}, indent=2))


if __name__ == "__main__":
    main()
