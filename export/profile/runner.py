"""Time one model file in its runtime and print what was measured as one JSON line.

This file is self-contained on purpose: devices copy it next to the model (an SSH board runs it
with its own Python, NumPy and runtime; the host runs it in a fresh process so that load time,
first inference and peak memory belong to the model alone). It imports nothing of edgeclip's,
except for PyTorch eager files (``.pt``), which need edgeclip to be built.

    python runner.py MODEL_FILE --input image:float32:1,3,224,224 [--runs 50] [--warmup 5]
        [--threads N] [--ops] [--etdump PATH] [--providers TensorrtExecutionProvider,…]
        [--engine auto|onnxruntime|trtexec|executorch|torch] [--eot 49407]
    python runner.py --gemm [--threads N]

Engines: ``.onnx`` runs in onnxruntime (the first available of the requested providers, CPU
last), or in TensorRT's ``trtexec`` where onnxruntime is missing or ``--engine trtexec`` asks;
``.pte`` in the ExecuTorch runtime; ``.pt`` (an edgeclip model file, ``--tower``) in torch
eager. ``--ops`` adds a separate profiled pass: onnxruntime's profiler, aggregated here by
operator type; ExecuTorch's ETDump, written to ``--etdump`` for the host's Inspector.
``--gemm`` measures the device's large-GEMM rates instead (fp32; int8 where onnxruntime runs).

The one output line: ``{"runtime", "compute_unit", "load_ms", "first_inference_ms", "times_ms",
"threads", "peak_rss_mb", "ops", "etdump", "device", "environment"}`` or for ``--gemm``
``{"gemm_gflops": {"fp32": …, "int8": …}, "gemm_engine": …}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GEMM_SIZE = 2048  # large enough to run at the BLAS's full rate, small enough for a phone's RAM
GEMM_SECONDS = 0.5


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.gemm:
        print(json.dumps(gemm_rates(args.threads)))
        return 0
    if args.model is None or args.input is None:
        raise SystemExit("runner.py: MODEL_FILE and --input are needed (or --gemm)")
    name, dtype, shape = args.input.split(":")
    batch = make_input(tuple(int(d) for d in shape.split(",")), dtype, args.eot)
    engine = args.engine if args.engine != "auto" else pick_engine(Path(args.model))
    rss_at_start = peak_rss_mb()
    result = ENGINES[engine](Path(args.model), name, batch, args)
    result.setdefault("peak_rss_mb", peak_rss_mb())
    result.update(
        threads=args.threads,
        device=device_facts(),
        environment={
            "python": platform.python_version(),
            "numpy": np.__version__,
            "rss_at_start_mb": rss_at_start,
            **result.pop("environment", {}),
        },
    )
    print(json.dumps(result))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="time one model file in its runtime")
    p.add_argument("model", nargs="?")
    p.add_argument("--input", help="NAME:DTYPE:D0,D1,… of the one input")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int)
    p.add_argument("--ops", action="store_true", help="also profile operators (a separate pass)")
    p.add_argument("--etdump", help="ExecuTorch: where --ops writes the ETDump")
    p.add_argument(
        "--providers",
        default="TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider",
        help="onnxruntime providers in order of preference; the available ones are used",
    )
    p.add_argument(
        "--engine",
        default="auto",
        choices=["auto", "onnxruntime", "trtexec", "executorch", "torch"],
    )
    p.add_argument("--eot", type=int, help="integer inputs: the end-of-text id, mid-sequence")
    p.add_argument("--tower", choices=["image", "text"], help=".pt files: which tower")
    p.add_argument("--gemm", action="store_true", help="measure the large-GEMM rate instead")
    return p


def make_input(shape: tuple[int, ...], dtype: str, eot: int | None) -> np.ndarray:
    """A fixed pseudo-random input: normal floats, or token ids with an end-of-text mid-row and
    padding after it (the shape of real captions)."""
    rng = np.random.default_rng(0)
    if dtype.startswith("float"):
        return rng.standard_normal(shape).astype(dtype)
    ids = rng.integers(1, 1000, size=shape).astype(dtype)
    if eot is not None and ids.ndim == 2:
        middle = ids.shape[1] // 2
        ids[:, middle] = eot
        ids[:, middle + 1 :] = 0
    return ids


def pick_engine(model: Path) -> str:
    if model.suffix == ".pte":
        return "executorch"
    if model.suffix == ".pt":
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if shutil.which("trtexec"):
            return "trtexec"
        raise SystemExit("runner.py: neither onnxruntime nor trtexec is installed") from None
    return "onnxruntime"


def time_runs(run, warmup: int, runs: int) -> tuple[float, list[float]]:
    """The first call's milliseconds, then ``warmup`` untimed calls, then ``runs`` timed ones."""
    begin = time.perf_counter()
    run()
    first = 1e3 * (time.perf_counter() - begin)
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        run()
        times.append(1e3 * (time.perf_counter() - begin))
    return first, times


