"""Export a CLIP model's two towers to one target, verified against PyTorch, with manifests.

Everything here is the same for every target: folding train-time branches, fixed-batch examples,
atomic tower folders, the parity check against the unfolded eager model, the shipped vocabulary
and the manifests. What differs per format is a :class:`export.targets.Target`.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from compress.models import CLIP, ModelRecord, reparameterize
from compress.models.clip import NormalizedTower
from compress.tokenizer import SOT_ID, Tokenizer
from export.manifest import (
    MANIFEST_NAME,
    atomic_dir,
    image_preprocessing,
    sha256_file,
    tokenizer_spec,
    tower_manifest,
    write_manifest,
)
from export.targets import Target, exporters
from export.verify import (
    FP32_PARITY,
    Thresholds,
    check,
    compare,
    run_batched,
    run_torch,
    zero_shot_agreement,
)

IMAGE_INPUT, TEXT_INPUT = "image", "tokens"


def _first_batch(samples: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The first ``batch_size`` samples, padded by repeating the last: a realistic tracing example."""
    batch = samples[:batch_size]
    if len(batch) < batch_size:
        batch = torch.cat([batch, batch[-1:].expand(batch_size - len(batch), *batch.shape[1:])])
    return batch.contiguous()


def _check_inputs(model: CLIP, images: torch.Tensor, tokens: torch.Tensor, batch_size: int) -> None:
    size, context = model.visual.image_size, model.text.context_length
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size) or len(images) == 0:
        raise ValueError(
            f"sample_images must be (N, 3, {size}, {size}) with N >= 1, got {tuple(images.shape)}"
        )
    if tokens.ndim != 2 or tokens.shape[1] != context or len(tokens) == 0:
        raise ValueError(
            f"sample_tokens must be (M, {context}) with M >= 1, got {tuple(tokens.shape)}"
        )
    if tokens.is_floating_point():
        raise ValueError(f"sample_tokens must be integer token ids, got {tokens.dtype}")
    params = list(model.parameters())
    if any(p.device.type != "cpu" for p in params):
        raise ValueError("export needs the model on the CPU; call model.cpu() first")
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in params):
        raise ValueError("export takes an fp32 model; call model.float() first")


