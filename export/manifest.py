"""The ``manifest.json`` that makes every exported model folder describe itself
(docs/design.md, "Exports and profiles")."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from compress.io import sha256_file, write_json

MANIFEST_NAME = "manifest.json"
# Bumped when a field changes meaning, so apps can refuse manifests they do not understand.
# 2: "backend" became "target"; "precision" is the exported precision; "runtime" and "files" added.
MANIFEST_VERSION = 2
VERSIONED_PACKAGES = (
    "edgeclip",
    "torch",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "executorch",
    "coremltools",
    "numpy",
)


def file_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` but its manifest, by relative POSIX path (sorted).

    A bundle model (a folder such as ``model.mlpackage``) is listed file by file.
    """
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in files}


def path_bytes(path: str | os.PathLike) -> int:
    """Size of a model file, or of all the files of a bundle folder."""
    path = Path(path)
    return (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )


def sha256_path(path: str | os.PathLike) -> str:
    """SHA-256 of a model file, or of a bundle folder: of its files' relative paths and hashes."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    listing = "".join(f"{name}  {digest}\n" for name, digest in file_hashes(path).items())
    return hashlib.sha256(listing.encode()).hexdigest()


def library_versions(packages: Sequence[str] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages``; ones that are not installed are left out.

    Example:
        >>> "torch" in library_versions()
        True
    """
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def tensor_spec(name: str, shape: Sequence[int], dtype: str, **extra: Any) -> dict[str, Any]:
    """One input or output as the manifest lists it, e.g. ``{"name": "image", "shape": [1, 3, 224, 224], "dtype": "float32"}``."""
    return {"name": name, "shape": [int(d) for d in shape], "dtype": dtype, **extra}


def image_preprocessing(
    size: int, mean: Sequence[float], std: Sequence[float], **overrides: Any
) -> dict[str, Any]:
    """How an app must turn a decoded picture into the image tower's input.

    The defaults are open_clip's eval transform: resize the shortest side to ``size`` (bicubic),
    centre-crop ``size``×``size``, RGB, scale to [0, 1], then ``(x - mean) / std`` per channel,
    laid out NCHW. ``overrides`` replace or add fields.

    Example:
        >>> image_preprocessing(224, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28))["crop"]
        'center'
    """
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(
            f"preprocessing mean and std need 3 values (RGB), got {list(mean)} and {list(std)}"
        )
    spec = {
        "size": [int(size), int(size)],
        "resize": "shortest_side",
        "interpolation": "bicubic",
        "crop": "center",
        "color": "rgb",
        "layout": "NCHW",
        "value_range": [0.0, 1.0],
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "normalize": "(x - mean) / std per channel, x in value_range",
    }
    spec.update(overrides)
    return spec


def tokenizer_spec(
    vocab_file: str, context_length: int, sot_id: int, eot_id: int
) -> dict[str, Any]:
    """How an app must turn text into the text tower's token ids (open_clip's CLIP BPE tokenizer)."""
    return {
        "kind": "clip_bpe",
        "vocab_file": vocab_file,  # shipped in the same folder as the model file
        "context_length": int(context_length),
        "sot_id": int(sot_id),
        "eot_id": int(eot_id),
        "pad_id": 0,
        "cleaning": "ftfy.fix_text, html-unescape twice, collapse whitespace, strip, lowercase",
        "truncation": "cut to context_length; the last token is then forced to eot_id",
    }


def tower_manifest(
    *,
    model_name: str,
    tower: str,
    target: str,
    precision: str,
    runtime: str,
    file_name: str,
    sha256: str,
    files: dict[str, str],
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    embed_dim: int,
    logit_scale: float,
    recipe_hash: str | None,
    logit_bias: float | None = None,
    attention: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
    tokenizer: dict[str, Any] | None = None,
    parity: dict[str, Any] | None = None,
    format_details: dict[str, Any] | None = None,
    flops: int | None = None,
    provenance: dict[str, Any] | None = None,
    float_layers: list[str] | None = None,
    weight_only: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of one exported tower; every backend's exporter builds it here so all agree.

    Image towers carry ``preprocessing``, text towers carry ``tokenizer``; a model trained with the
    sigmoid loss carries its ``logit_bias`` beside ``logit_scale``; ``attention`` is the
    tower's attention variant (None: plain softmax); ``format_details`` what the target adds
    about its format (what an app must link: ONNX's operator sets and op types, ExecuTorch's
    backends and kernels, Core ML's minimum OS); ``provenance`` the model file it was exported
    from (path, sha256, how it was made); ``files`` the SHA-256 of every file shipped in the
    folder (``edgeclip verify`` checks them all);
    ``flops`` the tower's floating-point operations per call at its fixed input shape, counted
    on the fp32 model (:func:`export.profile.flops.count_flops`; profiles divide it by latency);
    ``float_layers`` an int8 tower's layers its scheme left in float (module paths);
    ``weight_only`` a ``w8``/``w4`` tower's scheme (bits, group size, each quantized layer's).
    """
    if tower not in ("image", "text"):
        raise ValueError(f"tower must be 'image' or 'text', got {tower!r}")
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "model": model_name,
        "tower": tower,
        "target": target,
        "precision": precision,
        "runtime": runtime,
        "file": file_name,
        "sha256": sha256,
        "files": files,
        "inputs": inputs,
        "outputs": outputs,
        "embed_dim": int(embed_dim),
        # s in logits = s · image_emb · text_embᵀ; the towers' outputs are already L2-normalised.
        "logit_scale": float(logit_scale),
        "flops": flops,
        "attention": attention or {"kind": "softmax"},
        "recipe_hash": recipe_hash,
        "libraries": library_versions(),
    }
    if (
        logit_bias is not None
    ):  # a sigmoid-trained model: p(match) = σ(s · image_emb · text_embᵀ + b)
        manifest["logit_bias"] = float(logit_bias)
    if tower == "image":
        manifest["preprocessing"] = preprocessing
    else:
        manifest["tokenizer"] = tokenizer
    if provenance is not None:
        manifest["provenance"] = provenance
    if float_layers is not None:
        manifest["float_layers"] = float_layers
    if weight_only is not None:
        manifest["weight_only"] = weight_only
    manifest["format"] = format_details or {}
    manifest["parity"] = parity
    return manifest


def write_manifest(folder: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """Write ``folder/manifest.json`` atomically: a reader sees the old file or the new one, never half.

    Example:
        >>> write_manifest(tmp, {"model": "tiny", "tower": "image"})  # doctest: +SKIP
        PosixPath('.../manifest.json')
    """
    path = Path(folder) / MANIFEST_NAME
    write_json(path, dict(manifest), allow_nan=False)  # apps parse it: strict JSON only
    return path


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """Load ``folder/manifest.json``."""
    return json.loads((Path(folder) / MANIFEST_NAME).read_text())


@contextmanager
def atomic_dir(final_path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it to ``final_path`` only if the block succeeds.

    An existing ``final_path`` is replaced; on an error the temporary folder is removed and the
    old ``final_path`` (if any) is left as it was, so a killed or failed export never leaves a
    half-written artifact that a later stage would trust.

    Example:
        >>> with atomic_dir("out/image") as tmp:  # doctest: +SKIP
        ...     (tmp / "model.onnx").write_bytes(data)
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the renamed folder should read like any other
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # os.replace cannot overwrite a non-empty folder: move the old one aside first, then drop it.
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
        os.replace(final, old / final.name)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old / final.name, final)
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
