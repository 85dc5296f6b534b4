"""Export a CLIP model's two towers to fixed-shape ONNX files, each with a manifest and measured parity."""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.models.clip import CLIP, NormalizedTower
from compress.models.mobile import reparameterize
from compress.tokenizer import SOT_ID, Tokenizer
from export.manifest import (
    MANIFEST_NAME,
    atomic_dir,
    image_preprocessing,
    library_versions,
    sha256_file,
    tensor_spec,
    tokenizer_spec,
    tower_manifest,
    write_manifest,
)
from export.verify import check, compare, run_onnx, run_torch, zero_shot_agreement

MODEL_FILE = "model.onnx"
IMAGE_INPUT, TEXT_INPUT, OUTPUT = "image", "tokens", "embedding"


def export_tower(
    tower: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike,
    *,
    input_name: str,
    opset: int = 18,
) -> Path:
    """Export ``NormalizedTower(tower)`` to one self-contained ONNX file whose shapes are those of ``example``.

    We use the torch.export-based exporter (``dynamo=True``): it is the maintained path (the
    TorchScript one warns that it will be removed), and it exports all three attention variants,
    the causal mask and the int32 EOT argmax as plain ONNX ops with parity at float rounding.
    Its one quirk here: it names values after the aten op that made them, so a text tower's token
    lookup is already called ``embedding`` and asking for an output of that name breaks SSA; we
    rename after export instead (see :func:`_name_output`).

    Example:
        >>> export_tower(model.visual, torch.rand(1, 3, 32, 32), "image.onnx", input_name="image")  # doctest: +SKIP
    """
    import onnx  # lazy: importing edgeclip must not load onnx

    path = Path(path)
    module = NormalizedTower(tower).eval()
    with warnings.catch_warnings():
        # torch's own pytree code trips its own deprecation warning in 2.13; not ours to act on.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[input_name],
            verbose=False,
        )
    _name_output(program.model.graph, OUTPUT)
    program.save(path, external_data=False)  # one file: apps ship it without a side-car .data
    onnx.checker.check_model(os.fspath(path), full_check=True)
    return path


def _name_output(graph: Any, name: str) -> None:
    """Call the graph's single output ``name``, first renaming any inner value that already has it."""
    (output,) = graph.outputs
    for node in graph:
        for value in node.outputs:
            if value.name == name and value is not output:
                value.name = f"{name}_inner"
    output.name = name


def _io_specs(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs as the saved file declares them, so the manifest cannot disagree with the model."""
    import onnx

    graph = onnx.load(os.fspath(path)).graph

    def spec(value: Any, **extra: Any) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return tensor_spec(value.name, [d.dim_value for d in tensor.shape.dim], dtype, **extra)

    return [spec(v) for v in graph.input], [spec(v, l2_normalized=True) for v in graph.output]


def _first_batch(samples: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The first ``batch_size`` samples, padded by repeating the last: a realistic tracing example."""
    batch = samples[:batch_size]
    if len(batch) < batch_size:
        batch = torch.cat([batch, batch[-1:].expand(batch_size - len(batch), *batch.shape[1:])])
    return batch.contiguous()


def _image_preprocessing(preprocessing: dict[str, Any], size: int) -> dict[str, Any]:
    """The manifest's preprocessing block from the caller's dict (``mean``, ``std``, overrides)."""
    options = dict(preprocessing)
    missing = [key for key in ("mean", "std") if key not in options]
    if missing:
        raise ValueError(
            f"preprocessing needs {' and '.join(missing)} (per RGB channel, for [0, 1] inputs)"
        )
    given = options.pop("size", size)
    given_hw = list(given) if isinstance(given, (list, tuple)) else [given, given]
    if given_hw != [size, size]:
        raise ValueError(
            f"preprocessing size {given} does not match the image tower's input size {size}"
        )
    return image_preprocessing(size, **options)


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
        raise ValueError("export_onnx needs the model on the CPU; call model.cpu() first")
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in params):
        raise ValueError("export_onnx exports fp32; call model.float() first")


