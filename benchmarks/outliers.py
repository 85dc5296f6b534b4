"""The outlier experiment (Quantizable Transformers): softmax vs clipped softmax vs gated attention.

Trains one architecture from scratch on the embedded scenes dataset three times, with the same
budget, seed and sample order, with softmax, clipped softmax (γ = −0.02) and gated attention
(per-token gates) in both towers, and measures for each:

- float zero-shot top-1 on ``zs_colour_shape`` and the mean over the four zero-shot tasks
  (recipes/demo.yaml's templates);
- activation outliers of every block and FFN output on 256 held-out retrieval samples: the
  max ∞-norm and mean kurtosis per tower as ``compress.quant.outliers`` reports them (kurtosis
  per token over the hidden dimension), and the paper's kurtosis (per sample, over tokens ×
  hidden flattened, as Bondarenko et al.'s code computes it). The per-token statistic cannot
  exceed the width (64-128 here) and misses one token with huge features, so the paper's 1018
  compares with the per-sample one only. A curve of both during training;
- W8A8 post-training quantization (``compress.quant.ptq``, calibrated on 512 training samples,
  min-max and percentile) in the PyTorch simulation, and as ONNX and ExecuTorch int8 artifacts
  run in their runtimes (``export.artifact.ArtifactModel``). An artifact that misses the int8
  parity check against its simulation is a result (``parity_check``), and is still evaluated;
- QAT: fake-quant fine-tuning distilled from the float model, converted, evaluated.

The summary gives the drop in points from the float model (PTQ simulation, artifacts, QAT), the
kurtosis and ∞-norm ratios softmax / clipped and softmax / gated, and the goals (PTQ of clipped
or gated within 2 points, kurtosis ≥ 10x lower than softmax's, QAT within 1 point).

Settings (``--setting``; ``--model/--steps/--lr/--weight-decay/--config`` change one):

- ``plain``: demo_student, 1000 steps of 128 with the demo pretrain's optimiser: about 11
  minutes on two quiet cores. No variant grows outliers here.
- ``outliers``: demo_teacher, 2000 steps, lr 2e-3, no weight decay: the cheapest setting found
  where softmax's text tower grows an outlier (its first token's features). About 25 minutes on
  two quiet cores; ``--device cuda`` trains on a GPU (quantization, exports and QAT stay on the
  CPU). The outlier is mild: global W8A8 of that softmax model lost 0.13 point of top-1 (minmax
  simulation), within the plan's 1-point budget (docs/quantization.md).

The peer baseline, on the softmax model only: NNCF's own best post-training quantization
(``ModelType.TRANSFORMER`` with its default SmoothQuant) of our fp32 ONNX towers, calibrated on
the same training samples, evaluated in onnxruntime. ``goals`` compares its drop with the
outlier-free variants' deployed INT8 files.

Beside them, on the softmax model too: the mixed-precision plan for a budget (``--max-drop``, 1
point of headline top-1 by default): :func:`compress.quant.sensitivity.plan_float_layers` over
this script's PTQ, the most sensitive layers (:func:`compress.quant.sensitivity.sensitivity`)
kept in float one at a time until the INT8 simulation is within the budget, as the run layer's
``quant.max_drop`` does; its ONNX and ExecuTorch int8 files with those layers in float,
evaluated in their runtimes; and each tower's file size and batch-1 latency in this process
(p50 of ``--runs``) for fp32, global W8A8, the plan and NNCF's file. ``summary.mixed_plan`` puts
the drops of global W8A8, the plan and NNCF side by side.

To measure again without training, ``--save-models DIR`` keeps each trained model
(``DIR/<variant>/model.pt``) and ``--model-file [VARIANT=]PATH`` reads one (or any run's float
model) in place of training that variant, e.g. the ``outliers`` setting's softmax model:
``--model-file runs/outliers/models/softmax/model.pt --qat-steps 0``.

Needs the ``bench`` extra for NNCF (``pip install -e .[bench]``; ``--no-nncf`` skips it).
Run: python benchmarks/outliers.py [--setting plain|outliers] [--data DIR]
    [--steps N] [--model NAME] [--config vision.patch_size=8] [--device cuda] [--no-quant]
    [--variants softmax clipped gated] [--targets onnx executorch] [--out FILE]
    [--save-models DIR] [--model-file [VARIANT=]PATH ...] [--max-drop POINTS] [--no-plan]
Without ``--data`` the scenes dataset is written to runs/outliers/scenes (once; ~1 minute).
Prints JSON (a header with CPU, threads, load and library versions); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from compress.compat import torch_export_quiet
from compress.data.batches import batch_stream
from compress.data.datasets import CsvDataset
from compress.data.heldout import heldout_samples
from compress.data.scenes import ZEROSHOT_TASKS
from compress.data.transforms import image_transform
from compress.evaluate import evaluate_csvs, zeroshot
from compress.io import write_json
from compress.models import CLIP, ModelRecord, count_params, load_model, read_record, save_model
from compress.precision import machine
from compress.quant.outliers import (
    hidden_last,
    hooked_layers,
    inject_outlier,
    kurtosis,
    measure_outliers,
    sample_batches,
)
from compress.quant.ptq import QuantizedCLIP, convert, quantize
from compress.quant.qat import train_qat
from compress.quant.sensitivity import plan_float_layers, sensitivity
from compress.tokenizer import Tokenizer
from compress.train import Interrupted, train
from edgeclip.recipe import PretrainConfig, QatConfig, QuantConfig, load_recipe
from export.driver import IMAGE_INPUT, TEXT_INPUT, export_model
from export.manifest import library_versions, path_bytes
from export.targets import exporters
from export.verify import PARITY, ParityError, Thresholds, check

DEMO_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "demo.yaml"
TASK = "zs_colour_shape"  # the headline task: colour and shape together
VARIANTS = {  # the same attention in both towers
    "softmax": {"kind": "softmax"},
    "clipped": {"kind": "clipped", "gamma": -0.02},
    "gated": {"kind": "gated", "gate": "token"},
}
TARGETS = ("onnx", "executorch")
CALIBRATIONS = ("minmax", "percentile")
PAPER = {  # Bondarenko et al. 2023, ViT-S/16 on ImageNet, W8A8 PTQ; kurtosis per sample
    "softmax": {"w8a8_drop_points": 11.5, "kurtosis": 1018},
    "clipped_or_gated": {"w8a8_drop_points": [1.1, 1.2], "kurtosis": 20},
}
# exports keep every artifact; its parity is checked against PARITY["int8"] afterwards
ANY_PARITY = Thresholds(min_cosine=-1.0, max_abs=1e9, min_zero_shot_agreement=0.0)


@dataclass(frozen=True)
class Setting:
    """One architecture and training budget, the same for every variant."""

    model: str  # registry name (``edgeclip ls models``)
    steps: int
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    qat_steps: int = 50
    qat_lr: float = 5e-5
    curve_every: int = 500  # outliers measured every N training steps (0: only at the end)
    # changes to the named architecture, e.g. (("vision.patch_size", 8),)
    config: tuple[tuple[str, object], ...] = ()
    about: str = ""


SETTINGS = {
    # the demo student's shape trained from scratch with the demo pretrain's optimiser (bf16);
    # no variant grows outliers (kurtosis ≈ 3, ∞-norm ≈ 5)
    "plain": Setting(
        "demo_student",
        1000,
        curve_every=250,
        about="demo_student from scratch, the demo pretrain's optimiser (lr 1e-3, weight decay 0.1)",
    ),
    # the cheapest setting found where softmax grows an outlier in its text tower: no weight
    # decay and twice the learning rate let the first text token become an attention sink with
    # large features (a mild outlier: about twice clipped softmax's per-sample kurtosis)
    "outliers": Setting(
        "demo_teacher",
        2000,
        lr=2e-3,
        weight_decay=0.0,
        curve_every=250,
        about="demo_teacher from scratch, lr 2e-3 and no weight decay",
    ),
}


def record_for(setting: Setting, attention: dict) -> ModelRecord:
    """The setting's architecture with ``attention`` in both towers."""
    record = ModelRecord.named(setting.model, {"image": attention, "text": attention})
    if not setting.config:
        return record
    config = copy.deepcopy(record.config)
    for key, value in setting.config:
        section, name = key.split(".")
        config[section][name] = value
    return record.derive(config=config)


