"""Export benchmark: size, export and load time, latency, parity of each target × precision.

Goal: INT8 ≥ 2× faster than fp32 on at least one runtime for the real-size image towers; files
≤ 0.3× fp32.

For each model (the demo recipe's student, MobileCLIP-S0, TinyCLIP ViT-8M/16 and, on request,
the PE-Core-S/16-shaped ``pe_core_s16_384`` at 384 px; random weights: latency does not depend
on them) it counts the parameters per tower (beside open_clip's model of the same architecture,
built on the meta device, and the figures its authors publish where the script knows them), and
for each tower times the folded fp32 tower in eager PyTorch as
the reference, then exports it with every registered target (``export.exporters``) at each of its
precisions into a temporary folder and records the model's size in bytes, the export time, the
load time, the first inference, p50/p90/mean/min latency over ``--runs`` timed runs (more if they
take less than ``--min-seconds``) after ``--warmup`` untimed ones, and the max-abs difference and
cosine to the eager output on the same input. A target whose runtime cannot run here (Core ML off
macOS) gets size, export time and what its exporter checks without running it (Core ML: the
saved spec read back: inputs, outputs, precision, weight dtypes), and its reason in place of the
latency. A tower's cases (eager and every artifact, w8/w4 included) are timed interleaved: one
call of each in turn, the order reversed every round, so that the drift of a shared CPU falls on
all of them alike; beside the wall times, the CPU time per call (``cpu_p50_ms``). ``--ops`` adds
each ExecuTorch artifact's time per operator kind from an ETDump of a separate profiled pass
(``ops_ms``: XNNPACK kernels by kind, ops outside the delegate as portable kernels).
``--executorch-threads`` sets the ExecuTorch runtime's thread pool (default: one per core).

int8 is the W8A8 PT2E graph (:func:`compress.quant.ptq.quantize`, min-max calibration on
``--calibration-batches`` batches of 8 random images and random token rows, so that no range is
degenerate); the values of the weights and ranges change no kernel and no shape, so latency does
not depend on them. An int8 row's parity is to the INT8 simulation in PyTorch (what the exporters
must reproduce), and ``vs_fp32`` is its cosine to the fp32 eager output (random weights: a
check that the graph is the model, not an accuracy).

w8 and w4 are the weight-only simulation of the tower (:func:`compress.quant.weight_only.quantize_tower`,
no calibration), each row's parity to that simulation and ``vs_fp32`` its cosine to fp32. The
issue-28 goal for them: w4 files ≤ 0.16× fp32 for the real-size text towers.

Prints JSON: a header (CPU, threads, library versions), the results, the fp16/fp32 p50 ratio,
the int8 size and p50 against fp32, and the w8/w4 size, parity and p50 against fp32, per model,
tower and target. Everything is measured in one
run, because timings on a shared CPU drift by ±20% between runs; progress goes to stderr.

Run: python benchmarks/export_targets.py [--models mobileclip_s0 pe_core_s16_384] [--targets onnx]
     [--towers text] [--precisions fp32 w8 w4] [--runs 50] [--ops] [--executorch-threads 1]
     [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from compress.compat import torch_export_quiet
from compress.io import write_json
from compress.models import CLIP, ModelRecord, build_model, count_params, reparameterize
from compress.models.clip import NormalizedTower
from compress.precision import machine
from compress.quant.ptq import QuantizedCLIP, quantize
from compress.quant.weight_only import PRECISIONS as WEIGHT_ONLY
from compress.quant.weight_only import quantize_tower
from compress.tokenizer import EOT_ID
from edgeclip.recipe import QuantConfig, load_recipe
from export import exporters
from export.manifest import library_versions
from export.profile.etdump import etdump_ops

DEMO_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "demo.yaml"
MODELS = ("demo_student", "mobileclip_s0", "tinyclip_vit_8m_16", "pe_core_s16_384")
DEFAULT_MODELS = MODELS[:3]  # PE-Core-S's 384 px image tower takes minutes more: on request
# open_clip's architecture of the same shape, counted beside ours
OPEN_CLIP = {"pe_core_s16_384": "PE-Core-S-16-384"}
# the authors' own figures (rounded): Meta's PE model table (facebookresearch/perception_models,
# apps/pe/README.md) gives PE-Core S/16 as 0.02B vision and 0.04B text parameters
PUBLISHED = {"pe_core_s16_384": {"image": "0.02B", "text": "0.04B"}}
INPUT_NAMES = {"image": "image", "text": "tokens"}

# times calls interleaved: latency() with its settings, a latency dict per named call
Measure = Callable[[dict[str, Callable[[], object]]], dict[str, dict]]


def build(name: str) -> CLIP:
    """A randomly initialised model, folded for deployment; the demo student with its recipe's
    attention variants (clipped softmax in the image tower, gated attention in the text one)."""
    torch.manual_seed(0)
    if name == "demo_student":
        distill = load_recipe(DEMO_RECIPE).distill
        attention = {"image": distill.attention.image.spec(), "text": distill.attention.text.spec()}
        model = ModelRecord.named(distill.model, attention).build()
    else:
        model = build_model(name)
    return reparameterize(copy.deepcopy(model.eval()))


def parameters(name: str, model: CLIP) -> dict:
    """Parameter counts per tower and in all; the text tower also without its token table (the
    convention of some published figures); open_clip's and the published ones where known."""
    text = count_params(model.text)
    counts = {
        "image": count_params(model.visual),
        "text": text,
        "text_without_token_table": text - model.text.token_embed.weight.numel(),
        "total": count_params(model),
    }
    if name in OPEN_CLIP:
        from compress.compat import open_clip

        with torch.device("meta"):  # shapes only: no memory, no time
            theirs = open_clip().create_model(OPEN_CLIP[name], pretrained=None, device="meta")
        counts["open_clip"] = {
            "architecture": OPEN_CLIP[name],
            "image": count_params(theirs.visual),
            "text": count_params(theirs.text),
            "total": count_params(theirs),
        }
    if name in PUBLISHED:
        counts["published"] = PUBLISHED[name]
    return counts


