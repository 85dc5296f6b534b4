"""Model-zoo benchmark: eager forward latency of every real-size tower, batch 1, on the host CPU.

Prints JSON: per model and tower, the median and p90 of N timed runs after warm-up, for the
train-time model and, where it has train-time branches, the folded (reparameterized) one; and
every image tower's folded latency over ViT-B/16's. Models: the registry's real-size ones
(``mobileclip_s0`` is Apple's MobileCLIP-S0) and the MobileCLIPs only the loaders build
(MobileCLIP-B's conv-stem ViT, MobileCLIP2-S3/S4's MCi3/4), all random init.

With ``--onnx``, each model is also exported to ONNX fp32 (folded, as the pipeline exports) and
checked against PyTorch on four held-out scenes samples: the parity per tower and the file sizes.

Run: python benchmarks/zoo.py [--runs 20] [--models vit_b16 openclip:MobileCLIP2-S3 ...] [--onnx]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from compress.models import count_params, is_reparameterized, reparameterize
from compress.models.given import load_given
from compress.tokenizer import EOT_ID

REAL_SIZE = ["mobileclip_s0", "tinyclip_vit_8m_16", "tinyclip_vit_39m_16", "vit_b16", "vit_b32"]
LOADED = ["openclip:MobileCLIP-B", "openclip:MobileCLIP2-S3", "openclip:MobileCLIP2-S4"]


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
    model, record = load_given(name)
    model.eval()
    size, ctx = model.visual.image_size, model.text.context_length
    image = torch.rand(1, 3, size, size)
    tokens = torch.randint(1, 49000, (1, ctx))
    tokens[0, 12] = EOT_ID
    result = {
        "description": record.config["description"],
        "image_size": size,
        "context_length": ctx,
    }
    towers = {"image": (model.visual, image), "text": (model.text, tokens)}
    for tower, (module, x) in towers.items():
        entry = {"params": count_params(module), "eager": latency_ms(module, x, runs)}
        if not is_reparameterized(module):
            folded = reparameterize(copy.deepcopy(module))
            entry["folded"] = latency_ms(folded, x, runs)
        result[tower] = entry
    return result


def onnx_parity(name: str) -> dict:
    """Export ``name`` (random init) to ONNX fp32 and check it as the pipeline does."""
    from compress.data.heldout import heldout_samples
    from export.driver import export_model

    torch.manual_seed(0)
    model, record = load_given(name)
    images, tokens = heldout_samples(record, 4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = export_model(
            model.eval(),
            record,
            Path(tmp) / "onnx-fp32",
            target="onnx",
            precision="fp32",
            sample_images=images,
            sample_tokens=tokens,
        )
    result = {"seconds": round(time.perf_counter() - start, 1)}
    for tower in ("image", "text"):
        parity = summary[tower]["parity"]
        result[tower] = {
            "parity": parity["status"],
            "max_abs": parity["max_abs"],
            "cosine_min": parity["cosine_min"],
            "mb": round(summary[tower]["bytes"] / 1e6, 1),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=REAL_SIZE + LOADED)
    parser.add_argument("--onnx", action="store_true", help="also export to ONNX with parity")
    args = parser.parse_args()
    names = args.models if "vit_b16" in args.models else ["vit_b16", *args.models]
    results = {name: bench_model(name, args.runs) for name in names}
    if args.onnx:
        for name in names:
            results[name]["onnx_fp32"] = onnx_parity(name)
    b16 = results["vit_b16"]["image"]["eager"]["p50_ms"]
    summary = {
        "device": f"host CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "batch": 1,
        "runs": args.runs,
        "models": results,
        "image_over_vit_b16_image": {  # folded (as exported) where the tower folds
            name: round(r["image"].get("folded", r["image"]["eager"])["p50_ms"] / b16, 3)
            for name, r in results.items()
        },
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
