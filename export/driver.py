"""Export a CLIP model's two towers to one target, verified against PyTorch, with manifests.

Everything here is the same for every target: folding train-time branches, fixed-batch examples,
atomic tower folders, the parity check against the unfolded eager model, the shipped vocabulary
and the manifests. What differs per format is a :class:`export.targets.Target`.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.data.transforms import ImageTransform, image_transform
from compress.models import CLIP, ModelRecord, read_record, reparameterize
from compress.models.clip import NormalizedTower
from compress.quant.weight_only import GROUP_SIZE, quantize_tower
from compress.quant.weight_only import PRECISIONS as WEIGHT_ONLY
from compress.tokenizer import SOT_ID, Tokenizer
from export.golden import GOLDEN_NAME, write_golden
from export.manifest import (
    MANIFEST_NAME,
    atomic_dir,
    file_hashes,
    image_preprocessing,
    path_bytes,
    sha256_path,
    tokenizer_spec,
    tower_manifest,
    write_manifest,
)
from export.profile.flops import count_flops
from export.targets import Target, exporters
from export.verify import (
    TOWERS,
    Thresholds,
    check,
    measure,
    parity_thresholds,
    run_batched,
    run_torch,
    save_samples,
    tower_precisions,
)

IMAGE_INPUT, TEXT_INPUT = "image", "tokens"
INPUTS = {"image": IMAGE_INPUT, "text": TEXT_INPUT}  # the input name of each tower


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
    if model.own_tokenizer is not None:
        raise ValueError(
            f"the model reads text by its own tokenizer ({model.own_tokenizer.path}); exports "
            "ship CLIP's BPE tokenizer: export a student distilled from it"
        )
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
    precision: str = "fp32",
    sample_images: torch.Tensor,
    sample_tokens: torch.Tensor,
    batch_size: int = 1,
    recipe_hash: str | None = None,
    thresholds: Thresholds | Mapping[str, Thresholds] | None = None,
    vocab_path: str | os.PathLike | None = None,
    quantized: Any = None,
    source: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """Export the image and text towers to ``out_dir/image`` and ``out_dir/text``, verified.

    Each tower folder gets the target's model file at ``precision`` (fixed shapes: ``image``
    (batch_size, 3, S, S) float32 or ``tokens`` (batch_size, context_length) int64 → ``embedding``
    (batch_size, D) float32, L2-normalised), the parity samples ``verify`` reruns
    (:data:`SAMPLES_FILE`) and ``manifest.json``; the text folder also gets the tokenizer's
    vocabulary, and ``out_dir`` the golden files apps test their glue against
    (:mod:`export.golden`). Both towers are run in the target's runtime over the samples and
    compared with eager fp32 PyTorch; ``out_dir`` is built in a temporary folder and replaces an earlier export
    only if both pass, so a failed export leaves the last good one in place. A target whose
    runtime cannot run on this machine (Core ML off macOS) is checked by its own spec checks
    instead, and its manifest says why parity was not measured. Train-time branches
    (MobileCLIP-style blocks) are folded in a copy before export, and the parity reference is
    the unfolded model, so the check covers the folding too. The model is given back in its
    original mode.

    Args:
        model: the CLIP model to export (CPU, fp32).
        record: its record: name, image normalisation and attention for the manifests.
        out_dir: the export's folder (``<target>-<precision>`` in a run), holding the two towers.
        target: a registered target name (``export.exporters``) or a target object.
        precision: one of the target's ``precisions`` ("fp32", "fp16", "int8", "w8", "w4") for
            both towers, or one per tower as ``"<image>+<text>"`` (``"int8+w4"``): each tower is
            exported, checked and described at its own.
        sample_images: (N, 3, S, S) float images, already preprocessed, for the parity check;
            held-out images, not training ones.
        sample_tokens: (M, context_length) token ids, for the parity check.
        batch_size: the fixed batch dimension of both exported models.
        recipe_hash: hash of the recipe that produced the model, recorded in the manifests.
        thresholds: the parity the export must keep, for both towers or by tower;
            :func:`export.verify.parity_thresholds` of the precision by default.
        vocab_path: BPE vocabulary to ship; the tokenizer's own by default.
        quantized: where a tower is int8, the model's converted INT8 graphs
            (:class:`compress.quant.ptq.QuantizedCLIP` from :func:`compress.quant.ptq.convert`):
            they are what is exported, and the parity reference is their INT8 simulation in
            PyTorch, not the fp32 model.
        source: the model file exported (an int8 export's: the INT8 model file, or the float one
            it was quantized from), or one by tower; the manifests' ``provenance`` names it, its
            sha256 and how it was made (its record's provenance).

    Returns:
        ``{"image": {...}, "text": {...}, "zero_shot_agreement": float | None, "dir", "target",
        "precision", "golden"}``, each tower with its ``precision`` with its ``dir``, ``model``, ``manifest`` paths,
        ``bytes`` (model size) and ``parity``; the text tower also with ``vocab``.

    Raises:
        ValueError: the target does not export ``precision``.
        export.verify.ParityError: a tower missed a threshold (or a spec check).

    Example:
        >>> record = ModelRecord.named("tiny")
        >>> summary = export_model(  # doctest: +SKIP
        ...     record.build(), record, "out/onnx-fp16", target="onnx", precision="fp16",
        ...     sample_images=torch.rand(8, 3, 32, 32), sample_tokens=Tokenizer(16)(["a red circle"]),
        ... )
        >>> summary["image"]["parity"]["cosine_min"]  # doctest: +SKIP
        0.9999993
    """
    precisions = tower_precisions(precision)
    backend = _target(target, precisions, quantized)
    _check_inputs(model, sample_images, sample_tokens, batch_size)
    if thresholds is None:
        thresholds = parity_thresholds(precision)
    elif isinstance(thresholds, Thresholds):
        thresholds = dict.fromkeys(TOWERS, thresholds)
    sources = source if isinstance(source, Mapping) else dict.fromkeys(TOWERS, source)
    origin = {t: provenance(sources[t]) for t in TOWERS}  # before the long part: as it is now
    context = model.text.context_length
    vocab = Path(vocab_path) if vocab_path is not None else Tokenizer(context).vocab_path
    samples = {
        "image": sample_images.float().contiguous(),
        "text": sample_tokens.long().contiguous(),
    }
    unrunnable = backend.runs_here()
    logit_scale = float(model.logit_scale.detach().exp())
    bias = model.logit_bias  # sigmoid-trained models only
    logit_bias = None if bias is None else float(bias.detach())
    was_training = model.training
    model.eval()
    try:
        graphs = {t: _graphs(model, quantized, precisions[t], t) for t in TOWERS}
        with atomic_dir(out_dir) as root:
            towers = {
                tower: _export_tower(
                    backend,
                    model,
                    graphs[tower],
                    tower,
                    root / tower,
                    samples[tower],
                    precisions[tower],
                    batch_size,
                    runs=unrunnable is None,
                )
                for tower in TOWERS
            }
            parity = _parity(
                backend, towers, graphs, thresholds, unrunnable, record.name, Path(out_dir)
            )
            shutil.copyfile(vocab, root / "text" / vocab.name)
            for tower in TOWERS:
                fields = _manifest_fields(
                    backend, model, record, tower, root / tower, towers, precisions, vocab.name
                )
                manifest = tower_manifest(
                    **fields,
                    logit_scale=logit_scale,
                    logit_bias=logit_bias,
                    recipe_hash=recipe_hash,
                    parity=parity[tower],
                    provenance=origin[tower],
                    float_layers=(
                        float_layers(quantized, tower) if precisions[tower] == "int8" else None
                    ),
                    weight_only=weight_only(graphs[tower].deployed, precisions[tower]),
                )
                write_manifest(root / tower, manifest)
            write_golden(
                root,
                model_name=record.name,
                reference_name=_reference_name(graphs),
                embed_image=lambda x: run_torch(graphs["image"].reference, x, batch_size),
                embed_text=lambda ids: run_torch(graphs["text"].reference, ids, batch_size),
                transform=ImageTransform(model.visual.image_size, **record.normalization),
                tokenizer=Tokenizer(context, vocab),
                logit_scale=logit_scale,
            )
    finally:
        model.train(was_training)
    return _summary(Path(out_dir), backend, precision, precisions, parity, vocab.name)


def _target(target: str | Target, precisions: dict[str, str], quantized: Any) -> Target:
    """The target, checked to export each tower's precision (int8 from a converted model,
    which only an artifact with an int8 tower takes)."""
    backend = exporters.get(target)() if isinstance(target, str) else target
    for tower, precision in precisions.items():
        if precision not in backend.precisions:
            raise ValueError(
                f"the {backend.name} target exports {', '.join(backend.precisions)}, not "
                f"{precision!r} (the {tower} tower's)"
            )
    if ("int8" in precisions.values()) != (quantized is not None):
        raise ValueError(
            "int8 exports take the converted model as quantized=, other precisions none"
        )
    return backend


@dataclass
class _Graphs:
    """What one tower exports and what its parity is measured against."""

    deployed: Any
    reference: Any
    name: str  # the reference, in words, for the manifests and golden files


def _graphs(model: CLIP, quantized: Any, precision: str, tower: str) -> _Graphs:
    """The tower's INT8 graph and its simulation; the weight-only simulation of a folded copy
    (:func:`compress.quant.weight_only.quantize_tower`), which is both what is lowered and the
    reference; or a folded copy and the unfolded eager model (so the check covers the folding
    too)."""
    if precision == "int8":
        graph = quantized.graph(tower)
        return _Graphs(graph, graph, "INT8 simulation in PyTorch (quantize/dequantize in fp32)")
    folded = reparameterize(NormalizedTower(copy.deepcopy(_tower(model, tower))).eval())
    if precision in WEIGHT_ONLY:
        simulation = quantize_tower(folded, precision)
        return _Graphs(
            simulation,
            simulation,
            f"{precision} weight-only simulation in PyTorch (fp32 activations)",
        )
    return _Graphs(folded, NormalizedTower(_tower(model, tower)), "eager PyTorch fp32 on CPU")


def _reference_name(graphs: dict[str, _Graphs]) -> str:
    names = {tower: graphs[tower].name for tower in TOWERS}
    if len(set(names.values())) == 1:
        return names["image"]
    return "; ".join(f"{tower} tower: {name}" for tower, name in names.items())


class Simulation:
    """What an artifact at ``precision`` is checked against, as a model evaluation runs
    (:class:`compress.evaluate.Encoder`): each tower's reference in PyTorch (the INT8
    simulation of an int8 tower, the weight-only simulation of a w8/w4 one, the eager model
    otherwise), so its accuracy can be set beside the artifact's through its runtime.

    Example:
        >>> record = ModelRecord.named("tiny")
        >>> sim = Simulation(record.build(), "fp32+w4")
        >>> sim.encode_text(Tokenizer(record.context_length)(["a red circle"])).shape[0]
        1
    """

    def __init__(self, model: CLIP, precision: str, quantized: Any = None) -> None:
        precisions = tower_precisions(precision)
        graphs = {t: _graphs(model.eval(), quantized, precisions[t], t) for t in TOWERS}
        self.references = {t: graphs[t].reference for t in TOWERS}
        # fed as the model is: its preprocessing and tokenizer
        self.transform = image_transform(model.visual.image_size, **model.preprocess)
        self.tokenize = model.tokenize

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.references["image"].eval()(images)

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.references["text"].eval()(tokens)


@dataclass
class _Exported:
    """One exported tower: the target's details for the manifest, its FLOPs, and the
    embeddings of the parity samples by the reference and (where it runs here) the artifact."""

    details: dict[str, Any]
    flops: Any
    reference: np.ndarray
    outputs: np.ndarray | None


def _export_tower(
    backend: Target,
    model: CLIP,
    graphs: _Graphs,
    tower: str,
    folder: Path,
    samples: torch.Tensor,
    precision: str,
    batch_size: int,
    *,
    runs: bool,
) -> _Exported:
    """The tower's model file and parity samples in ``folder``; the embeddings to compare."""
    folder.mkdir()
    path = folder / backend.file_name
    example = _first_batch(samples, batch_size)
    flops = count_flops(NormalizedTower(_tower(model, tower)), example)
    details = backend.export(graphs.deployed, example, path, INPUTS[tower], precision)
    reference = run_torch(graphs.reference, samples, batch_size)
    outputs = run_batched(backend.load(path), samples.numpy(), batch_size) if runs else None
    save_samples(folder, samples.numpy(), reference)
    return _Exported(details, flops, reference, outputs)


