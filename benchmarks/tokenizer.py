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


def ours(captions: list[str], context: int, batch: int) -> tuple[float, float, torch.Tensor]:
    """Seconds to load (first call) and milliseconds a caption, from a fresh load."""
    tokenizer._load_bpe.cache_clear()
    tokenize = tokenizer.Tokenizer(context)
    start = time.perf_counter()
    tokenize.bpe  # noqa: B018 (reads the merges, builds the encoder)
    load = time.perf_counter() - start
    start = time.perf_counter()
    if batch > 1:
        ids = torch.cat([tokenize(captions[i : i + batch]) for i in range(0, len(captions), batch)])
    else:
        ids = torch.stack([tokenize(c) for c in captions])
    return load, (time.perf_counter() - start) / len(captions) * 1e3, ids


def open_clips(captions: list[str], context: int) -> tuple[float, float, torch.Tensor]:
    start = time.perf_counter()
    from compress.compat import open_clip

    reference = open_clip().tokenizer.SimpleTokenizer(context_length=context)
    load = time.perf_counter() - start
    start = time.perf_counter()
    ids = torch.cat([reference([c]) for c in captions])
    return load, (time.perf_counter() - start) / len(captions) * 1e3, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40000, help="training scenes (the demo's)")
    parser.add_argument("--context", type=int, default=24, help="the demo models' context")
    parser.add_argument("--batch", type=int, default=128, help="captions a call, batched")
    args = parser.parse_args()
    captions = demo_captions(args.scenes)
    load, batched_ms, batched = ours(captions, args.context, args.batch)
    _, single_ms, single = ours(captions, args.context, 1)
    reference_load, reference_ms, reference = open_clips(captions, args.context)
    report = {
        "cpu": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "captions": len(captions),
        "context_length": args.context,
        "load_s": {"ours": load, "open_clip": reference_load},
        "ms_per_caption": {
            "open_clip": reference_ms,
            f"ours_batch_{args.batch}": batched_ms,
            "ours_one_a_call": single_ms,
        },
        "speedup": {"batched": reference_ms / batched_ms, "one_a_call": reference_ms / single_ms},
        "identical_ids": torch.equal(batched, reference) and torch.equal(single, reference),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