def examples(model: CLIP) -> dict[str, torch.Tensor]:
    """One batch-1 input per tower: a random image, random tokens with an EOT in the middle."""
    size, context = model.visual.image_size, model.text.context_length
    tokens = torch.randint(1, 49000, (1, context))
    tokens[0, context // 2] = EOT_ID
    return {"image": torch.rand(1, 3, size, size), "text": tokens}


def calibration(model: CLIP, batches: int, batch_size: int = 8) -> list[dict]:
    """Random calibration batches: uniform images, random token rows with an EOT each. They make
    no range degenerate (an all-zero input would give scales of ``eps``); what the ranges are
    changes no kernel, so latency does not depend on them."""
    size, context = model.visual.image_size, model.text.context_length
    out = []
    for _ in range(batches):
        tokens = torch.randint(1, 49000, (batch_size, context))
        tokens[torch.arange(batch_size), torch.randint(1, context, (batch_size,))] = EOT_ID
        out.append({"image": torch.rand(batch_size, 3, size, size), "text": tokens})
    return out


def latency(
    calls: dict[str, Callable[[], object]], runs: int, warmup: int, min_seconds: float
) -> dict[str, dict]:
    """Wall time in milliseconds of each named call, after ``warmup`` untimed calls of each:
    interleaved rounds of one call each, in reversed order every other round (a drift of the
    shared machine's speed, or a neighbour's burst, reaches every case alike), at least
    ``runs`` rounds and at least ``min_seconds`` per case, so that a brief stall cannot move
    the median of a sub-millisecond model. Beside the wall times: the median CPU time of this
    process per call (``cpu_p50_ms``), which the time other jobs hold the cores does not add
    to (the latency itself where the runtime runs one thread)."""
    for run in calls.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    deadline = time.perf_counter() + min_seconds * len(calls)
    while len(times[order[0]]) < runs or time.perf_counter() < deadline:
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            calls[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
            cpu[name].append((time.process_time() - start_cpu) * 1e3)
        order.reverse()
    return {name: _stats(sorted(times[name]), cpu[name]) for name in calls}


def _stats(times: list[float], cpu: list[float]) -> dict:
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 3),
        "mean_ms": round(statistics.fmean(times), 3),
        "min_ms": round(times[0], 3),
        "cpu_p50_ms": round(statistics.median(cpu), 3),
        "runs": len(times),
    }


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """``fn()`` and the seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def size_bytes(path: Path) -> int:
    """A model file's size, or the sum of the files of a bundle folder (``model.mlpackage``)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def parity(out: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max-abs difference and the lowest per-row cosine of two embedding batches."""
    out, reference = out.astype(np.float64), reference.astype(np.float64)
    cosine = (out * reference).sum(-1) / (
        np.linalg.norm(out, axis=-1) * np.linalg.norm(reference, axis=-1)
    )
    return {
        "max_abs_diff": float(np.abs(out - reference).max()),
        "cosine_min": float(cosine.min()),
    }