def run_onnxruntime(model: Path, name: str, batch: np.ndarray, args) -> dict:
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    providers = [p for p in args.providers.split(",") if p in available] or ["CPUExecutionProvider"]

    def session(profile_prefix: str | None = None):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if args.threads:
            options.intra_op_num_threads = args.threads
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        return ort.InferenceSession(str(model), sess_options=options, providers=providers)

    begin = time.perf_counter()
    sess = session()
    load_ms = 1e3 * (time.perf_counter() - begin)
    first, times = time_runs(lambda: sess.run(None, {name: batch}), args.warmup, args.runs)
    peak = peak_rss_mb()  # before the profiled pass's second session
    ops = None
    if args.ops:
        with tempfile.TemporaryDirectory() as tmp:
            profiled = session(os.path.join(tmp, "ort"))
            for _ in range(args.warmup):
                profiled.run(None, {name: batch})
            for _ in range(args.runs):
                profiled.run(None, {name: batch})
            trace = profiled.end_profiling()
            ops = onnxruntime_ops(json.loads(Path(trace).read_text()), args.warmup + args.runs)
    used = sess.get_providers()[0]
    return {
        "runtime": f"onnxruntime {ort.__version__}",
        "compute_unit": used,
        "peak_rss_mb": peak,
        "load_ms": load_ms,
        "first_inference_ms": first,
        "times_ms": times,
        "ops": ops,
        "etdump": None,
        "environment": {"providers_available": sorted(available)},
    }


def onnxruntime_ops(trace: list[dict], runs: int) -> dict[str, float]:
    """Milliseconds per inference by operator type from onnxruntime's profiler trace (Chrome
    trace events: one ``Node`` event per kernel call, ``dur`` in microseconds)."""
    ops: dict[str, float] = {}
    for event in trace:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        op = event.get("args", {}).get("op_name", "?")
        ops[op] = ops.get(op, 0.0) + event["dur"] / 1e3 / runs
    return ops


def run_trtexec(model: Path, name: str, batch: np.ndarray, args) -> dict:
    """TensorRT's ``trtexec``: builds an engine from the ONNX file, then times it. Per-run
    latencies come from its ``--exportTimes`` file (a JSON list, one object per iteration, whose
    ``latencyMs`` is host-to-device + compute + device-to-host); build (load) time from its wall
    clock.

    ``--warmUp`` is milliseconds, not runs, and newer trtexecs leave the warm-up iterations out
    of ``--exportTimes`` while older ones keep them: so trtexec gets no warm-up of its own, runs
    (at least) ``warmup + runs`` iterations, and the first ``warmup`` exported ones are dropped.
    """
    with tempfile.TemporaryDirectory() as tmp:
        times_file = os.path.join(tmp, "times.json")
        inputs_file = os.path.join(tmp, "input.bin")
        batch.tofile(inputs_file)  # the same input as every runtime gets (raw, in its dtype)
        command = [
            "trtexec",
            f"--onnx={model}",
            f"--loadInputs={name}:{inputs_file}",
            "--warmUp=0",
            f"--iterations={args.warmup + args.runs}",
            "--duration=0",
            "--avgRuns=1",
            f"--exportTimes={times_file}",
        ]
        begin = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall_ms = 1e3 * (time.perf_counter() - begin)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise SystemExit(f"runner.py: trtexec failed: {' '.join(tail)}")
        times = [float(entry["latencyMs"]) for entry in json.loads(Path(times_file).read_text())]
    version = (
        done.stdout.split("TensorRT version: ", 1)[-1].split()[0]
        if "TensorRT version: " in done.stdout
        else "?"
    )
    return {
        "runtime": f"tensorrt {version} (trtexec)",
        "compute_unit": "gpu",
        "load_ms": wall_ms - sum(times),  # engine build and the rest of trtexec's start-up
        "first_inference_ms": None,
        "times_ms": times[args.warmup : args.warmup + args.runs],
        "peak_rss_mb": None,  # trtexec's own process: not measured from here
        "ops": None,
        "etdump": None,
    }


def run_executorch(model: Path, name: str, batch: np.ndarray, args) -> dict:
    import torch
    from executorch.extension.pybindings import _C
    from executorch.runtime import Runtime

    load_quantized_kernels()
    if args.threads:
        _C._unsafe_reset_threadpool(args.threads)
    inputs = [torch.from_numpy(np.ascontiguousarray(batch))]  # it ignores strides
    runtime = Runtime.get()
    begin = time.perf_counter()
    method = runtime.load_program(str(model)).load_method("forward")
    load_ms = 1e3 * (time.perf_counter() - begin)
    first, times = time_runs(lambda: method.execute(inputs), args.warmup, args.runs)
    peak = peak_rss_mb()  # before the profiled pass loads the program again
    etdump = None
    if args.ops and args.etdump:
        # debug_buffer_size=0: events only; a too-small buffer aborts the process
        program = runtime.load_program(str(model), enable_etdump=True, debug_buffer_size=0)
        traced = program.load_method("forward")
        for _ in range(args.runs):
            traced.execute(inputs)
        program.write_etdump_result_to_file(args.etdump, args.etdump + ".debug")
        etdump = args.etdump
    from importlib import metadata

    return {
        "runtime": f"executorch {metadata.version('executorch')}",
        "compute_unit": "xnnpack",
        "peak_rss_mb": peak,
        "load_ms": load_ms,
        "first_inference_ms": first,
        "times_ms": times,
        "ops": None,
        "etdump": etdump,
        "environment": {"threadpool": _C._threadpool_get_thread_count()},
    }


