"""Which engine should write our INT8 ONNX files: PT2E (ours), onnxruntime, or NNCF.

Three ways to an INT8 QDQ ONNX image tower, from the same model and the same calibration
images, and the fp32 ONNX file as the baseline:

- ``pt2e-*``: ours, the W8A8 PT2E graph (:func:`compress.quant.ptq.quantize`, min-max or
  percentile calibration) written by :func:`export.driver.export_model` (``precision="int8"``);
- ``ort-*``: onnxruntime's ``quantize_static`` on our fp32 ONNX file after ``quant_pre_process``
  (``skip_symbolic_shape=True``, docs/library-traps.md): QDQ, int8 weights per channel, int8
  activations, MinMax or Percentile calibration;
- ``nncf-*``: NNCF's ONNX backend (``nncf.quantize``, ``ModelType.TRANSFORMER``: its mixed
  preset, symmetric per-channel weights and asymmetric activations), with its default
  SmoothQuant on the MatMuls (alpha 0.95), with SmoothQuant off, and with alpha 0.5.

On a trained model (the demo's distilled student by default) each image tower runs in
onnxruntime against fp32 PyTorch text embeddings over the recipe's zero-shot tasks: top-1 per
task and their mean, and the cosine of its embeddings to the fp32 ONNX ones. For every model
also the file size, the quantize time, and p50/p90/min latency at batch 1 over ``--runs`` timed
runs after warm-up (onnxruntime's CPU provider with its default threads, as the ONNX target
loads files). ``--latency-model`` adds the same engines on a real-size model with random
weights for latency and size only (what the weights are changes no kernel and no shape; the
accuracy of random weights means nothing). A failed engine gets its error in place of numbers.
Prints JSON; progress goes to stderr.

Run: python benchmarks/int8_onnx.py --model runs/demo/distill/model.pt \\
    --data runs/demo/data/scenes [--latency-model mobileclip_s0] [--out FILE]
(needs the ``bench`` extra for NNCF: pip install -e .[bench])
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from compress.compat import torch_export_quiet
from compress.data.datasets import CsvDataset, collate
from compress.data.transforms import image_transform
from compress.evaluate import evaluate_csvs
from compress.io import write_json
from compress.models import CLIP, ModelRecord, load_model
from compress.precision import machine
from compress.quant.ptq import quantize
from compress.tokenizer import EOT_ID, Tokenizer
from edgeclip.recipe import QuantConfig, load_recipe
from export.driver import IMAGE_INPUT, export_model
from export.manifest import library_versions
from export.onnx import OnnxTarget
from export.verify import Thresholds, run_batched

DEMO_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "demo.yaml"
ENGINES = (
    "pt2e-minmax",
    "pt2e-percentile",
    "ort-minmax",
    "ort-percentile",
    "nncf",
    "nncf-no-smoothquant",
    "nncf-smoothquant-0.5",
)
# engine → NNCF's SmoothQuant alpha on MatMuls (-1: off); 0.95 is its default for transformers
NNCF_ALPHAS = {"nncf": 0.95, "nncf-no-smoothquant": -1.0, "nncf-smoothquant-0.5": 0.5}
PERCENTILE = QuantConfig().percentile  # the percentile calibrations (ours and onnxruntime's) keep
# a random-weight model's int8 files whatever their parity: the number here is latency
ANY_PARITY = Thresholds(min_cosine=-1.0, max_abs=1e9, min_zero_shot_agreement=0.0)


def latency(run: Callable[[], object], runs: int, warmup: int) -> dict:
    """Wall time of ``run()`` in milliseconds over ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 3),
        "min_ms": round(times[0], 3),
        "runs": len(times),
    }


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - start, 2)


def calibration_set(
    train_csv: Path, record: ModelRecord, context: int, samples: int, batch: int = 32
) -> list[dict]:
    """``samples`` training images (the model's preprocessing) with their captions' tokens,
    a seeded random choice, in batches: every engine calibrates on these images."""
    transform = image_transform(record.image_size, **record.normalization)
    data = CsvDataset(train_csv, transform, Tokenizer(context))
    rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:samples]
    loader = DataLoader(Subset(data, rows.tolist()), batch_size=batch, collate_fn=collate)
    return [{"image": b["image"], "text": b["text"]} for b in loader]


def random_set(model: CLIP, samples: int, batch: int = 8) -> list[dict]:
    """Random images and token rows (with an EOT each): ranges for a random-weight model."""
    size, context = model.visual.image_size, model.text.context_length
    out = []
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        tokens = torch.randint(1, 49000, (n, context))
        tokens[torch.arange(n), torch.randint(1, context, (n,))] = EOT_ID
        out.append({"image": torch.rand(n, 3, size, size), "text": tokens})
    return out