def bench_target(
    target_name: str,
    precision: str,
    module: torch.nn.Module,
    x: torch.Tensor,
    input_name: str,
    reference: np.ndarray,
    folder: Path,
    fp32_reference: np.ndarray | None = None,
) -> tuple[dict, Callable[[], object] | None]:
    """Export ``module`` with one target at one precision into ``folder``; its row (size,
    export and load time, first inference, parity to ``reference`` and, where that differs, the
    cosine to ``fp32_reference``) and the call that runs it (None where it cannot run here)."""
    target = exporters.get(target_name)()
    path = folder / target.file_name
    with torch_export_quiet():
        details, export_s = timed(lambda: target.export(module, x, path, input_name, precision))
    row = {"bytes": size_bytes(path), "export_s": round(export_s, 2)}
    if details.get("kernels"):  # ExecuTorch: the operators no delegate took, by library
        row["kernels"] = details["kernels"]
    if "spec_checks" in details:  # Core ML: its saved spec read back (a failure raises)
        keys = ("spec_checks", "compute_precision", "weight_dtypes")
        row |= {key: details[key] for key in keys}
    unrunnable = target.runs_here()
    if unrunnable is not None:
        return row | {"latency": unrunnable}, None
    batch = x.numpy()
    with torch_export_quiet():
        runner, load_s = timed(lambda: target.load(path))
        out, first_s = timed(lambda: runner(batch))
    row |= {
        "load_s": round(load_s, 3),
        "first_inference_ms": round(first_s * 1e3, 2),
        **parity(np.asarray(out), reference),
    }
    if fp32_reference is not None:
        row["vs_fp32"] = {"cosine_min": parity(np.asarray(out), fp32_reference)["cosine_min"]}
    return row, lambda: runner(batch)


def executorch_ops(folder: Path, x: torch.Tensor, runs: int) -> dict[str, float]:
    """Milliseconds per inference by operator kind of the ExecuTorch program in ``folder``: an
    ETDump of ``runs`` runs of a separately loaded, profiled program, read with its ETRecord."""
    from executorch.runtime import Runtime

    # debug_buffer_size=0: events only (a too-small buffer aborts the process)
    program = Runtime.get().load_program(
        str(folder / "model.pte"), enable_etdump=True, debug_buffer_size=0
    )
    method = program.load_method("forward")
    for _ in range(runs):
        method.execute([x.contiguous()])
    program.write_etdump_result_to_file(str(folder / "etdump.bin"), str(folder / "etdump.debug"))
    ops = etdump_ops(folder / "etdump.bin", folder / "etrecord.bin")
    return {kind: round(ms, 3) for kind, ms in sorted(ops.items(), key=lambda kv: -kv[1])}


