"""CLIP tokenization: milliseconds a caption, open_clip's ``SimpleTokenizer`` against ours.

Tokenizes the demo's distinct captions (each scene's caption and paraphrases of a scenes training
split the demo's size), each once (a cold caption cache, as in the reinforce stage), at the
demo models' context length, and prints JSON: the one-time load (ours first, in a process that
has not imported open_clip), milliseconds a caption for open_clip (one caption a call, as our
tokenizer called it before), ours in batches and one caption a call (each from a fresh load),
and whether every id is the same.

Run: python benchmarks/tokenizer.py [--scenes 40000] [--context 24] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from compress import tokenizer
from compress.data.scenes import caption, make_scene, paraphrases
from compress.precision import cpu_model


def demo_captions(scenes: int) -> list[str]:
    """The distinct captions and paraphrases of the first ``scenes`` training scenes."""
    out = []
    for i in range(scenes):
        scene, _ = make_scene("train", i, seed=0)
        out += [caption(scene), *paraphrases(scene)]
    return list(dict.fromkeys(out))


class Clock:
    """Wall and CPU seconds of a block: on a machine shared with other jobs the process's CPU
    time is the steadier figure (the work is single-threaded)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def ms_each(self, n: int) -> dict:
        return {"wall": self.wall / n * 1e3, "cpu": self.cpu / n * 1e3}


def ours(captions: list[str], context: int, batch: int) -> tuple[Clock, Clock, torch.Tensor]:
    """The load (first call) and the captions' tokenizing, from a fresh load."""
    tokenizer._load_bpe.cache_clear()
    tokenize = tokenizer.Tokenizer(context)
    with Clock() as load:
        tokenize.bpe  # noqa: B018 (reads the merges, builds the encoder)
    with Clock() as run:
        if batch > 1:
            chunks = range(0, len(captions), batch)
            ids = torch.cat([tokenize(captions[i : i + batch]) for i in chunks])
        else:
            ids = torch.stack([tokenize(c) for c in captions])
    return load, run, ids


def open_clips(captions: list[str], context: int) -> tuple[Clock, Clock, torch.Tensor]:
    with Clock() as load:
        from compress.compat import open_clip

        reference = open_clip().tokenizer.SimpleTokenizer(context_length=context)
    with Clock() as run:
        ids = torch.cat([reference([c]) for c in captions])
    return load, run, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40000, help="training scenes (the demo's)")
    parser.add_argument("--context", type=int, default=24, help="the demo models' context")
    parser.add_argument("--batch", type=int, default=128, help="captions a call, batched")
    args = parser.parse_args()
    captions = demo_captions(args.scenes)
    n = len(captions)
    load, batched, batched_ids = ours(captions, args.context, args.batch)
    _, single, single_ids = ours(captions, args.context, 1)
    reference_load, reference, reference_ids = open_clips(captions, args.context)
    report = {
        "cpu": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "captions": n,
        "context_length": args.context,
        "load_s": {
            "ours": {"wall": load.wall, "cpu": load.cpu},
            "open_clip": {"wall": reference_load.wall, "cpu": reference_load.cpu},
        },
        "ms_per_caption": {
            "open_clip": reference.ms_each(n),
            f"ours_batch_{args.batch}": batched.ms_each(n),
            "ours_one_a_call": single.ms_each(n),
        },
        "speedup_cpu": {
            "batched": reference.cpu / batched.cpu,
            "one_a_call": reference.cpu / single.cpu,
        },
        "identical_ids": torch.equal(batched_ids, reference_ids)
        and torch.equal(single_ids, reference_ids),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
