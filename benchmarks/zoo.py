"""Model-zoo benchmark: eager forward latency of every real-size tower, batch 1, on the host CPU.

Prints JSON: per model and tower, the median and p90 of N timed runs after warm-up, for the
train-time model and, where it has train-time branches, the folded (reparameterized) one; and
the latency ratio of the MobileCLIP-S0-like image tower to the ViT-B/16 one.

Run: python benchmarks/zoo.py [--runs 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import torch

from compress.models import (
    build_model,
    count_params,
    is_reparameterized,
    model_config,
    reparameterize,
)
from compress.tokenizer import EOT_ID

REAL_SIZE = ["mobileclip_s0", "tinyclip_vit_8m_16", "tinyclip_vit_39m_16", "vit_b16", "vit_b32"]


def latency_ms(module: torch.nn.Module, x: torch.Tensor, runs: int, warmup: int = 3) -> dict:
    """Median / p90 / min wall time of ``module(x)`` in milliseconds, under no_grad."""
    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            module(x)
            times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 2),
        "min_ms": round(times[0], 2),
    }


def bench_model(name: str, runs: int) -> dict:
    torch.manual_seed(0)
    model = build_model(name).eval()
    size, ctx = model.visual.image_size, model.text.context_length
    image = torch.rand(1, 3, size, size)
    tokens = torch.randint(1, 49000, (1, ctx))
    tokens[0, 12] = EOT_ID
    result = {"image_size": size, "context_length": ctx}
    towers = {"image": (model.visual, image), "text": (model.text, tokens)}
    for tower, (module, x) in towers.items():
        entry = {"params": count_params(module), "eager": latency_ms(module, x, runs)}
        if not is_reparameterized(module):
            folded = reparameterize(copy.deepcopy(module))
            entry["folded"] = latency_ms(folded, x, runs)
        result[tower] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    results = {name: bench_model(name, args.runs) for name in REAL_SIZE}
    s0, b16 = results["mobileclip_s0"]["image"], results["vit_b16"]["image"]["eager"]["p50_ms"]
    summary = {
        "device": f"host CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "batch": 1,
        "runs": args.runs,
        "models": results,
        "s0_image_over_vit_b16_image": {
            "eager": round(s0["eager"]["p50_ms"] / b16, 3),
            "folded": round(s0["folded"]["p50_ms"] / b16, 3),
        },
        "descriptions": {name: model_config(name)["description"] for name in REAL_SIZE},
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
