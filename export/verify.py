"""Parity of an exported model with the eager PyTorch model: cosine, max-abs difference, zero-shot agreement."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Thresholds:
    """How close an exported tower must stay to eager PyTorch."""

    min_cosine: float  # smallest per-row cosine similarity of the embeddings
    max_abs: float  # largest absolute difference of any embedding value
    min_zero_shot_agreement: float  # fraction of images whose best-matching text is unchanged


# The parity each precision must keep with eager fp32 PyTorch on held-out samples: fp32 matches
# to float rounding, fp16 to half-precision rounding; both keep the same best text for ≥ 99% of
# images.
PARITY = {
    "fp32": Thresholds(min_cosine=0.9999, max_abs=1e-4, min_zero_shot_agreement=0.99),
    "fp16": Thresholds(min_cosine=0.999, max_abs=5e-3, min_zero_shot_agreement=0.99),
    # int8 against the INT8 simulation it was lowered from: the runtimes' integer kernels
    # round (and requantize) differently from PyTorch's float quantize/dequantize
    "int8": Thresholds(min_cosine=0.99, max_abs=0.05, min_zero_shot_agreement=0.95),
    # weight-only, against the weight-only simulation: the same integer weights, float
    # activations in onnxruntime and Core ML (parity at float rounding); ExecuTorch's XNNPACK
    # kernels quantize the activations of each linear layer to int8 per token on the fly
    # (its only low-bit linear kernels), which costs that target most of these margins
    "w8": Thresholds(min_cosine=0.995, max_abs=0.02, min_zero_shot_agreement=0.95),
    "w4": Thresholds(min_cosine=0.995, max_abs=0.02, min_zero_shot_agreement=0.95),
}
FP32_PARITY = PARITY["fp32"]


TOWERS = ("image", "text")


def tower_precisions(precision: str) -> dict[str, str]:
    """Each tower's precision in an artifact's: ``"int8+w4"`` is an int8 image tower and a w4
    text tower; a single precision (``"w4"``) is both towers'.

    Example:
        >>> tower_precisions("int8+w4")
        {'image': 'int8', 'text': 'w4'}
    """
    image, plus, text = precision.partition("+")
    return {"image": image, "text": text if plus else image}


def artifact_precision(precisions: Mapping[str, str]) -> str:
    """The artifact's precision from its towers': ``"w4"`` where both are w4, else
    ``"<image>+<text>"`` (the inverse of :func:`tower_precisions`)."""
    image, text = (precisions[tower] for tower in TOWERS)
    return image if image == text else f"{image}+{text}"


def parity_thresholds(precision: str) -> dict[str, Thresholds]:
    """Each tower's :data:`PARITY` in an artifact at ``precision`` (mixed ones too: the
    zero-shot agreement ranks the image tower's embeddings against the text tower's, so both
    towers' records hold the looser of their precisions' agreement bounds)."""
    towers = {tower: PARITY[p] for tower, p in tower_precisions(precision).items()}
    agreement = min(t.min_zero_shot_agreement for t in towers.values())
    return {t: replace(th, min_zero_shot_agreement=agreement) for t, th in towers.items()}


SAMPLES_FILE = "parity.npz"  # in each tower folder: inputs and eager outputs that verify reruns
SAMPLES_KEPT = 16  # rows of each stored: enough to rerun the check, small beside the model


class ParityError(RuntimeError):
    """An exported model's outputs differ from the PyTorch model's by more than the thresholds allow."""


def run_batched(
    fn: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, batch_size: int
) -> np.ndarray:
    """Run a fixed-batch model over any number of rows.

    The last batch is padded by repeating its last row (a real input, so padding cannot hit a
    path that real data never takes) and the padding rows are dropped from the result.

    Example:
        >>> run_batched(lambda x: x * 2, np.arange(5.0).reshape(5, 1), batch_size=2).ravel()
        array([0., 2., 4., 6., 8.])
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(inputs) == 0:
        raise ValueError("no inputs to run")
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        real = len(batch)
        if real < batch_size:
            pad = np.repeat(batch[-1:], batch_size - real, axis=0)
            batch = np.concatenate([batch, pad], axis=0)
        outputs.append(np.asarray(fn(batch))[:real])
    return np.concatenate(outputs, axis=0)


