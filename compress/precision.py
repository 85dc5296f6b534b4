"""Training precision chosen by measurement: bf16 autocast only where this machine runs it faster.

Whether bf16 pays off on a CPU is a property of its instructions, not of its name: with AVX-512
BF16 (or AMX) a bf16 matmul runs ~2× fp32's rate, with AVX-512 alone it emulates bf16 at ~0.4×,
and with AVX2 alone at ~1/100 (a demo that trains in minutes would train for hours). So
``precision: auto`` times a bf16 matmul against an fp32 one here (:func:`measure_rates`, well
under a second) and caches the result per machine and torch version in the user's cache folder.
On CUDA it takes bf16 where the GPU has it, else fp16 with loss scaling.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from compress.errors import UserError
from compress.io import write_json

FASTER = 1.3  # auto trains in bf16 only where its matmuls run at least this much faster
SLOWER = 2.0  # an explicit bf16 at least this much slower than fp32 gets a warning line
PROBE_SIZE = 256  # the probe multiplies SIZE × SIZE matrices: the width of small towers' layers
PROBE_SECONDS = 0.05  # each precision is timed for about this long (after one warm-up call)
ROUNDS = 5  # in this many turns, the best one kept
# environment variables that change which kernels torch runs, so they key the cache too
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


@dataclass(frozen=True)
class CpuRates:
    """This CPU's matmul rates in fp32 and bf16, as measured by :func:`measure_rates`."""

    cpu: str  # the CPU's model name
    capability: str  # torch.backends.cpu.get_cpu_capability(): AVX2, AVX512, …
    threads: int
    fp32_gflops: float
    bf16_gflops: float

    @property
    def bf16_speedup(self) -> float:
        return self.bf16_gflops / self.fp32_gflops


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what the platform module says:
    recorded beside every timing."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def measure_rates(size: int = PROBE_SIZE, seconds: float = PROBE_SECONDS) -> CpuRates:
    """Time a ``size``-square matmul in fp32 and in bf16 on this CPU, at torch's thread count.

    After one warm-up call each, the two precisions take turns for :data:`ROUNDS` rounds of
    about ``seconds / ROUNDS`` each (at least one call), and each keeps its best round: another
    process busy on the same cores then slows both alike, or neither in the best round. A CPU
    that emulates bf16 at 1/100 of fp32's rate costs a few slow calls, not a fixed count.
    """
    flop = 2 * size**3
    operands = {
        "fp32": (torch.randn(size, size), torch.randn(size, size)),
        "bf16": (torch.randn(size, size).bfloat16(), torch.randn(size, size).bfloat16()),
    }
    best = dict.fromkeys(operands, 0.0)
    for a, b in operands.values():
        torch.mm(a, b)  # warm-up: kernel selection, first-touch of buffers
    for _ in range(ROUNDS):
        for name, (a, b) in operands.items():
            calls, begin = 0, time.perf_counter()
            while calls == 0 or time.perf_counter() - begin < seconds / ROUNDS:
                torch.mm(a, b)
                calls += 1
            rate = flop * calls / (time.perf_counter() - begin) / 1e9
            best[name] = max(best[name], rate)
    return CpuRates(
        cpu=cpu_model(),
        capability=torch.backends.cpu.get_cpu_capability(),
        threads=torch.get_num_threads(),
        fp32_gflops=best["fp32"],
        bf16_gflops=best["bf16"],
    )