def export_onnx(
    model: CLIP,
    out_dir: str | os.PathLike,
    *,
    model_name: str,
    preprocessing: dict[str, Any],
    sample_images: torch.Tensor,
    sample_tokens: torch.Tensor,
    batch_size: int = 1,
    opset: int = 18,
    recipe_hash: str | None = None,
    tolerance: float = 1e-4,
    min_cosine: float = 0.999,
    vocab_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export the image and text towers to ``out_dir/image`` and ``out_dir/text``, verified in ONNX Runtime.

    Each folder gets ``model.onnx`` (fixed shapes: ``image`` (batch_size, 3, S, S) float32 or
    ``tokens`` (batch_size, context_length) int64 → ``embedding`` (batch_size, D), L2-normalised)
    and ``manifest.json``; the text folder also gets the tokenizer's vocabulary file. Both
    towers are run in ONNX Runtime over the samples and compared with eager PyTorch; the folders
    appear only if both pass, replacing earlier exports. Train-time branches (MobileCLIP-style
    blocks) are folded in a copy before export, and the parity reference is the unfolded model,
    so the check covers the folding too. The model is given back in its original mode.

    Args:
        model: the CLIP model to export (CPU, fp32).
        out_dir: parent folder of the two tower folders.
        model_name: the name recorded in the manifests.
        preprocessing: image preprocessing for the manifest: ``mean`` and ``std`` (RGB, for
            inputs in [0, 1]) plus any field of :func:`export.manifest.image_preprocessing` to
            override (``size``, if given, must be the tower's input size).
        sample_images: (N, 3, S, S) float images, already preprocessed, for the parity check.
        sample_tokens: (M, context_length) token ids, for the parity check.
        batch_size: the fixed batch dimension of both exported models.
        opset: ONNX opset.
        recipe_hash: hash of the recipe that produced the model, recorded in the manifests.
        tolerance: largest allowed max-abs difference of the embeddings.
        min_cosine: smallest allowed per-row cosine similarity.
        vocab_path: BPE vocabulary to ship; the tokenizer's own by default.

    Returns:
        ``{"image": {...}, "text": {...}, "zero_shot_agreement": float}``, each tower with its
        ``dir``, ``model``, ``manifest`` paths, ``bytes`` (model file size) and ``parity``;
        the text tower also with ``vocab``.

    Raises:
        export.verify.ParityError: a tower's outputs missed ``min_cosine`` or ``tolerance``.

    Example:
        >>> from compress.models import build_model
        >>> model = build_model("tiny")
        >>> summary = export_onnx(  # doctest: +SKIP
        ...     model, "out/onnx", model_name="tiny",
        ...     preprocessing={"mean": OPENAI_MEAN, "std": OPENAI_STD},
        ...     sample_images=torch.rand(8, 3, 32, 32), sample_tokens=Tokenizer(16)(["a red circle"]),
        ... )
        >>> summary["image"]["parity"]["cosine_min"]  # doctest: +SKIP
        0.9999999
    """
    _check_inputs(model, sample_images, sample_tokens, batch_size)
    out_dir = Path(out_dir)
    context = model.text.context_length
    image_prep = _image_preprocessing(preprocessing, model.visual.image_size)
    vocab = Path(vocab_path) if vocab_path is not None else Tokenizer(context).vocab_path
    images = sample_images.float().contiguous()
    # The exported input is int64, as the tokenizer gives it; the tower casts to int32 itself.
    tokens = sample_tokens.long().contiguous()
    thresholds = {"min_cosine": min_cosine, "max_abs": tolerance}
    ort_version = library_versions(["onnxruntime"]).get("onnxruntime", "?")
    runtime = f"onnxruntime {ort_version} CPUExecutionProvider"

    was_training = model.training
    model.eval()
    deployed = reparameterize(copy.deepcopy(model))
    try:
        with atomic_dir(out_dir / "image") as image_dir, atomic_dir(out_dir / "text") as text_dir:
            image_path = export_tower(
                deployed.visual,
                _first_batch(images, batch_size),
                image_dir / MODEL_FILE,
                input_name=IMAGE_INPUT,
                opset=opset,
            )
            text_path = export_tower(
                deployed.text,
                _first_batch(tokens, batch_size),
                text_dir / MODEL_FILE,
                input_name=TEXT_INPUT,
                opset=opset,
            )

            ref_images = run_torch(NormalizedTower(model.visual), images, batch_size)
            ref_texts = run_torch(NormalizedTower(model.text), tokens, batch_size)
            onnx_images = run_onnx(image_path, images.numpy(), batch_size)
            onnx_texts = run_onnx(text_path, tokens.numpy(), batch_size)
            agreement = zero_shot_agreement(ref_images, ref_texts, onnx_images, onnx_texts)

            def parity_of(reference, candidate) -> dict[str, Any]:
                return {
                    **compare(reference, candidate),
                    "zero_shot_agreement": agreement,
                    "zero_shot_images": len(images),
                    "zero_shot_texts": len(tokens),
                    "reference": "eager PyTorch fp32 on CPU",
                    "runtime": runtime,
                    "thresholds": thresholds,
                }

            image_parity = parity_of(ref_images, onnx_images)
            text_parity = parity_of(ref_texts, onnx_texts)
            check(
                image_parity,
                thresholds,
                f"{model_name} image tower (ONNX, {out_dir / 'image' / MODEL_FILE})",
            )
            check(
                text_parity,
                thresholds,
                f"{model_name} text tower (ONNX, {out_dir / 'text' / MODEL_FILE})",
            )

            shutil.copyfile(vocab, text_dir / vocab.name)
            common = {
                "model_name": model_name,
                "backend": "onnx",
                "precision": "fp32",
                "file_name": MODEL_FILE,
                "embed_dim": int(ref_images.shape[1]),
                "logit_scale": float(model.logit_scale.detach().exp()),
                "recipe_hash": recipe_hash,
            }
            image_inputs, image_outputs = _io_specs(image_path)
            write_manifest(
                image_dir,
                tower_manifest(
                    **common, tower="image", sha256=sha256_file(image_path), inputs=image_inputs,
                    outputs=image_outputs, preprocessing=image_prep, parity=image_parity,
                ),
            )  # fmt: skip
            text_inputs, text_outputs = _io_specs(text_path)
            tokenizer = tokenizer_spec(vocab.name, context, SOT_ID, model.text.eot_id)
            write_manifest(
                text_dir,
                tower_manifest(
                    **common, tower="text", sha256=sha256_file(text_path), inputs=text_inputs,
                    outputs=text_outputs, tokenizer=tokenizer, parity=text_parity,
                ),
            )  # fmt: skip
            sizes = {"image": image_path.stat().st_size, "text": text_path.stat().st_size}
    finally:
        model.train(was_training)

    summary: dict[str, Any] = {"zero_shot_agreement": agreement}
    for tower, parity in (("image", image_parity), ("text", text_parity)):
        folder = out_dir / tower
        summary[tower] = {
            "dir": str(folder),
            "model": str(folder / MODEL_FILE),
            "manifest": str(folder / MANIFEST_NAME),
            "bytes": sizes[tower],
            "parity": parity,
        }
    summary["text"]["vocab"] = str(out_dir / "text" / vocab.name)
    return summary
