"""Training-step roofline: samples/s, counted FLOPs and the fraction of the machine's GEMM rate.

For each model × precision × compile, times the loop's own step (``compress.train.train_step``:
forward under autocast, fp32 loss, backward, clipping, fused AdamW) on synthetic batches already
in memory, eager or through ``torch.compile`` (its first, compiling step timed on its own),
counts the step's FLOPs with ``torch.utils.flop_counter`` and divides. The machine's fp32 and
bf16 GEMM rates (a square ``torch.matmul``) are measured in the same run, so the fraction
reached is read against today's machine, not a datasheet. Last, the peak memory of one
large-batch step with and without ``accumulate`` (each in a fresh process).

Run: python benchmarks/train.py [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from compress.models import build_model
from compress.objectives import clip_objective
from compress.precision import MixedPrecision, choose, cpu_rates, machine
from compress.tokenizer import EOT_ID
from compress.train import optimizer_for, train_step
from edgeclip.recipe import TrainConfig

CASES = (("demo_teacher", 128), ("tinyclip_vit_8m_16", 64))
PRECISIONS = ("fp32", "bf16")


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def batch_for(model, size: int) -> dict:
    image, context = model.visual.image_size, model.text.context_length
    tokens = torch.randint(1, 1000, (size, context))
    tokens[:, context // 2] = EOT_ID
    tokens[:, context // 2 + 1 :] = 0
    return {"image": torch.randn(size, 3, image, image), "text": tokens}


def bench(
    name: str,
    batch_size: int,
    precision: str,
    steps: int,
    accumulate: int = 1,
    compile: bool = False,
) -> dict:
    torch.manual_seed(0)
    model = build_model(name).train()
    cfg = TrainConfig(
        steps=steps + 3, batch_size=batch_size, precision=precision, accumulate=accumulate
    )
    optimizer, _ = optimizer_for(model, None, cfg)
    mixed = MixedPrecision(precision, torch.device("cpu"), name)
    batch = batch_for(model, batch_size)

    def step(net=model) -> float:
        return train_step(net, model, batch, clip_objective, optimizer, None, cfg, 1, mixed)

    with FlopCounterMode(display=False) as counter:
        step()  # counted in eager mode (the compiled step does the same arithmetic); a warm-up
    flops = counter.get_total_flops()
    row = {"model": name, "batch_size": batch_size, "precision": precision, "compile": compile}
    net = model
    if compile:
        torch._dynamo.reset()
        net = torch.compile(model)
        row["compile_seconds"] = _time(lambda: step(net))  # the first step compiles
    seconds = min(_time(lambda: step(net)) for _ in range(steps))
    return row | {
        "samples_per_s": batch_size / seconds,
        "step_seconds": seconds,
        "step_gflop": flops / 1e9,
        "achieved_gflops": flops / seconds / 1e9,
    }


def _peak(name: str, batch_size: int, accumulate: int, out) -> None:
    # a child inherits its parent's high-water mark (ru_maxrss too): reset it first (Linux)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    bench(name, batch_size, "fp32", 1, accumulate)
    with open("/proc/self/status") as f:
        status = f.read()
    out.put(int(status.split("VmHWM:")[1].split()[0]) / 1024)  # kB → MB


def peak_memory_mb(name: str, batch_size: int, accumulate: int) -> float:
    """Peak resident memory of a fresh process that runs two steps of the given batch."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak, args=(name, batch_size, accumulate, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the memory probe for {name} failed (exit code {process.exitcode})")
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case (best is kept)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    facts = machine()
    gemm = {"fp32": facts["fp32_gflops"], "bf16": facts["bf16_gflops"]}
    results = []
    for name, batch_size in CASES:
        for precision in PRECISIONS:
            if gemm[precision] < gemm["fp32"] / 10:  # bf16 emulated (AVX2): hours, not seconds
                continue
            for compile in (False, True):
                row = bench(name, batch_size, precision, args.steps, compile=compile)
                row["fraction_of_gemm"] = row["achieved_gflops"] / gemm[precision]
                results.append(row)
    memory = [
        {
            "model": "demo_teacher",
            "batch_size": 1024,
            "accumulate": n,
            "peak_rss_mb": peak_memory_mb("demo_teacher", 1024, n),
        }
        for n in (1, 8)
    ]
    print(
        json.dumps(
            {
                "machine": facts,  # CPU, capability, fp32 and bf16 GEMM rates
                "auto_precision": choose(cpu_rates(), torch.device("cpu")),
                "steps": results,
                "memory": memory,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