def cache_path() -> Path:
    """Where measured rates are kept: ``$XDG_CACHE_HOME/edgeclip`` (``~/.cache/edgeclip``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "edgeclip" / "cpu_rates.json"


def _machine_key() -> str:
    isa = ",".join(f"{v}={os.environ[v]}" for v in ISA_VARIABLES if v in os.environ)
    return " | ".join(
        [
            cpu_model(),
            torch.backends.cpu.get_cpu_capability(),
            f"torch {torch.__version__}",
            f"{torch.get_num_threads()} threads",
            isa,
        ]
    )


def cpu_rates() -> CpuRates:
    """This machine's :class:`CpuRates`, measured once per machine, torch version, thread count
    and instruction-set override, then read from :func:`cache_path`."""
    path, key = cache_path(), _machine_key()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached.get(key), dict):
        try:
            return CpuRates(**cached[key])
        except TypeError:  # written by another version: measure again
            pass
    rates = measure_rates()
    with contextlib.suppress(OSError):  # a read-only home: measure again next time
        write_json(path, {**cached, key: asdict(rates)})
    return rates


def choose(rates: CpuRates | None, device: torch.device) -> str:
    """What ``precision: auto`` trains in: on CUDA bf16 (fp16 where the GPU lacks it), on a CPU
    bf16 only where ``rates`` show it at least :data:`FASTER` × fp32, elsewhere fp32."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and rates is not None and rates.bf16_speedup >= FASTER:
        return "bf16"
    return "fp32"


def resolve_precision(requested: str, device: torch.device, desc: str) -> dict:
    """The precision a run trains in, and what it was chosen from (for ``train.json``).

    ``auto`` becomes :func:`choose`'s pick. An explicit precision is kept, with one warning line
    where it is bf16 on a CPU that runs it :data:`SLOWER` × slower than fp32 or more.
    """
    rates = cpu_rates() if device.type == "cpu" and requested in ("auto", "bf16") else None
    chosen = choose(rates, device) if requested == "auto" else requested
    if requested == "bf16" and rates is not None and rates.bf16_speedup <= 1 / SLOWER:
        print(
            f"{desc}: warning: bf16 runs {1 / rates.bf16_speedup:.0f}x slower than fp32 on this "
            f"CPU ({rates.cpu}, {rates.capability}: bf16 {rates.bf16_gflops:.1f} GFLOP/s, fp32 "
            f"{rates.fp32_gflops:.1f}); precision: auto would train in {choose(rates, device)}",
            file=sys.stderr,
            flush=True,
        )
    about = {"requested": requested, "chosen": chosen, "device": device.type}
    if rates is not None:
        about.update(asdict(rates))
    elif device.type == "cuda":
        about["gpu"] = torch.cuda.get_device_name(device)
    return about


def describe(about: dict) -> str:
    """One line for reports, e.g. ``fp32 (auto: bf16 at 0.39x fp32's matmul rate on Intel Xeon …,
    AVX512, 2 threads)``."""
    line = about["chosen"]
    if "bf16_gflops" in about:
        speed = about["bf16_gflops"] / about["fp32_gflops"]
        line += (
            f" ({about['requested']}: bf16 at {speed:.2f}x fp32's matmul rate on "
            f"{about['cpu']}, {about['capability']}, {about['threads']} threads)"
        )
    elif about["requested"] == "auto":
        line += f" (auto, on {about.get('gpu', about['device'])})"
    return line


def machine() -> dict:
    """What a benchmark prints beside its figures: the CPU, its capability and its fp32 and bf16
    rates on a 1024-square matmul (the class of CPU decides which precision is fast)."""
    return asdict(measure_rates(size=1024, seconds=0.5))


class MixedPrecision:
    """The forward pass under autocast (bf16 or fp16) and, for fp16, loss scaling; fp32 changes
    nothing. Weights, optimizer state and checkpoints stay fp32 whatever the precision."""

    DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, precision: str, device: torch.device, desc: str) -> None:
        if precision == "fp16" and device.type != "cuda":
            raise UserError(
                f"{desc}: precision fp16 needs a CUDA GPU and this model trains on the "
                f"{device.type}; use bf16 (or fp32)"
            )
        self.precision, self.device = precision, device
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def autocast(self) -> torch.autocast:
        dtype = self.DTYPES[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.precision != "fp32")

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer, clip: Callable[[], None]) -> None:
        """Clip the (unscaled) gradients, then step; fp16 skips a step whose gradients overflowed."""
        if self.scaler is None:
            clip()
            optimizer.step()
            return
        self.scaler.unscale_(optimizer)
        clip()
        self.scaler.step(optimizer)
        self.scaler.update()