def load_quantized_kernels() -> None:
    """Register ExecuTorch's quantized kernels (``embedding_byte`` …): the Python runtime
    links the portable kernels only; the library ships beside them."""
    import ctypes

    from executorch import runtime

    library = Path(runtime.__file__).parents[1] / "lib" / "libexecutorch_kernels_quantized.so"
    if library.exists():  # a build without it fails at load_method with "Missing operator"
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)


def run_torch(model: Path, name: str, batch: np.ndarray, args) -> dict:
    import torch

    from compress.models import load_model, reparameterize
    from compress.models.clip import NormalizedTower

    if args.threads:
        torch.set_num_threads(args.threads)
    begin = time.perf_counter()
    clip = reparameterize(load_model(model)[0])  # folded, as every export is
    tower = NormalizedTower(clip.visual if args.tower == "image" else clip.text).eval()
    load_ms = 1e3 * (time.perf_counter() - begin)
    inputs = torch.from_numpy(batch)
    with torch.inference_mode():
        first, times = time_runs(lambda: tower(inputs), args.warmup, args.runs)
    return {
        "runtime": f"torch {torch.__version__} eager",
        "compute_unit": "cpu",
        "load_ms": load_ms,
        "first_inference_ms": first,
        "times_ms": times,
        "ops": None,
        "etdump": None,
        "environment": {"torch_threads": torch.get_num_threads()},
    }


ENGINES = {
    "onnxruntime": run_onnxruntime,
    "trtexec": run_trtexec,
    "executorch": run_executorch,
    "torch": run_torch,
}


def gemm_rates(threads: int | None) -> dict:
    """The device's achieved rate on a large square GEMM, in 10⁹ multiply-adds × 2 per second
    (GFLOP/s; GOP/s for int8). fp32: torch's matmul where torch is installed, else NumPy's.
    int8: onnxruntime's ``MatMulInteger`` on uint8 × uint8, the integer kernels edgeclip's int8
    ONNX artifacts run (where onnx and onnxruntime are installed; none otherwise). torch's own
    int8 matmul is no reference: on CPUs without VNNI it has no fast path (0.8 GOP/s on AVX2, a
    fraction of what the runtimes reach). Best of repeated calls for :data:`GEMM_SECONDS`."""
    n = GEMM_SIZE
    flop = 2 * n**3
    try:
        import torch
    except ImportError:
        a = np.random.default_rng(0).random((n, n), dtype=np.float32)
        rates, engines = {"fp32": flop / best_seconds(lambda: a @ a) / 1e9}, ["fp32: numpy"]
    else:
        if threads:
            torch.set_num_threads(threads)
        a = torch.randn(n, n)
        rates = {"fp32": flop / best_seconds(lambda: a @ a) / 1e9}
        engines = [f"fp32: torch {torch.__version__}"]
    with contextlib.suppress(ImportError):
        run, version = _onnxruntime_int8_gemm(n, threads)
        rates["int8"] = flop / best_seconds(run) / 1e9
        engines.append(f"int8: onnxruntime {version} MatMulInteger uint8")
    return {"gemm_gflops": rates, "gemm_engine": "; ".join(engines)}


def _onnxruntime_int8_gemm(n: int, threads: int | None):
    """A call that multiplies two n × n uint8 matrices in onnxruntime, and its version."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.integers(0, 256, (n, n), dtype=np.uint8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "int8_gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
        [b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    return (lambda: session.run(None, {"a": a})), ort.__version__


def best_seconds(call) -> float:
    call()
    best, deadline = float("inf"), time.perf_counter() + GEMM_SECONDS
    while time.perf_counter() < deadline:
        begin = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - begin)
    return best


def peak_rss_mb() -> float:
    """This process's peak resident memory so far. On Linux from ``VmHWM`` (this program's own
    high-water mark): ``ru_maxrss`` there carries over the parent's peak across fork and exec."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def device_facts() -> dict:
    """What the machine is: CPU model, cores, OS, architecture; the board's model where the
    device tree names it (Jetson, Raspberry Pi …)."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("model name", "Model")):
                cpu = line.split(":", 1)[1].strip()
                break
    board = Path("/proc/device-tree/model")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "board": board.read_text().strip("\x00\n ") if board.is_file() else None,
    }


if __name__ == "__main__":
    sys.exit(main())