def bench_tower(
    label: str,
    module: torch.nn.Module,
    int8: torch.nn.Module | None,
    x: torch.Tensor,
    input_name: str,
    targets: list[str],
    measure: Measure,
    precisions: list[str],
    ops_runs: int = 0,
) -> dict:
    """The eager fp32 reference and every target × precision for one tower, timed together;
    int8 exports ``int8`` (the tower's converted PT2E graph), checked against its simulation in
    PyTorch, and w8/w4 the tower's weight-only simulation, checked against it. With
    ``ops_runs``, ExecuTorch rows get their per-operator times (``ops_ms``)."""
    # built outside inference mode: exporters trace it, and inference tensors refuse tracing
    weight_only = {p: quantize_tower(module, p) for p in WEIGHT_ONLY if p in precisions}
    with torch.inference_mode():
        reference = module(x).numpy()
        simulated = int8(x).numpy() if int8 is not None else None
        weight_only_out = {p: sim(x).numpy() for p, sim in weight_only.items()}
    entry: dict = {"input_shape": list(x.shape)}
    calls: dict[str, Callable[[], object]] = {
        "eager_fp32": torch.inference_mode()(lambda: module(x))
    }
    folders: dict[str, Path] = {}
    with contextlib.ExitStack() as stack:
        for target in targets:
            for precision in exporters.get(target).precisions:
                if precision not in precisions or precision == "int8" and int8 is None:
                    continue
                case = f"{target}-{precision}"
                print(f"{label} {case}", file=sys.stderr, flush=True)  # progress
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
                try:
                    if precision == "int8":
                        row, call = bench_target(
                            target, precision, int8, x, input_name, simulated, folder, reference
                        )
                    elif precision in WEIGHT_ONLY:
                        sim, out = weight_only[precision], weight_only_out[precision]
                        row, call = bench_target(
                            target, precision, sim, x, input_name, out, folder, reference
                        )
                    else:
                        row, call = bench_target(
                            target, precision, module, x, input_name, reference, folder
                        )
                except Exception as error:  # one failed case must not lose the run's other rows
                    row, call = (
                        {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"},
                        None,
                    )
                entry[case] = row
                if call is not None:
                    calls[case], folders[case] = call, folder
        print(f"{label} timing {len(calls)} cases interleaved", file=sys.stderr, flush=True)
        with torch_export_quiet():
            for case, stats in measure(calls).items():
                if case == "eager_fp32":
                    entry[case] = stats
                else:
                    entry[case]["latency"] = stats
            if ops_runs:
                for case, folder in folders.items():
                    if case.startswith("executorch-"):
                        entry[case]["ops_ms"] = executorch_ops(folder, x, ops_runs)
    return entry


def bench_model(
    name: str,
    targets: list[str],
    measure: Measure,
    calibration_batches: int,
    towers: list[str],
    precisions: list[str],
    ops_runs: int = 0,
) -> dict:
    model = build(name)
    inputs = examples(model)
    modules = {"image": model.visual, "text": model.text}
    quantized: QuantizedCLIP | None = None
    if calibration_batches > 0 and "int8" in precisions:
        print(f"{name} quantize", file=sys.stderr, flush=True)  # progress
        with torch_export_quiet():
            quantized, quantize_s = timed(
                lambda: quantize(model, QuantConfig(), calibration(model, calibration_batches))
            )
    results = {"parameters": parameters(name, model)}
    results |= {
        tower: bench_tower(
            f"{name} {tower}",
            NormalizedTower(module).eval(),
            quantized.graph(tower) if quantized is not None else None,
            inputs[tower],
            INPUT_NAMES[tower],
            targets,
            measure,
            precisions,
            ops_runs,
        )
        for tower, module in modules.items()
        if tower in towers
    }
    if quantized is not None:
        results["quantize_s"] = round(quantize_s, 2)  # prepare + calibrate + convert, both towers
    return results


def fp16_vs_fp32(results: dict, targets: list[str]) -> dict:
    """Latency at fp16 over latency at fp32 (> 1: fp16 is slower), per model, tower and target:
    of the medians, and of the fastest runs (steadier where a shared machine makes one case's
    timings bimodal)."""
    ratios = {}
    for model, towers in results.items():
        for tower, entry in _towers(towers):
            for target in targets:
                half = entry.get(f"{target}-fp16", {}).get("latency")
                full = entry.get(f"{target}-fp32", {}).get("latency")
                if isinstance(half, dict) and isinstance(full, dict):
                    ratio = {
                        "p50": round(half["p50_ms"] / full["p50_ms"], 3),
                        "min": round(half["min_ms"] / full["min_ms"], 3),
                    }
                    ratios.setdefault(model, {}).setdefault(tower, {})[target] = ratio
    return ratios


def int8_vs_fp32(results: dict, targets: list[str]) -> dict:
    """Per model, tower and target: the int8 file's size over the fp32 one's (goal ≤ 0.3) and
    the p50 speed-up, fp32 p50 over int8 p50 (goal ≥ 2 on at least one runtime for the
    real-size image towers), with both p50s, and the same of the CPU-time medians; where a side
    has no latency (an error, or a runtime that cannot run here), only what was measured."""
    table = {}
    for model, towers in results.items():
        for tower, entry in _towers(towers):
            for target in targets:
                full, int8 = entry.get(f"{target}-fp32", {}), entry.get(f"{target}-int8")
                if int8 is None:
                    continue
                row = {}
                if "bytes" in full and "bytes" in int8:
                    row["size_ratio"] = round(int8["bytes"] / full["bytes"], 3)
                    row["bytes"] = {"fp32": full["bytes"], "int8": int8["bytes"]}
                slow, fast = full.get("latency"), int8.get("latency")
                if isinstance(slow, dict) and isinstance(fast, dict):
                    row["speedup_p50"] = round(slow["p50_ms"] / fast["p50_ms"], 2)
                    row["p50_ms"] = {"fp32": slow["p50_ms"], "int8": fast["p50_ms"]}
                    row["speedup_cpu_p50"] = round(slow["cpu_p50_ms"] / fast["cpu_p50_ms"], 2)
                    row["cpu_p50_ms"] = {"fp32": slow["cpu_p50_ms"], "int8": fast["cpu_p50_ms"]}
                if "error" in int8:
                    row["error"] = int8["error"]
                table.setdefault(model, {}).setdefault(tower, {})[target] = row
    return table


def weight_only_vs_fp32(results: dict, targets: list[str]) -> dict:
    """Per model, tower, target and weight-only precision: the file's size over the fp32 one's
    (goal for w4 ≤ 0.16 on the real-size text towers), its parity to the simulation (min
    cosine, max-abs) and its cosine to fp32, and the p50 speed-up over fp32 where both ran (of
    the wall times and of the CPU times)."""
    table = {}
    for model, towers in results.items():
        for tower, entry in _towers(towers):
            for target in targets:
                full = entry.get(f"{target}-fp32", {})
                for precision in WEIGHT_ONLY:
                    low = entry.get(f"{target}-{precision}")
                    if low is None:
                        continue
                    row = {k: low[k] for k in ("error", "cosine_min", "max_abs_diff") if k in low}
                    if "bytes" in full and "bytes" in low:
                        row["size_ratio"] = round(low["bytes"] / full["bytes"], 3)
                        row["bytes"] = {"fp32": full["bytes"], precision: low["bytes"]}
                    if "vs_fp32" in low:
                        row["vs_fp32_cosine_min"] = low["vs_fp32"]["cosine_min"]
                    slow, fast = full.get("latency"), low.get("latency")
                    if isinstance(slow, dict) and isinstance(fast, dict):
                        row["speedup_p50"] = round(slow["p50_ms"] / fast["p50_ms"], 2)
                        row["p50_ms"] = {"fp32": slow["p50_ms"], precision: fast["p50_ms"]}
                        row["speedup_cpu_p50"] = round(slow["cpu_p50_ms"] / fast["cpu_p50_ms"], 2)
                        row["cpu_p50_ms"] = {
                            "fp32": slow["cpu_p50_ms"],
                            precision: fast["cpu_p50_ms"],
                        }
                    elif isinstance(fast, str):
                        row["latency"] = fast
                    table.setdefault(model, {}).setdefault(tower, {}).setdefault(target, {})[
                        precision
                    ] = row
    return table


def _towers(entries: dict) -> list[tuple[str, dict]]:
    """A model's tower entries (its other keys are ``parameters`` and numbers such as
    ``quantize_s``)."""
    return [(tower, entries[tower]) for tower in INPUT_NAMES if tower in entries]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(DEFAULT_MODELS))
    parser.add_argument(
        "--targets", nargs="+", choices=exporters.names(), default=exporters.names()
    )
    parser.add_argument("--towers", nargs="+", choices=["image", "text"], default=["image", "text"])
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "fp16", "int8", *WEIGHT_ONLY],
        default=["fp32", "fp16", "int8", *WEIGHT_ONLY],
        help="fp32 is the reference of every ratio",
    )
    parser.add_argument("--runs", type=int, default=50, help="timed runs per case")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before timing")
    parser.add_argument(
        "--min-seconds", type=float, default=1.0, help="keep timing a case at least this long"
    )
    parser.add_argument(
        "--calibration-batches",
        type=int,
        default=4,
        help="random batches of 8 that calibrate the int8 ranges; 0 skips int8",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch's")
    parser.add_argument(
        "--executorch-threads", type=int, help="the ExecuTorch runtime's (default: one per core)"
    )
    parser.add_argument(
        "--ops",
        type=int,
        nargs="?",
        const=10,
        default=0,
        help="ExecuTorch rows: time per operator kind from an ETDump of this many runs (10)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.executorch_threads:
        from executorch.extension.pybindings import _C

        _C._unsafe_reset_threadpool(args.executorch_threads)
    start = time.perf_counter()
    measure = functools.partial(
        latency, runs=args.runs, warmup=args.warmup, min_seconds=args.min_seconds
    )
    results = {
        name: bench_model(
            name,
            args.targets,
            measure,
            args.calibration_batches,
            args.towers,
            args.precisions,
            args.ops,
        )
        for name in args.models
    }
    summary = {
        "machine": machine(),  # CPU, capability, fp32 and bf16 GEMM rates
        "torch_threads": torch.get_num_threads(),
        "runtime_threads": "onnxruntime: one per physical core; ExecuTorch: "
        + (str(args.executorch_threads) if args.executorch_threads else "one per core"),
        "timing": "each tower's cases interleaved, one call each per round, order reversed "
        "every round",
        "batch": 1,
        "runs": args.runs,
        "warmup": args.warmup,
        "min_seconds": args.min_seconds,
        "libraries": library_versions(),
        "weights": "random init, folded (reparameterized), fp32 eager reference",
        "int8": "W8A8 PT2E (QuantConfig defaults, min-max) calibrated on "
        f"{args.calibration_batches} random batches of 8; parity to the INT8 simulation",
        "models": results,
        "fp16_vs_fp32": fp16_vs_fp32(results, args.targets),
        "int8_vs_fp32": int8_vs_fp32(results, args.targets),
        "weight_only": "w8: int8 weights per output channel, w4: int4 per group of 32 (convolutions "
        "and layers not in whole groups 8-bit); parity to the weight-only simulation",
        "weight_only_vs_fp32": weight_only_vs_fp32(results, args.targets),
        "total_s": round(time.perf_counter() - start, 1),
    }
    if args.out is not None:
        write_json(args.out, summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