def ort_quantize(fp32: Path, out: Path, images: np.ndarray, method: str) -> None:
    """onnxruntime static QDQ quantization of ``fp32``: int8 weights per channel, int8
    activations, ranges from ``images`` fed one at a time (the file has batch 1)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(images)

        def get_next(self) -> dict | None:
            row = next(self.rows, None)
            return None if row is None else {"image": row[None]}

        def rewind(self) -> None:
            self.rows = iter(images)

    prepared = out.with_name(out.stem + "-pre.onnx")
    quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
    quantize_static(
        prepared,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method={
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
        }[method],
        extra_options={"CalibPercentile": PERCENTILE},
    )
    prepared.unlink()


def nncf_quantize(
    fp32: Path, out: Path, rows: np.ndarray, alpha: float, input_name: str = IMAGE_INPUT
) -> None:
    """NNCF's post-training quantization of ``fp32`` (its ONNX backend, batch-1 file), calibrated
    on ``rows`` fed one at a time as ``input_name``, SmoothQuant on the MatMuls at ``alpha`` (off
    below 0)."""
    import nncf
    import onnx

    model = onnx.load(fp32)
    dataset = nncf.Dataset(list(rows), lambda row: {input_name: row[None]})
    quantized = nncf.quantize(
        model,
        dataset,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(rows),
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=alpha)
        ),
    )
    onnx.save(quantized, out)


def qdq_nodes(path: Path) -> dict[str, int]:
    """How many quantize and dequantize nodes a file has (what each engine chose to quantize)."""
    import onnx

    ops = [node.op_type for node in onnx.load(path).graph.node]
    return {op: ops.count(op) for op in ("QuantizeLinear", "DequantizeLinear")}


class OnnxImageEncoder:
    """An image tower in onnxruntime (batch 1) beside the fp32 PyTorch text tower, or beside a
    text tower file (``text``): the :class:`compress.evaluate.Encoder` evaluation runs, with the
    model's preprocessing."""

    def __init__(
        self, path: Path, model: CLIP, record: ModelRecord, text: Path | None = None
    ) -> None:
        self.run = OnnxTarget().load(path)
        self.run_text = OnnxTarget().load(text) if text is not None else None
        self.model = model
        self.transform = image_transform(record.image_size, **record.normalization)
        self.tokenize = Tokenizer(model.text.context_length)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run_batched(self.run, images.numpy(), 1))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.run_text is None:
            return self.model.encode_text(tokens)
        return torch.from_numpy(run_batched(self.run_text, tokens.numpy(), 1))


def zero_shot(encoder: object, tasks: dict[str, Path], templates: list[str]) -> dict:
    """Top-1 of each zero-shot task and their mean."""
    with torch.inference_mode():
        results = evaluate_csvs(encoder, tasks, {}, templates=templates)["zeroshot"]
    top1 = {task: round(r["top1"], 4) for task, r in results.items()}
    return {"top1": top1, "mean_top1": round(statistics.fmean(top1.values()), 4)}


def write_engine(
    engine: str,
    model: CLIP,
    record: ModelRecord,
    folder: Path,
    fp32: Path,
    batches: list[dict],
    samples: dict[str, torch.Tensor],
    thresholds: Thresholds | None,
) -> tuple[Path, dict]:
    """One engine's INT8 image tower file, and how long quantizing (and for ours exporting) took."""
    images = torch.cat([b["image"] for b in batches]).numpy()
    path = folder / f"{engine}.onnx"
    if engine.startswith("pt2e-"):
        config = QuantConfig(calibration=engine.removeprefix("pt2e-"))
        with torch_export_quiet():
            quantized, quantize_s = timed(lambda: quantize(model, config, batches))
            summary, export_s = timed(
                lambda: export_model(
                    model,
                    record,
                    folder / engine,
                    target="onnx",
                    precision="int8",
                    quantized=quantized,
                    thresholds=thresholds,
                    **samples,
                )
            )
        parity = summary["image"]["parity"]
        about = {
            "quantize_s": quantize_s,  # both towers: PT2E calibrates them together
            "export_s": export_s,  # both towers, with the parity check against the simulation
            "parity_to_simulation": {k: parity[k] for k in ("cosine_min", "max_abs")},
        }
        return Path(summary["image"]["model"]), about
    if engine.startswith("ort-"):
        _, quantize_s = timed(lambda: ort_quantize(fp32, path, images, engine.removeprefix("ort-")))
    else:
        _, quantize_s = timed(lambda: nncf_quantize(fp32, path, images, NNCF_ALPHAS[engine]))
    return path, {"quantize_s": quantize_s}


def measure(
    path: Path,
    fp32: Path | None,
    check: torch.Tensor,
    runs: int,
    warmup: int,
    accuracy: Callable[[Path], dict] | None,
) -> dict:
    """Size, latency at batch 1, cosine to the fp32 file on ``check`` images, and accuracy."""
    run = OnnxTarget().load(path)
    x = check[:1].numpy()
    row = {"bytes": path.stat().st_size, "latency": latency(lambda: run(x), runs, warmup)}
    if fp32 is not None:
        out = run_batched(run, check.numpy(), 1)
        ref = run_batched(OnnxTarget().load(fp32), check.numpy(), 1)
        cosine = (out * ref).sum(-1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(ref, axis=-1))
        row["cosine_to_fp32"] = {"mean": float(cosine.mean()), "min": float(cosine.min())}
        row["qdq_nodes"] = qdq_nodes(path)
    if accuracy is not None:
        row["zero_shot"] = accuracy(path)
    return row


