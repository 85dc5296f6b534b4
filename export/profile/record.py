"""Profile records (docs/design.md): one JSON object per tower, artifact and device.

A device measures (a :class:`Measurement`: raw per-run times and what its runtime reports);
:func:`profile_record` turns a measurement and the tower's manifest into the record every
device writes alike: statistics computed here from the raw times, FLOPs from the manifest,
the achieved fraction of the device's GEMM rate, the top operators.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.io import write_json

RECORD_VERSION = 1
TOP_OPS = 10
# Every record has these keys (values may be None where a device cannot measure them).
FIELDS = (
    "record_version",
    "model",
    "tower",
    "artifact",
    "target",
    "precision",
    "runtime",
    "compute_unit",
    "device",
    "input",
    "sha256",
    "threads",
    "warmup",
    "runs",
    "load_ms",
    "first_inference_ms",
    "latency_ms",
    "peak_rss_mb",
    "flops",
    "achieved_gflops",
    "gemm_gflops",
    "gemm_fraction",
    "ops",
    "environment",
    "measured_at",
)
LATENCY_KEYS = ("p50", "p90", "mean", "min", "max")


@dataclass
class Measurement:
    """What a device measured for one tower, in its own runtime.

    Attributes:
        runtime: the runtime and its version ("onnxruntime 1.31.1", "executorch 1.5.1 …").
        compute_unit: where it ran ("CPUExecutionProvider", "xnnpack", "cpu_and_gpu" …).
        times_ms: each timed run's latency, after the warm-up runs.
        load_ms: loading the model file into the runtime, ready to run.
        first_inference_ms: the first run after loading (warm-up included nowhere else).
        threads: the thread count the runtime was given (None: its default).
        peak_rss_mb: the measuring process's peak resident memory, where measurable.
        ops: milliseconds per inference by operator kind, where the runtime profiles them.
        gemm_gflops: the device's achieved rate on a large GEMM, by precision ("fp32", "int8").
        device: what the device is (kind, name, CPU/SoC, cores, OS).
        environment: runtime library versions and whatever else the device reports.
    """

    runtime: str
    compute_unit: str
    times_ms: list[float]
    load_ms: float | None = None
    first_inference_ms: float | None = None
    threads: int | None = None
    peak_rss_mb: float | None = None
    ops: dict[str, float] | None = None
    gemm_gflops: dict[str, float] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: dict[str, Any], **changes: Any) -> Measurement:
        """The measurement a runner printed or an app wrote (the record's field names), with
        ``changes`` where the caller knows better."""
        keys = ("runtime", "compute_unit", "times_ms", "load_ms", "first_inference_ms")
        keys += ("threads", "peak_rss_mb", "ops", "device", "environment")
        return cls(**{key: result.get(key) for key in keys} | changes)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation between closest ranks
    (numpy's default), e.g. ``percentile([1, 2, 3, 4], 50) == 2.5``."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(times_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, mean, min and max of per-run latencies (milliseconds)."""
    if not times_ms:
        raise ValueError("no timed runs to summarize")
    return {
        "p50": percentile(times_ms, 50),
        "p90": percentile(times_ms, 90),
        "mean": sum(times_ms) / len(times_ms),
        "min": min(times_ms),
        "max": max(times_ms),
    }


def top_ops(ops_ms: Mapping[str, float], top: int = TOP_OPS) -> list[dict[str, Any]]:
    """The ``top`` operator kinds by time per inference, each with its share of all of them."""
    total = sum(ops_ms.values())
    ranked = sorted(ops_ms.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [{"op": op, "ms": ms, "share": ms / total if total > 0 else 0.0} for op, ms in ranked]


def reference_rate(measurement: Measurement, precision: str) -> float | None:
    """The GEMM rate a tower's achieved rate is a fraction of: fp32 and fp16 artifacts against
    the fp32 GEMM; int8 ones against the int8 GEMM of their own runtime's kernels, measured for
    onnxruntime only (XNNPACK's int8 GEMM has no reference here, so no fraction)."""
    if precision != "int8":
        return measurement.gemm_gflops.get("fp32")
    if measurement.runtime.startswith("onnxruntime"):
        return measurement.gemm_gflops.get("int8")
    return None


def profile_record(
    measurement: Measurement,
    manifest: Mapping[str, Any],
    *,
    artifact: str,
    warmup: int,
) -> dict[str, Any]:
    """The profile record of one tower: the manifest's model facts, the measured statistics,
    FLOPs per inference (counted at export, in the manifest) over the p50 latency, and that
    rate's fraction of the device's GEMM rate at the artifact's precision
    (:func:`reference_rate`)."""
    latency = summarize(measurement.times_ms)
    flops = manifest.get("flops")
    achieved = flops / (latency["p50"] * 1e6) if flops and latency["p50"] > 0 else None
    gemm = reference_rate(measurement, manifest["precision"])
    (spec,) = manifest["inputs"]
    return {
        "record_version": RECORD_VERSION,
        "model": manifest["model"],
        "tower": manifest["tower"],
        "artifact": artifact,
        "target": manifest["target"],
        "precision": manifest["precision"],
        "runtime": measurement.runtime,
        "compute_unit": measurement.compute_unit,
        "device": measurement.device,
        "input": {k: spec[k] for k in ("name", "shape", "dtype")},
        "sha256": manifest["sha256"],
        "threads": measurement.threads,
        "warmup": warmup,
        "runs": len(measurement.times_ms),
        "load_ms": measurement.load_ms,
        "first_inference_ms": measurement.first_inference_ms,
        "latency_ms": latency,
        "peak_rss_mb": measurement.peak_rss_mb,
        "flops": flops,
        "achieved_gflops": achieved,
        "gemm_gflops": measurement.gemm_gflops or None,
        "gemm_fraction": achieved / gemm if achieved is not None and gemm else None,
        "ops": top_ops(measurement.ops) if measurement.ops else None,
        "environment": measurement.environment,
        # UTC, as the apps write it
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def check_record(record: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first missing or malformed field of a profile record."""
    missing = [key for key in FIELDS if key not in record]
    if missing:
        raise ValueError(f"profile record lacks {', '.join(missing)}")
    if record["record_version"] != RECORD_VERSION:
        raise ValueError(f"record_version {record['record_version']!r}, expected {RECORD_VERSION}")
    latency = record["latency_ms"]
    if set(latency) != set(LATENCY_KEYS):
        raise ValueError(f"latency_ms has {sorted(latency)}, expected {list(LATENCY_KEYS)}")
    if not latency["min"] <= latency["p50"] <= latency["p90"] <= latency["max"]:
        raise ValueError(f"latency_ms out of order: {latency}")
    if record["runs"] < 1:
        raise ValueError(f"runs must be >= 1, got {record['runs']}")
    for op in record["ops"] or []:
        if set(op) != {"op", "ms", "share"} or not 0 <= op["share"] <= 1:
            raise ValueError(f"malformed op entry {op}")


def record_path(out_dir: str | os.PathLike, device: str, artifact: str, tower: str) -> Path:
    """Where a record lives: ``<out>/<device>/<artifact>/<tower>.json``."""
    return Path(out_dir) / device / artifact / f"{tower}.json"


def write_record(path: Path, record: Mapping[str, Any]) -> Path:
    """Write a checked record atomically, as strict JSON."""
    check_record(record)
    write_json(path, dict(record), allow_nan=False)
    return path
