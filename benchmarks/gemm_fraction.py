"""Profile benchmark: how close each runtime gets to this CPU's GEMM rate on real-size image towers.

Goals: at least 0.6 of the fp32 GEMM rate for one runtime on the fp32 ViT towers; the int8
artifacts' fraction of the int8 GEMM rate reported; the MobileCLIP-style tower faster than
ViT-B/16 by at least the ratio the MobileCLIP paper gives for S0 against ViT-B/16 (4.8×, whole
model on an iPhone 12 Pro Max).

For each model (``mobileclip_s0``, ``tinyclip_vit_8m_16``, ``vit_b16``; random weights, folded:
latency does not depend on the values) the image tower is exported at batch 1 to ONNX and
ExecuTorch, fp32 and W8A8 int8 (min-max calibration on random images), and timed with the same
code as ``edgeclip profile`` (the host device: a fresh runner process per tower), next to the
model file in torch eager. FLOPs are counted by torch's FLOP counter (2 per multiply-add, the
GEMM rate's convention); a record's ``gemm_fraction`` is its achieved GFLOP/s over the GEMM rate
the same profile measured (int8 artifacts against the int8 GEMM, ``torch._int_mm``).

Prints JSON: the CPU, the GEMM rates and, per model and runtime, p50 latency, FLOPs, achieved
GFLOP/s, the fraction of the GEMM rate and the top operators; then ViT-B/16's p50 over
MobileCLIP-S0's per runtime. Run it alone: other work on the 2 cores moves every number.

Run: python benchmarks/gemm_fraction.py [--models vit_b16] [--runs 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from compress.compat import torch_export_quiet
from compress.io import write_json
from compress.models import ModelRecord, build_model, reparameterize, save_model
from compress.models.clip import NormalizedTower
from compress.precision import machine
from compress.quant.ptq import quantize
from compress.tokenizer import EOT_ID
from edgeclip.recipe import QuantConfig
from export import exporters
from export.manifest import library_versions, sha256_file, tensor_spec
from export.profile.devices import Settings, Tower
from export.profile.flops import count_flops
from export.profile.profiler import PYTORCH, profile, pytorch_towers

MODELS = ("mobileclip_s0", "tinyclip_vit_8m_16", "vit_b16")
ARTIFACTS = ("onnx-fp32", "executorch-fp32", "onnx-int8", "executorch-int8")
PAPER_S0_VS_VIT_B16 = 4.8  # MobileCLIP (Vasu et al. 2024): S0 4.8× faster than ViT-B/16 CLIP


def calibration(model, batches: int = 4, batch_size: int = 8) -> list[dict]:
    """Random calibration batches (no degenerate range); the ranges change no kernel."""
    size, context = model.visual.image_size, model.text.context_length
    out = []
    for _ in range(batches):
        tokens = torch.randint(1, 49000, (batch_size, context))
        tokens[:, context // 2] = EOT_ID
        out.append({"image": torch.rand(batch_size, 3, size, size), "text": tokens})
    return out


def image_towers(name: str, folder: Path) -> list[Tower]:
    """The model's image tower exported as each of :data:`ARTIFACTS`, plus its model file in
    torch eager, each described as the profiler reads it."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    model_file = folder / "model.pt"
    save_model(model, ModelRecord.named(name), model_file)
    folded = reparameterize(model)
    example = torch.rand(1, 3, model.visual.image_size, model.visual.image_size)
    float_tower = NormalizedTower(folded.visual).eval()
    flops = count_flops(float_tower, example)
    quantized = None
    towers = [t for t in pytorch_towers(model_file) if t.manifest["tower"] == "image"]
    for artifact in ARTIFACTS:
        target_name, precision = artifact.rsplit("-", 1)
        if precision == "int8" and quantized is None:
            print(f"{name}: quantize", file=sys.stderr, flush=True)
            quantized = quantize(folded, QuantConfig(), calibration(folded))
        module = quantized.graph("image") if precision == "int8" else float_tower
        target = exporters.get(target_name)()
        out = folder / artifact / "image"
        out.mkdir(parents=True)
        print(f"{name}: export {artifact}", file=sys.stderr, flush=True)
        with torch_export_quiet():
            details = target.export(module, example, out / target.file_name, "image", precision)
        manifest = {
            "model": name,
            "tower": "image",
            "target": target_name,
            "precision": precision,
            "file": target.file_name,
            "sha256": sha256_file(out / target.file_name),
            "inputs": [tensor_spec("image", example.shape, "float32")],
            "flops": flops,
            "format": details,
        }
        towers.append(Tower(out, manifest, artifact))
    return towers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    settings = Settings(runs=args.runs, warmup=args.warmup)
    results: dict = {}
    gemm = None
    for name in args.models:
        with tempfile.TemporaryDirectory(prefix=f"profile-{name}-") as tmp:
            towers = image_towers(name, Path(tmp))
            done = profile(tmp, "host", Path(tmp) / "records", settings, towers=towers)
            rows = {}
            for artifact, paths in done["records"].items():
                record = json.loads(Path(paths["image"]).read_text())
                gemm = record["gemm_gflops"]
                rows[artifact] = {
                    "runtime": record["runtime"],
                    "p50_ms": round(record["latency_ms"]["p50"], 2),
                    "gflop": round(record["flops"] / 1e9, 3),
                    "achieved_gflops": round(record["achieved_gflops"], 1),
                    "gemm_fraction": round(record["gemm_fraction"], 3),
                    "top_ops": [
                        f"{op['op']} {100 * op['share']:.0f}%" for op in (record["ops"] or [])[:3]
                    ],
                }
            results[name] = rows
    ratios = {}
    if "vit_b16" in results and "mobileclip_s0" in results:
        for artifact in (PYTORCH, *ARTIFACTS):
            vit, s0 = results["vit_b16"].get(artifact), results["mobileclip_s0"].get(artifact)
            if vit and s0:
                ratios[artifact] = round(vit["p50_ms"] / s0["p50_ms"], 2)
    report = {
        "machine": machine(),  # CPU, capability, fp32 and bf16 GEMM rates
        "threads": torch.get_num_threads(),
        "libraries": library_versions(),
        "gemm_gflops": {k: round(v, 1) for k, v in (gemm or {}).items()},
        "image_towers": results,
        "vit_b16_over_mobileclip_s0_p50": ratios,
        "paper_s0_speedup_over_vit_b16": PAPER_S0_VS_VIT_B16,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        write_json(Path(args.out), report)


if __name__ == "__main__":
    main()