def export_model(
    model: CLIP,
    record: ModelRecord,
    out_dir: str | os.PathLike,
    *,
    target: str | Target = "onnx",
    sample_images: torch.Tensor,
    sample_tokens: torch.Tensor,
    batch_size: int = 1,
    recipe_hash: str | None = None,
    thresholds: Thresholds = FP32_PARITY,
    vocab_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export the image and text towers to ``out_dir/image`` and ``out_dir/text``, verified.

    Each folder gets the target's model file (fixed shapes: ``image`` (batch_size, 3, S, S)
    float32 or ``tokens`` (batch_size, context_length) int64 → ``embedding`` (batch_size, D),
    L2-normalised) and ``manifest.json``; the text folder also gets the tokenizer's vocabulary.
    Both towers are run in the target's runtime over the samples and compared with eager
    PyTorch; the folders appear only if both pass, replacing earlier exports. Train-time
    branches (MobileCLIP-style blocks) are folded in a copy before export, and the parity
    reference is the unfolded model, so the check covers the folding too. The model is given
    back in its original mode.

    Args:
        model: the CLIP model to export (CPU, fp32).
        record: its record: name, image normalisation, attention and precision for the manifests.
        out_dir: parent folder of the two tower folders.
        target: a registered target name (``export.exporters``) or a target object.
        sample_images: (N, 3, S, S) float images, already preprocessed, for the parity check.
        sample_tokens: (M, context_length) token ids, for the parity check.
        batch_size: the fixed batch dimension of both exported models.
        recipe_hash: hash of the recipe that produced the model, recorded in the manifests.
        thresholds: the parity the export must keep (:data:`export.verify.FP32_PARITY`).
        vocab_path: BPE vocabulary to ship; the tokenizer's own by default.

    Returns:
        ``{"image": {...}, "text": {...}, "zero_shot_agreement": float}``, each tower with its
        ``dir``, ``model``, ``manifest`` paths, ``bytes`` (model file size) and ``parity``;
        the text tower also with ``vocab``.

    Raises:
        export.verify.ParityError: a tower missed a threshold.

    Example:
        >>> record = ModelRecord.named("tiny")
        >>> summary = export_model(  # doctest: +SKIP
        ...     record.build(), record, "out/onnx", target="onnx",
        ...     sample_images=torch.rand(8, 3, 32, 32), sample_tokens=Tokenizer(16)(["a red circle"]),
        ... )
        >>> summary["image"]["parity"]["cosine_min"]  # doctest: +SKIP
        0.9999999
    """
    backend = exporters.get(target)() if isinstance(target, str) else target
    _check_inputs(model, sample_images, sample_tokens, batch_size)
    out_dir = Path(out_dir)
    context = model.text.context_length
    vocab = Path(vocab_path) if vocab_path is not None else Tokenizer(context).vocab_path
    images = sample_images.float().contiguous()
    tokens = sample_tokens.long().contiguous()  # int64, as the tokenizer gives it
    samples = {"image": images, "text": tokens}
    inputs = {"image": IMAGE_INPUT, "text": TEXT_INPUT}

    was_training = model.training
    model.eval()
    deployed = reparameterize(copy.deepcopy(model))
    try:
        with atomic_dir(out_dir / "image") as image_dir, atomic_dir(out_dir / "text") as text_dir:
            folders = {"image": image_dir, "text": text_dir}
            reference, exported, details = {}, {}, {}
            for tower, folder in folders.items():
                path = folder / backend.file_name
                details[tower] = backend.export(
                    NormalizedTower(_tower(deployed, tower)),
                    _first_batch(samples[tower], batch_size),
                    path,
                    inputs[tower],
                )
                reference[tower] = run_torch(
                    NormalizedTower(_tower(model, tower)), samples[tower], batch_size
                )
                exported[tower] = run_batched(
                    backend.load(path), samples[tower].numpy(), batch_size
                )
            agreement = zero_shot_agreement(
                reference["image"], reference["text"], exported["image"], exported["text"]
            )
            parity = {
                tower: {
                    **compare(reference[tower], exported[tower]),
                    "zero_shot_agreement": agreement,
                    "zero_shot_images": len(images),
                    "zero_shot_texts": len(tokens),
                    "reference": "eager PyTorch fp32 on CPU",
                    "runtime": backend.runtime(),
                    "thresholds": vars(thresholds),
                }
                for tower in folders
            }
            for tower in folders:
                where = out_dir / tower / backend.file_name
                check(
                    parity[tower],
                    thresholds,
                    f"{record.name} {tower} tower ({backend.name}, {where})",
                )

            shutil.copyfile(vocab, text_dir / vocab.name)
            extra = {
                "image": {
                    "preprocessing": image_preprocessing(
                        model.visual.image_size, **record.normalization
                    )
                },
                "text": {
                    "tokenizer": tokenizer_spec(vocab.name, context, SOT_ID, model.text.eot_id)
                },
            }
            for tower, folder in folders.items():
                path = folder / backend.file_name
                io_in, io_out = backend.io_specs(path, inputs[tower])
                manifest = tower_manifest(
                    model_name=record.name,
                    tower=tower,
                    backend=backend.name,
                    precision=record.precision,
                    file_name=backend.file_name,
                    sha256=sha256_file(path),
                    inputs=io_in,
                    outputs=io_out,
                    embed_dim=int(reference["image"].shape[1]),
                    logit_scale=float(model.logit_scale.detach().exp()),
                    recipe_hash=recipe_hash,
                    attention=record.attention[tower],
                    parity=parity[tower],
                    format_details=details[tower],
                    **extra[tower],
                )
                write_manifest(folder, manifest)
            sizes = {
                tower: (folder / backend.file_name).stat().st_size
                for tower, folder in folders.items()
            }
    finally:
        model.train(was_training)

    summary: dict[str, Any] = {"zero_shot_agreement": agreement}
    for tower in folders:
        folder = out_dir / tower
        summary[tower] = {
            "dir": str(folder),
            "model": str(folder / backend.file_name),
            "manifest": str(folder / MANIFEST_NAME),
            "bytes": sizes[tower],
            "parity": parity[tower],
        }
    summary["text"]["vocab"] = str(out_dir / "text" / vocab.name)
    return summary


def _tower(model: CLIP, tower: str):
    return model.visual if tower == "image" else model.text