def scenes(data: Path | None) -> Path:
    """A scenes folder: ``data`` as it is, or the demo recipe's scenes written into it if missing."""
    root = data or Path("runs/outliers/scenes")
    if (root / "scenes.json").is_file() and (root / "train.csv").is_file():
        return root
    from compress.data.scenes_files import write_scenes

    s = load_recipe(DEMO_RECIPE).data.scenes
    sizes = {"train": s.train, "val": s.val, "retrieval": s.retrieval}
    sizes |= dict.fromkeys(ZEROSHOT_TASKS, s.zeroshot)
    print(f"writing the scenes dataset to {root}", file=sys.stderr, flush=True)
    write_scenes(root, seed=0, image_size=s.image_size, sizes=sizes, shard_size=s.shard_size)
    return root


class Data:
    """The training split and the zero-shot sets, each decoded once and kept in memory (every
    variant reads the same samples in the same order)."""

    def __init__(self, root: Path, record: ModelRecord, templates: list[str]) -> None:
        self.root, self.templates = root, templates
        transform = image_transform(record.image_size, **record.normalization)
        self.tokenize = Tokenizer(record.context_length)
        self.train = CsvDataset(root / "train.csv", transform, self.tokenize, cache={})
        self.tasks = {task: root / f"{task}.csv" for task in ZEROSHOT_TASKS}
        self.zero_shot_sets = {
            task: CsvDataset(path, transform, caption_key=None, label_key="label", cache={})
            for task, path in self.tasks.items()
        }

    def batches(self, size: int, seed: int, start: int = 0):
        return batch_stream(self.train, size, seed, 0, 1, start)

    def calibration(self, quant: QuantConfig, seed: int = 1) -> list[dict]:
        """``quant.samples`` training samples in batches (never evaluation data)."""
        stream = self.batches(quant.batch_size, seed)
        count = max(1, round(quant.samples / quant.batch_size))
        return [
            {"image": b["image"], "text": b["text"]} for b in (next(stream) for _ in range(count))
        ]

    def zero_shot(self, model) -> dict:
        """Top-1 per zero-shot task, their mean, and the headline task's top-1. A PyTorch model
        reads the decoded sets (what ``evaluate_csvs`` computes, without decoding again); an
        artifact goes through ``evaluate_csvs`` with its manifests' preprocessing and tokenizer."""
        start = time.perf_counter()
        with torch.inference_mode():
            if isinstance(model, torch.nn.Module):
                results = {
                    task: zeroshot(model, data, self.tokenize, self.templates, 256)
                    for task, data in self.zero_shot_sets.items()
                }
            else:
                results = evaluate_csvs(
                    model, self.tasks, {}, templates=self.templates, batch_size=256
                )["zeroshot"]
        top1 = {task: round(r["top1"], 4) for task, r in results.items()}
        return {
            "top1": top1[TASK],
            "mean_top1": round(statistics.fmean(top1.values()), 4),
            "tasks": top1,
            "eval_s": round(time.perf_counter() - start, 1),
        }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - start, 1)