def _parity(
    backend: Target,
    towers: dict[str, _Exported],
    graphs: dict[str, _Graphs],
    thresholds: Mapping[str, Thresholds],
    unrunnable: str | None,
    model_name: str,
    out_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Each tower's parity record; :class:`export.verify.ParityError` where one misses a
    threshold. A target that cannot run here records why instead."""
    about = {
        tower: {
            "reference": graphs[tower].name,
            "runtime": backend.runtime(),
            "thresholds": vars(thresholds[tower]),
        }
        for tower in TOWERS
    }
    if unrunnable is not None:
        return {tower: {"status": unrunnable, **about[tower]} for tower in TOWERS}
    measured = measure(
        {tower: towers[tower].reference for tower in TOWERS},
        {tower: towers[tower].outputs for tower in TOWERS},
    )
    parity = {tower: {"status": "passed", **measured[tower], **about[tower]} for tower in TOWERS}
    for tower in TOWERS:
        where = out_dir / tower / backend.file_name
        check(parity[tower], thresholds[tower], f"{model_name} {tower} tower ({where})")
    return parity


def provenance(source: str | os.PathLike | None) -> dict[str, Any] | None:
    """Which model file an export came from: its path as given, sha256 and record provenance
    (the stage that made it, its parent, the recipe)."""
    if source is None:
        return None
    record = read_record(source)
    origin = {"model_file": os.fspath(source), "sha256": sha256_path(source)}
    origin["record"] = record.provenance
    if record.quantization is not None:  # an INT8 model file: how it was quantized
        origin["quantization"] = record.quantization
    return origin


def float_layers(quantized: Any, tower: str) -> list[str]:
    """The layers of ``tower`` an INT8 model's scheme left in float, as module paths in it."""
    names = quantized.float_layers
    return [name.split(".", 1)[1] for name in names if name.startswith(f"{tower}.")]


def weight_only(deployed: Any, precision: str) -> dict[str, Any] | None:
    """A weight-only tower's scheme for its manifest: bits, group size and each quantized
    layer's scheme by its module path in the tower (None at other precisions)."""
    if precision not in WEIGHT_ONLY:
        return None
    prefix = "tower."  # the simulation quantizes the tower inside its NormalizedTower
    return {
        "scheme": precision,
        "weights": "symmetric, int8 per output channel; w4: int4 per group of input channels",
        "group_size": GROUP_SIZE if precision == "w4" else None,
        "activations": "float",
        "layers": {path.removeprefix(prefix): kind for path, kind in deployed.layers().items()},
    }


def _manifest_fields(
    backend: Target,
    model: CLIP,
    record: ModelRecord,
    tower: str,
    folder: Path,
    towers: dict[str, _Exported],
    precisions: dict[str, str],
    vocab_name: str,
) -> dict[str, Any]:
    """The fields of a tower's manifest that come from the model, the target and the files."""
    path = folder / backend.file_name
    io_in, io_out = backend.io_specs(path, INPUTS[tower])
    if tower == "image":
        size = model.visual.image_size
        extra = {"preprocessing": image_preprocessing(size, **record.normalization)}
    else:
        context = model.text.context_length
        extra = {"tokenizer": tokenizer_spec(vocab_name, context, SOT_ID, model.text.eot_id)}
    return {
        "model_name": record.name,
        "tower": tower,
        "target": backend.name,
        "precision": precisions[tower],
        "runtime": backend.runtime(),
        "file_name": backend.file_name,
        "sha256": sha256_path(path),
        "files": file_hashes(folder),
        "inputs": io_in,
        "outputs": io_out,
        "embed_dim": int(towers["image"].reference.shape[1]),
        "attention": record.attention[tower],
        "format_details": towers[tower].details,
        "flops": towers[tower].flops,
        **extra,
    }


def _summary(
    out_dir: Path,
    backend: Target,
    precision: str,
    precisions: dict[str, str],
    parity: dict,
    vocab_name: str,
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "dir": str(out_dir),
        "target": backend.name,
        "precision": precision,
        "zero_shot_agreement": parity["image"].get("zero_shot_agreement"),
    }
    for tower in TOWERS:
        folder = out_dir / tower
        summary[tower] = {
            "dir": str(folder),
            "precision": precisions[tower],
            "model": str(folder / backend.file_name),
            "manifest": str(folder / MANIFEST_NAME),
            "bytes": path_bytes(folder / backend.file_name),
            "parity": parity[tower],
        }
    summary["text"]["vocab"] = str(out_dir / "text" / vocab_name)
    summary["golden"] = str(out_dir / GOLDEN_NAME)
    return summary


def _tower(model: CLIP, tower: str):
    return model.visual if tower == "image" else model.text