@torch.no_grad()
def run_torch(module: nn.Module, inputs: torch.Tensor | np.ndarray, batch_size: int) -> np.ndarray:
    """The eager reference, fed the same fixed-size (padded) batches as the exported model."""
    module.eval()
    array = inputs.numpy() if isinstance(inputs, torch.Tensor) else inputs
    return run_batched(
        lambda batch: module(torch.from_numpy(batch)).float().numpy(), array, batch_size
    )


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Row-wise agreement of two (N, D) embedding matrices.

    Returns ``{"rows", "cosine_min", "cosine_mean", "max_abs"}``; cosine is per row, computed in
    float64 so the measurement itself adds no rounding.

    Example:
        >>> a = np.eye(2, dtype=np.float32)
        >>> compare(a, a)["cosine_min"]
        1.0
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim != 2:
        raise ValueError(
            f"compare needs two (N, D) arrays of one shape, got {ref.shape} and {cand.shape}"
        )
    dots = (ref * cand).sum(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = dots / np.maximum(norms, 1e-12)
    return {
        "rows": int(ref.shape[0]),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "max_abs": float(np.abs(ref - cand).max()),
    }


def measure(
    reference: Mapping[str, np.ndarray], exported: Mapping[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Per tower, :func:`compare` of its embeddings plus the zero-shot agreement of the two
    runtimes' image·text rankings (the same number in both towers' records)."""
    agreement = zero_shot_agreement(
        reference["image"], reference["text"], exported["image"], exported["text"]
    )
    return {
        tower: {
            **compare(reference[tower], exported[tower]),
            "zero_shot_agreement": agreement,
            "zero_shot_images": len(reference["image"]),
            "zero_shot_texts": len(reference["text"]),
        }
        for tower in TOWERS
    }


def save_samples(folder: Path, inputs: np.ndarray, reference: np.ndarray) -> Path:
    """Keep the first :data:`SAMPLES_KEPT` parity inputs and their eager outputs in ``folder``."""
    path = folder / SAMPLES_FILE
    with open(path, "wb") as f:
        np.savez_compressed(f, inputs=inputs[:SAMPLES_KEPT], reference=reference[:SAMPLES_KEPT])
    return path


def load_samples(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The inputs and eager outputs :func:`save_samples` kept."""
    with np.load(folder / SAMPLES_FILE, allow_pickle=False) as data:
        return data["inputs"], data["reference"]


def zero_shot_agreement(
    reference_images: np.ndarray,
    reference_texts: np.ndarray,
    candidate_images: np.ndarray,
    candidate_texts: np.ndarray,
) -> float:
    """Fraction of images whose best-matching text (argmax of image·textᵀ) is the same in both runtimes.

    The embeddings are L2-normalised tower outputs, so the logit scale does not change the argmax.
    """
    reference = (np.asarray(reference_images) @ np.asarray(reference_texts).T).argmax(axis=1)
    candidate = (np.asarray(candidate_images) @ np.asarray(candidate_texts).T).argmax(axis=1)
    return float((reference == candidate).mean())


def check(parity: Mapping[str, Any], thresholds: Thresholds, artifact_name: str) -> None:
    """Raise :class:`ParityError` if ``parity`` (from :func:`compare`) misses a threshold.

    Args:
        parity: measured numbers; ``zero_shot_agreement`` is checked when present.
        thresholds: the bounds.
        artifact_name: names the artifact in the one-line error message.

    Example:
        >>> check({"cosine_min": 0.99, "max_abs": 0.1}, FP32_PARITY, "image/model.onnx")
        Traceback (most recent call last):
        ...
        export.verify.ParityError: image/model.onnx: parity check failed: cosine min 0.990000 < 0.9999; max-abs 0.1 > 0.0001
    """
    # Written as `not (measured within bound)` so a NaN measurement fails instead of slipping through.
    failures = []
    if not parity["cosine_min"] >= thresholds.min_cosine:
        failures.append(f"cosine min {parity['cosine_min']:.6f} < {thresholds.min_cosine:g}")
    if not parity["max_abs"] <= thresholds.max_abs:
        failures.append(f"max-abs {parity['max_abs']:.3g} > {thresholds.max_abs:g}")
    agreement = parity.get("zero_shot_agreement")
    if agreement is not None and not agreement >= thresholds.min_zero_shot_agreement:
        failures.append(
            f"zero-shot agreement {agreement:.4f} < {thresholds.min_zero_shot_agreement:g}"
        )
    if failures:
        raise ParityError(f"{artifact_name}: parity check failed: {'; '.join(failures)}")