@torch.no_grad()
def sequence_kurtosis(model: CLIP, samples: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """The paper's kurtosis: of each sample's whole output, tokens × hidden flattened (as
    Bondarenko et al.'s code computes it, ``x.view(B, -1)``), averaged over samples; per layer,
    then the mean and max over layers per tower. Unlike the per-token kurtosis over the hidden
    dimension (:func:`measure_outliers`, bounded by the width), it also sees one token, such as
    the first text token, whose features are far larger than every other token's."""
    layers = hooked_layers(model)
    sums = {name: [0.0, 0] for name, *_ in layers}

    def hook(name: str):
        def add(module, inputs, output) -> None:
            values = kurtosis(hidden_last(output.float()).flatten(1), dim=1)  # (B,)
            sums[name][0] += values.sum().item()
            sums[name][1] += len(values)

        return add

    handles = [module.register_forward_hook(hook(name)) for name, module, *_ in layers]
    device = next(model.parameters()).device
    training = model.training
    model.eval()
    try:
        for batch in sample_batches(*samples, 64):
            model.visual(batch["image"].to(device))
            model.text(batch["text"].to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    per_layer = {name: total / count for name, (total, count) in sums.items() if count}
    towers = {"image": "visual.", "text": "text.", "all": ""}
    summary = {}
    for tower, prefix in towers.items():
        values = [v for name, v in per_layer.items() if name.startswith(prefix)]
        summary[tower] = {
            "mean_kurtosis": round(sum(values) / len(values), 3),
            "max_kurtosis": round(max(values), 3),
        }
    return summary


def outlier_summary(model: CLIP, samples: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Max ∞-norm and mean/max kurtosis per tower (the project's statistic and the paper's),
    and the per-layer rows."""
    result = measure_outliers(model, sample_batches(*samples, 64))
    rnd = lambda x: None if x is None else round(x, 3)  # noqa: E731
    summary = {tower: {k: rnd(v) for k, v in s.items()} for tower, s in result["summary"].items()}
    layers = [
        {k: (rnd(v) if isinstance(v, float) else v) for k, v in layer.items() if k != "tower"}
        for layer in result["layers"]
    ]
    return {
        "summary": summary,
        "sequence_kurtosis": sequence_kurtosis(model, samples),
        "layers": layers,
        "samples": result["samples"],
    }


def artifact_top1(
    target: str,
    model: CLIP,
    record: ModelRecord,
    quantized: QuantizedCLIP,
    samples: tuple[torch.Tensor, torch.Tensor],
    data: Data,
    folder: Path,
) -> dict:
    """Export the INT8 model with ``target``, check its parity to the INT8 simulation, and
    measure zero-shot through the target's runtime. An artifact that misses the int8 parity
    thresholds is a result (``parity_check`` says how it failed), and is still evaluated: it is
    exported with no thresholds and checked here against the ones the export stage applies."""
    from export.artifact import ArtifactModel

    try:
        with torch_export_quiet():
            summary, seconds = timed(
                lambda: export_model(
                    model,
                    record,
                    folder / target,
                    target=target,
                    precision="int8",
                    sample_images=samples[0][:64],
                    sample_tokens=samples[1][:64],
                    quantized=quantized,
                    thresholds=ANY_PARITY,
                )
            )
    except Exception as error:  # an export that breaks must not lose the other results
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    row = {"export_s": seconds, "parity_check": "passed", "parity_to_simulation": {}}
    for tower in ("image", "text"):
        parity = summary[tower]["parity"]
        row["parity_to_simulation"][tower] = {
            k: round(v, 5) for k, v in parity.items() if isinstance(v, float)
        }
        try:
            check(parity, PARITY["int8"], f"{tower} tower")
        except ParityError as error:  # a result, not a crash
            row["parity_check"] = str(error).splitlines()[0]
    with torch_export_quiet():
        accuracy = data.zero_shot(ArtifactModel(folder / target))
    return row | accuracy


def sibling(name: str):
    """Another benchmark script of this folder, imported as a module (the folder is no package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nncf_top1(
    model: CLIP,
    record: ModelRecord,
    samples: tuple[torch.Tensor, torch.Tensor],
    data: Data,
    folder: Path,
) -> dict:
    """The peer baseline: NNCF's PTQ (``ModelType.TRANSFORMER``, SmoothQuant at its default
    alpha) of both towers of our fp32 ONNX export (batch 1), calibrated on the same training
    samples as ours, and zero-shot with both INT8 files in onnxruntime."""
    bench = sibling("int8_onnx")
    try:
        with torch_export_quiet():
            fp32 = export_model(
                model,
                record,
                folder / "fp32",
                target="onnx",
                precision="fp32",
                sample_images=samples[0][:64],
                sample_tokens=samples[1][:64],
                batch_size=1,
            )
        batches = data.calibration(QuantConfig())
        paths, row = {}, {"alpha": bench.NNCF_ALPHAS["nncf"], "quantize_s": 0.0, "bytes": {}}
        for tower, name in (("image", IMAGE_INPUT), ("text", TEXT_INPUT)):
            rows = torch.cat([b[tower] for b in batches]).numpy()
            paths[tower] = folder / f"{tower}-int8.onnx"
            _, seconds = timed(
                lambda t=tower, n=name, r=rows: bench.nncf_quantize(
                    Path(fp32[t]["model"]), paths[t], r, row["alpha"], n
                )
            )
            row["quantize_s"] += seconds
            row["bytes"][tower] = {
                "int8": paths[tower].stat().st_size,
                "fp32": fp32[tower]["bytes"],
            }
    except Exception as error:  # a baseline that breaks must not lose the other results
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    encoder = bench.OnnxImageEncoder(paths["image"], model, record, text=paths["text"])
    return row | data.zero_shot(encoder)


def mixed_plan(
    model: CLIP,
    record: ModelRecord,
    samples: tuple[torch.Tensor, torch.Tensor],
    data: Data,
    folder: Path,
    args: argparse.Namespace,
    everything: QuantizedCLIP,
    everything_top1: dict,
    fp: dict,
) -> dict:
    """The mixed-precision plan within ``--max-drop`` points of headline top-1 (what the run
    layer's ``quant.max_drop`` makes, :func:`compress.quant.sensitivity.plan_float_layers`,
    here on the benchmark's metric): global W8A8 first (``everything``, already measured),
    then the layers :func:`compress.quant.sensitivity.sensitivity` ranks most sensitive, on the
    held-out ``samples``, sent to float one at a time until the INT8 simulation's drop fits.
    The plan's INT8 model is then exported to every target and evaluated in its runtime."""
    quant = QuantConfig(calibration=args.export_calibration)
    calibration = data.calibration(quant)
    measured = {(): (everything, everything_top1)}  # float layers → (INT8 model, zero-shot)

    def drop(floats: tuple[str, ...]) -> float:  # points of headline top-1, as drops() counts
        if floats not in measured:
            int8 = quantize(model, replace(quant, float_layers=floats), calibration)
            measured[floats] = (int8, data.zero_shot(int8))
            log(f"plan: {len(floats)} in float, top-1 {measured[floats][1]['top1']:.3f}")
        return round(100 * (fp["top1"] - measured[floats][1]["top1"]), 2)

    def ranking() -> list[dict]:
        log("plan: global W8A8 misses the budget; measuring each layer's sensitivity")
        inputs = {k: torch.cat([batch[k] for batch in calibration]) for k in ("image", "text")}
        return sensitivity(model, quant, inputs, {"image": samples[0], "text": samples[1]})

    plan, seconds = timed(lambda: plan_float_layers(ranking, drop, args.max_drop))
    floats = tuple(plan["float_layers"])
    int8, accuracy = measured[floats]
    rows = plan["sensitivity"] or []
    params = {row["layer"]: row["params"] for row in rows}
    row = {
        "max_drop_points": args.max_drop,
        "calibration": args.export_calibration,
        "float_layers": list(floats),
        "float_params": sum(params[layer] for layer in floats),
        "params": count_params(model),
        "drop_points": plan["drop"],
        "within_budget": plan["within_budget"],
        "steps": [
            {"float_layers": s["float_layers"], "drop_points": s["drop"]} for s in plan["steps"]
        ],
        "sensitivity_top": [
            {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in r.items()}
            for r in rows[:10]
        ],
        "plan_s": seconds,
        "sim": accuracy,
        "artifacts": {},
    }
    for target in args.targets if floats else ():  # none: its files are global W8A8's
        log(f"plan: {target} int8 export with {len(floats)} layers in float")
        row["artifacts"][target] = artifact_top1(
            target, model, record, int8, samples, data, folder / "plan"
        )
    return row


def host_latency(
    model: CLIP,
    record: ModelRecord,
    samples: tuple[torch.Tensor, torch.Tensor],
    folder: Path,
    plan: str,
    args: argparse.Namespace,
) -> dict:
    """Each tower's file size and batch-1 latency on this machine, in this process, one file
    after another: fp32 (exported here), global W8A8 (``folder/export``), the plan's
    (``folder/<plan>``) and, for ONNX, NNCF's (``folder/nncf``), each through its target's runtime
    after ``--warmup`` runs, p50/p90/mean/min over at least ``--runs`` runs."""
    measure = sibling("export_targets").latency
    inputs = {"image": samples[0][:1].numpy(), "text": samples[1][:1].numpy()}
    out = {}
    for target in args.targets:
        backend = exporters.get(target)()
        with torch_export_quiet():
            export_model(
                model,
                record,
                folder / "fp32" / target,
                target=target,
                precision="fp32",
                sample_images=samples[0][:64],
                sample_tokens=samples[1][:64],
            )
        files = {
            "fp32": folder / "fp32" / target / "{tower}" / backend.file_name,
            "int8": folder / "export" / target / "{tower}" / backend.file_name,
            "int8_plan": folder / plan / target / "{tower}" / backend.file_name,
        }
        if target == "onnx":
            files["nncf_int8"] = folder / "nncf" / "{tower}-int8.onnx"
        out[target] = {}
        for tower in ("image", "text"):
            out[target][tower] = {}
            for label, pattern in files.items():
                path = Path(str(pattern).format(tower=tower))
                if not path.exists():  # an export or the baseline failed: its row says why
                    continue
                log(f"latency: {target} {tower} {label}")
                run = backend.load(path)
                with torch_export_quiet():
                    timing = measure(
                        lambda r=run, x=inputs[tower]: r(x), args.runs, args.warmup, 1.0
                    )
                out[target][tower][label] = {"bytes": path_bytes(path), **timing}
    return out


def on(device: torch.device, stream):
    """Batches moved to ``device``."""
    for batch in stream:
        yield {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def kurtosis_point(model: CLIP, samples, step: int) -> dict:
    """The curve's point at ``step``: mean kurtosis and max ∞-norm per tower."""
    summary = measure_outliers(model, sample_batches(*samples, 64))["summary"]
    sequence = sequence_kurtosis(model, samples)
    point = {"step": step}
    for tower, s in summary.items():
        point[tower] = {
            "kurtosis": round(s["mean_kurtosis"], 2),
            "sequence_kurtosis": round(sequence[tower]["mean_kurtosis"], 2),
            "inf_norm": round(s["max_inf_norm"], 2),
        }
    return point


def train_variant(
    model: CLIP, name: str, setting: Setting, data: Data, samples, work: Path, args
) -> tuple[dict, list[dict]]:
    """Train from scratch in segments of ``--curve-every`` steps (each resumes from the last
    one's checkpoint), measuring the outliers after each: the summary and the kurtosis curve."""
    every = setting.curve_every or setting.steps
    cfg = PretrainConfig(
        model=setting.model,
        steps=setting.steps,
        batch_size=setting.batch_size,
        lr=setting.lr,
        warmup=min(setting.warmup, setting.steps),
        weight_decay=setting.weight_decay,
        precision="bf16",
        checkpoint_every=every,
        log_every=min(every, 50),
    )
    device = torch.device(args.device)
    model.to(device)
    curve = [kurtosis_point(model, samples, 0)] if setting.curve_every else []
    for done in range(every, setting.steps + every, every):
        with contextlib.suppress(Interrupted):  # the end of a segment, not of training
            summary = train(
                model,
                lambda start: on(device, data.batches(setting.batch_size, args.seed, start)),
                cfg,
                work / name / "train",
                desc=name,
                stop_after=every,
            )
        if setting.curve_every:
            curve.append(kurtosis_point(model, samples, min(done, setting.steps)))
            log(f"{name}: {curve[-1]}")
    model.cpu()
    return summary, curve


def injected(model: CLIP, spec: str) -> dict:
    """``--inject-outlier``'s ``<tower>.<MLP path>=SCALE`` done to ``model`` (in place): its
    first hidden channel scaled (:func:`compress.quant.outliers.inject_outlier`)."""
    where, _, scale = spec.partition("=")
    tower, path = where.split(".", 1)
    mlp = {"image": model.visual, "text": model.text}[tower].get_submodule(path)
    inject_outlier(mlp, float(scale))
    return {"mlp": where, "channel": 0, "scale": float(scale)}


def trained(
    name: str, setting: Setting, data: Data, samples, work: Path, args: argparse.Namespace
) -> tuple[CLIP, ModelRecord, dict]:
    """The variant's float model (eval mode) and its ``train`` row: read from its
    ``--model-file``, else trained from scratch (and saved where ``--save-models`` says)."""
    if name in args.model_files:
        path = args.model_files[name]
        log(f"{name}: reading {path}")
        model, record = load_model(path)
        return model.float().eval(), record, {"model_file": str(path)}
    record = record_for(setting, VARIANTS[name])
    torch.manual_seed(args.seed)
    model = record.build()
    log(f"{name}: training {setting.steps} steps")
    (summary, curve), train_s = timed(
        lambda: train_variant(model, name, setting, data, samples, work, args)
    )
    model = model.float().eval()
    if args.save_models is not None:  # to measure again without training (--model-file)
        save_model(model, record, args.save_models / name / "model.pt")
    row = {
        "steps": setting.steps,
        "final_loss": round(summary["final_loss"], 4),
        "samples_per_s": round(summary["samples_per_s"], 1),
        "seconds": train_s,
    }
    return model, record, row | ({"curve": curve} if curve else {})


def run_variant(
    name: str, setting: Setting, data: Data, samples, work: Path, args: argparse.Namespace
) -> dict:
    model, record, train_row = trained(name, setting, data, samples, work, args)
    curve = train_row.pop("curve", None)
    row = {
        "attention": record.attention,
        "params": count_params(model),
        "train": train_row,
    }
    if name == "softmax" and args.inject_outlier:
        row["injected_outlier"] = injected(model, args.inject_outlier)
        log(f"{name}: outlier channel injected: {row['injected_outlier']}")
    row["fp"] = data.zero_shot(model)
    log(f"{name}: fp top-1 {row['fp']['top1']:.3f}; outliers")
    row["outliers"] = outlier_summary(model, samples)
    if curve:
        row["outliers"]["curve"] = curve
    if args.no_quant:
        return row
    ptq = {}
    exported = None
    for calibration in CALIBRATIONS:
        quant = QuantConfig(calibration=calibration)
        quantized, seconds = timed(lambda q=quant: quantize(model, q, data.calibration(q)))
        ptq[calibration] = data.zero_shot(quantized) | {"quantize_s": seconds}
        log(f"{name}: ptq {calibration} top-1 {ptq[calibration]['top1']:.3f}")
        if calibration == args.export_calibration:
            exported = quantized
    row["ptq_sim"] = ptq
    if name == "softmax" and args.plan:  # before the exports: the plan's own are in it
        log(f"{name}: the mixed-precision plan within {args.max_drop} points")
        row["plan"] = mixed_plan(
            model,
            record,
            samples,
            data,
            work / name,
            args,
            exported,
            ptq[args.export_calibration],
            row["fp"],
        )
    row["artifacts"] = {"calibration": args.export_calibration}
    for target in args.targets:
        log(f"{name}: {target} int8 export")
        row["artifacts"][target] = artifact_top1(
            target, model, record, exported, samples, data, work / name / "export"
        )
    if name == "softmax" and args.nncf:
        log(f"{name}: NNCF baseline")
        row["nncf"] = nncf_top1(model, record, samples, data, work / name / "nncf")
    if name == "softmax" and args.plan:
        plan = row["plan"]
        if not plan["float_layers"]:  # global W8A8 fits: the plan is its files
            plan["artifacts"] = {t: row["artifacts"][t] for t in args.targets}
        folder = "plan" if plan["float_layers"] else "export"
        plan["host"] = host_latency(model, record, samples, work / name, folder, args)
    if setting.qat_steps:
        qat_cfg = QatConfig(
            steps=setting.qat_steps,
            batch_size=setting.batch_size,
            lr=setting.qat_lr,
            warmup=min(20, setting.qat_steps),
            precision="fp32",
            checkpoint_every=setting.qat_steps,
            log_every=max(1, setting.qat_steps // 5),
        )
        log(f"{name}: qat {setting.qat_steps} steps")
        (fake, qat_summary), seconds = timed(
            lambda: train_qat(
                model,
                QuantConfig(),
                qat_cfg,
                lambda start: data.batches(setting.batch_size, args.seed + 2, start),
                work / name / "qat",
            )
        )
        row["qat"] = data.zero_shot(convert(fake)) | {
            "steps": setting.qat_steps,
            "final_loss": round(qat_summary["final_loss"], 5),
            "seconds": seconds,
        }
        log(f"{name}: qat top-1 {row['qat']['top1']:.3f}")
    return row


def drops(row: dict) -> dict:
    """Points (top-1 × 100) lost from the float model on the headline task."""
    fp = row["fp"]["top1"]
    out = {}
    for calibration, r in row.get("ptq_sim", {}).items():
        out[f"ptq_sim_{calibration}"] = round(100 * (fp - r["top1"]), 2)
    for target in TARGETS:
        r = row.get("artifacts", {}).get(target)
        if r is not None:
            out[f"ptq_{target}"] = round(100 * (fp - r["top1"]), 2) if "top1" in r else None
    if "qat" in row:
        out["qat"] = round(100 * (fp - row["qat"]["top1"]), 2)
    if "top1" in row.get("nncf", {}):
        out["nncf_onnx"] = round(100 * (fp - row["nncf"]["top1"]), 2)
    if "plan" in row:
        out["plan_sim"] = row["plan"]["drop_points"]
        for target, r in row["plan"]["artifacts"].items():
            out[f"plan_{target}"] = round(100 * (fp - r["top1"]), 2) if "top1" in r else None
    return out


def side_by_side(row: dict, drop: dict) -> dict:
    """The softmax model's INT8 options on one line each: global W8A8, the mixed-precision plan
    and NNCF's SmoothQuant PTQ; drops in points of headline top-1, and per target and tower the
    files' bytes and p50 latency (ms, batch 1) beside fp32's."""
    plan = row["plan"]
    calibration = plan["calibration"]
    names = {
        f"ptq_sim_{calibration}": "global_w8a8_sim",
        **{f"ptq_{t}": f"global_w8a8_{t}" for t in TARGETS},
        "plan_sim": "plan_sim",
        **{f"plan_{t}": f"plan_{t}" for t in TARGETS},
        "nncf_onnx": "nncf_smoothquant_onnx",
    }
    host = plan.get("host", {})
    return {
        "max_drop_points": plan["max_drop_points"],
        "float_layers": plan["float_layers"],
        "float_params": f"{plan['float_params']:,} of {plan['params']:,}",
        "within_budget": plan["within_budget"],
        "drop_points": {new: drop[old] for old, new in names.items() if old in drop},
        "bytes": {
            target: {
                tower: {k: r["bytes"] for k, r in files.items()} for tower, files in towers.items()
            }
            for target, towers in host.items()
        },
        "p50_ms": {
            target: {
                tower: {k: r["p50_ms"] for k, r in files.items()} for tower, files in towers.items()
            }
            for target, towers in host.items()
        },
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def summarize(rows: dict) -> dict:
    """Drops from the float model, kurtosis ratios softmax / other, and one row per variant."""
    summary = {"drop_points": {name: drops(row) for name, row in rows.items()}}
    base = rows.get("softmax")
    if base is not None:
        summary["kurtosis_ratio"] = {}
        for other in ("clipped", "gated"):
            if other not in rows:
                continue
            mine, theirs = base["outliers"], rows[other]["outliers"]
            summary["kurtosis_ratio"][f"softmax/{other}"] = {
                tower: {
                    "per_token": ratio(
                        s["mean_kurtosis"], theirs["summary"][tower]["mean_kurtosis"]
                    ),
                    "per_sample": ratio(
                        mine["sequence_kurtosis"][tower]["mean_kurtosis"],
                        theirs["sequence_kurtosis"][tower]["mean_kurtosis"],
                    ),
                    "max_inf_norm": ratio(
                        s["max_inf_norm"], theirs["summary"][tower]["max_inf_norm"]
                    ),
                }
                for tower, s in mine["summary"].items()
            }
    table = {}
    for name, row in rows.items():
        outliers = row["outliers"]
        entry = {
            "fp_top1": row["fp"]["top1"],
            "fp_mean_top1": row["fp"]["mean_top1"],
            "max_inf_norm": {t: s["max_inf_norm"] for t, s in outliers["summary"].items()},
            "mean_kurtosis": {t: s["mean_kurtosis"] for t, s in outliers["summary"].items()},
            "mean_sequence_kurtosis": {
                t: s["mean_kurtosis"] for t, s in outliers["sequence_kurtosis"].items()
            },
        }
        for calibration, r in row.get("ptq_sim", {}).items():
            entry[f"ptq_sim_{calibration}_top1"] = r["top1"]
        for target in TARGETS:
            r = row.get("artifacts", {}).get(target)
            if r is not None:
                entry[f"{target}_int8_top1"] = r.get("top1")
                entry[f"{target}_int8_parity"] = r.get("parity_check", r.get("error"))
        if "qat" in row:
            entry["qat_top1"] = row["qat"]["top1"]
        if "nncf" in row:
            entry["nncf_onnx_top1"] = row["nncf"].get("top1", row["nncf"].get("error"))
        table[name] = entry
    summary["table"] = table
    if base is not None and "plan" in base:
        summary["mixed_plan"] = side_by_side(base, summary["drop_points"]["softmax"])
    return summary


def goals(summary: dict) -> dict:
    """The experiment's goals, each with the numbers it was judged on."""
    drop = summary["drop_points"]
    out = {}
    for name in ("clipped", "gated"):
        if name not in drop:
            continue
        sim = {k: v for k, v in drop[name].items() if k.startswith("ptq_sim")}
        out[f"{name}_ptq_within_2_points"] = {
            "met": min(sim.values()) <= 2 if sim else None,
            "drop_points": sim,
        }
        if "qat" in drop[name]:
            out[f"{name}_qat_within_1_point"] = {
                "met": drop[name]["qat"] <= 1,
                "drop_points": drop[name]["qat"],
            }
    plan = summary.get("mixed_plan")
    if plan is not None:
        budget, drops_ = plan["max_drop_points"], plan["drop_points"]
        everything = drops_.get("global_w8a8_sim")
        out["plan_within_budget_where_global_w8a8_is_not"] = {
            "met": plan["within_budget"] and everything is not None and everything > budget,
            "max_drop_points": budget,
            "drop_points": drops_,
            "float_layers": plan["float_layers"],
        }
    nncf = drop.get("softmax", {}).get("nncf_onnx")
    if nncf is not None:
        ours = {  # the deployed INT8 files of the outlier-free variants
            f"{name}_{key}": value
            for name in ("clipped", "gated")
            for key, value in drop.get(name, {}).items()
            if key in ("ptq_onnx", "ptq_executorch", "qat") and value is not None
        }
        # like for like: PTQ in onnxruntime, the better of clipped and gated
        onnx = [v for k, v in ours.items() if k.endswith("_ptq_onnx")]
        out["outlier_free_beats_nncf_softmax"] = {
            "met": min(onnx) < nncf if onnx else None,
            "nncf_drop_points": nncf,
            "ours_drop_points": ours,
        }
    for pair, towers in summary.get("kurtosis_ratio", {}).items():
        best = max(
            (r for t in towers.values() for r in (t["per_token"], t["per_sample"]) if r),
            default=None,
        )
        out[f"kurtosis_10x_lower_{pair.split('/')[1]}"] = {
            "met": best is not None and best >= 10,
            "largest_ratio": best,
        }
    return out


def model_file(spec: str, parser: argparse.ArgumentParser) -> tuple[str, Path]:
    """``--model-file``'s ``[VARIANT=]PATH``: the variant it stands for and the file; without a
    name, the variant its attention (the same in both towers) is."""
    name, _, path = spec.rpartition("=")
    if not name:
        kinds = {(a or {}).get("kind", "softmax") for a in read_record(path).attention.values()}
        name = kinds.pop() if len(kinds) == 1 else ""
    if name not in VARIANTS:
        parser.error(f"--model-file {spec}: name its variant ({', '.join(VARIANTS)})=PATH")
    return name, Path(path)


def same_inputs(records: list[ModelRecord], parser: argparse.ArgumentParser) -> ModelRecord | None:
    """The first of the ``--model-file`` records, checked to read the same images and captions
    as the others (the data is decoded once, for all)."""
    inputs = {(r.image_size, str(r.normalization), r.context_length) for r in records}
    if len(inputs) > 1:
        parser.error(f"--model-file: the models read different inputs {sorted(inputs)}")
    return records[0] if records else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=SETTINGS, default="plain")
    parser.add_argument("--data", type=Path, help="a scenes folder (written there if missing)")
    parser.add_argument("--model", help="override the setting's registry model")
    parser.add_argument("--steps", type=int, help="override the setting's training steps")
    parser.add_argument("--qat-steps", type=int, help="override the setting's QAT steps (0: none)")
    parser.add_argument("--batch-size", type=int, help="override the setting's batch size")
    parser.add_argument("--lr", type=float, help="override the setting's learning rate")
    parser.add_argument("--weight-decay", type=float, help="override the setting's weight decay")
    parser.add_argument(
        "--config",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="architecture changes on top of the setting's, e.g. vision.patch_size=8",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        help="which to measure (default: all three, or those of --model-file)",
    )
    parser.add_argument(
        "--model-file",
        nargs="+",
        default=[],
        metavar="[VARIANT=]PATH",
        help="measure this float model.pt instead of training the variant (named by its "
        "attention unless given): --save-models' files, or any run's model",
    )
    parser.add_argument("--targets", nargs="*", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--export-calibration", choices=CALIBRATIONS, default="minmax")
    parser.add_argument("--no-quant", action="store_true", help="float and outliers only")
    parser.add_argument(
        "--no-nncf", dest="nncf", action="store_false", help="skip the NNCF baseline"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--curve-every",
        type=int,
        help="measure the outliers every N training steps (0: at the end)",
    )
    parser.add_argument("--device", default="cpu", help="where the float models train")
    parser.add_argument("--heldout", type=int, default=256, help="held-out samples for outliers")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--save-models",
        type=Path,
        metavar="DIR",
        help="write each trained model to DIR/<variant>/model.pt",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="the mixed-precision plan's budget: points of headline top-1 (softmax model)",
    )
    parser.add_argument("--no-plan", dest="plan", action="store_false", help="skip the plan")
    parser.add_argument(
        "--inject-outlier",
        metavar="MLP=SCALE",
        help="give the softmax model an outlier channel first, e.g. image.blocks.1.mlp=200 "
        "(the first hidden channel of that MLP scaled, its projection column unscaled)",
    )
    parser.add_argument("--runs", type=int, default=100, help="timed runs per file (host latency)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs before them")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setting = SETTINGS[args.setting]
    overrides = {
        "model": args.model,
        "steps": args.steps,
        "qat_steps": args.qat_steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "curve_every": args.curve_every,
    }
    if args.config:
        changes = dict(setting.config)
        for item in args.config:
            key, _, value = item.partition("=")
            changes[key] = json.loads(value)
        overrides["config"] = tuple(changes.items())
    setting = replace(setting, **{k: v for k, v in overrides.items() if v is not None})
    start, load = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    root = scenes(args.data)
    args.model_files = dict(model_file(spec, parser) for spec in args.model_file)
    args.variants = args.variants or list(args.model_files or VARIANTS)
    probe = same_inputs([read_record(p) for p in args.model_files.values()], parser) or record_for(
        setting, VARIANTS["softmax"]
    )
    data = Data(root, probe, list(load_recipe(DEMO_RECIPE).eval.templates))
    samples = heldout_samples(probe, args.heldout, root / "retrieval.csv")
    rows = {}
    # stdout carries the JSON alone: the training loop's own notes ("resuming from the
    # checkpoint at step N", at every curve point) go to stderr with the progress
    with (
        tempfile.TemporaryDirectory(prefix="bench-outliers-") as work,
        contextlib.redirect_stdout(sys.stderr),
    ):
        for name in args.variants:
            rows[name] = run_variant(name, setting, data, samples, Path(work), args)
    summary = summarize(rows)
    result = {
        "machine": machine(),  # CPU, capability, fp32 and bf16 GEMM rates
        "threads": torch.get_num_threads(),
        "load_average_at_start": load,  # other processes on a shared machine slow every timing
        "libraries": library_versions(),
        "device": args.device,
        "setting": {"name": args.setting, **asdict(setting)},
        "data": str(root),
        "task": TASK,
        "templates": data.templates,
        "variants": rows,
        "summary": summary,
        "goals": goals(summary),
        "paper_reference": PAPER,
        "total_s": round(time.perf_counter() - start, 1),
    }
    if args.out is not None:
        write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