def compare(
    label: str,
    model: CLIP,
    record: ModelRecord,
    batches: list[dict],
    samples: dict[str, torch.Tensor],
    engines: list[str],
    args: argparse.Namespace,
    accuracy: Callable[[Path], dict] | None,
    thresholds: Thresholds | None,
) -> dict:
    """The fp32 file and each engine's INT8 file of one model's image tower, measured."""
    check = samples["sample_images"]
    with tempfile.TemporaryDirectory(prefix="bench-int8-onnx-") as tmp:
        folder = Path(tmp)
        print(f"{label} fp32", file=sys.stderr, flush=True)  # progress
        with torch_export_quiet():
            summary = export_model(
                model, record, folder / "fp32", target="onnx", precision="fp32", **samples
            )
        fp32 = Path(summary["image"]["model"])
        rows = {"fp32": measure(fp32, None, check, args.runs, args.warmup, accuracy)}
        for engine in engines:
            print(f"{label} {engine}", file=sys.stderr, flush=True)  # progress
            try:
                path, about = write_engine(
                    engine, model, record, folder, fp32, batches, samples, thresholds
                )
                row = about | measure(path, fp32, check, args.runs, args.warmup, accuracy)
            except Exception as error:  # one failed engine must not lose the others' rows
                row = {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
            rows[engine] = row
    base = rows["fp32"]
    for row in rows.values():
        if "bytes" in row:
            row["size_ratio"] = round(row["bytes"] / base["bytes"], 3)
            row["speedup_p50"] = round(base["latency"]["p50_ms"] / row["latency"]["p50_ms"], 2)
    return rows


def trained(args: argparse.Namespace, engines: list[str]) -> dict:
    """The engines on the trained model: accuracy, size, latency."""
    model, record = load_model(args.model)
    model = model.float().eval()
    evaluation = load_recipe(args.recipe).eval
    templates = list(evaluation.templates)
    tasks = {task: args.data / f"{task}.csv" for task in evaluation.zeroshot}
    context = model.text.context_length
    batches = calibration_set(args.data / "train.csv", record, context, args.calibration)
    transform = image_transform(record.image_size, **record.normalization)
    val = CsvDataset(args.data / "val.csv", transform, Tokenizer(context))
    held_out = collate([val[i] for i in range(args.check)])
    samples = {"sample_images": held_out["image"], "sample_tokens": held_out["text"]}
    rows = compare(
        "trained",
        model,
        record,
        batches,
        samples,
        engines,
        args,
        lambda path: zero_shot(OnnxImageEncoder(path, model, record), tasks, templates),
        None,
    )
    return {
        "model": str(args.model),
        "calibration": f"{sum(len(b['image']) for b in batches)} training images (seeded choice)",
        "zero_shot_tasks": list(tasks),
        "templates": templates,
        "pytorch_fp32": zero_shot(model, tasks, templates),
        "engines": rows,
    }


def random_weights(name: str, args: argparse.Namespace, engines: list[str]) -> dict:
    """The engines on a random-weight real-size model: size and latency only."""
    torch.manual_seed(0)
    record = ModelRecord.named(name)
    model = record.build().eval()
    batches = random_set(model, args.latency_calibration)
    held_out = random_set(model, args.check)[0]
    samples = {"sample_images": held_out["image"], "sample_tokens": held_out["text"]}
    rows = compare(name, model, record, batches, samples, engines, args, None, ANY_PARITY)
    return {
        "model": name,
        "weights": "random init: latency and size only; no accuracy",
        "calibration": f"{args.latency_calibration} random images",
        "engines": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("runs/demo/distill/model.pt"))
    parser.add_argument("--data", type=Path, default=Path("runs/demo/data/scenes"))
    parser.add_argument(
        "--recipe", type=Path, default=DEMO_RECIPE, help="zero-shot tasks, templates"
    )
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--calibration", type=int, default=256, help="training images")
    parser.add_argument("--check", type=int, default=16, help="held-out images: parity, cosine")
    parser.add_argument("--latency-model", nargs="*", default=["mobileclip_s0"])
    parser.add_argument(
        "--latency-calibration", type=int, default=16, help="random images of the random model"
    )
    parser.add_argument("--runs", type=int, default=50, help="timed runs per file")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before timing")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    start = time.perf_counter()
    summary = {
        "machine": machine(),  # CPU, capability, fp32 and bf16 GEMM rates
        "libraries": library_versions() | library_versions(["nncf"]),
        "batch": 1,
        "runs": args.runs,
        "warmup": args.warmup,
        "runtime": OnnxTarget().runtime() + ", default threads",
        "trained": trained(args, args.engines),
        "random_weights": {
            name: random_weights(name, args, args.engines) for name in args.latency_model
        },
        "total_s": round(time.perf_counter() - start, 1),
    }
    if args.out is not None:
        write_json(args.out, summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
