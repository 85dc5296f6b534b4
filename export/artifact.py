"""An export folder as an app receives it: files checked against their manifests, towers run in
their own runtime. ``edgeclip verify`` reruns the stored parity samples through it and
``edgeclip eval EXPORT_DIR`` measures zero-shot and retrieval through it.

An export folder holds an ``image`` and a ``text`` tower folder, each with a ``manifest.json``
(docs/design.md, "Exports and profiles"); nothing here needs the run folder or the PyTorch model.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from compress.data.transforms import image_transform
from compress.errors import UserError
from compress.tokenizer import Tokenizer
from export.golden import GOLDEN_NAME, pixels_sha256
from export.manifest import MANIFEST_NAME, MANIFEST_VERSION, read_manifest, sha256_file
from export.targets import Target, exporters
from export.verify import (
    TOWERS,
    Thresholds,
    artifact_precision,
    check,
    load_samples,
    measure,
    run_batched,
)


class IntegrityError(RuntimeError):
    """A shipped file is missing or differs from the SHA-256 its manifest records."""


def export_folders(path: str | os.PathLike) -> list[Path]:
    """``path`` if it is an export folder, else every export folder below it (sorted).

    Raises:
        UserError: nothing under ``path`` is an export folder.
    """
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    found = sorted({m.parent.parent for m in root.rglob(f"*/{MANIFEST_NAME}")} | {root})
    folders = [f for f in found if all((f / t / MANIFEST_NAME).is_file() for t in TOWERS)]
    if not folders:
        raise UserError(
            f"{root}: not an export folder (expected image/{MANIFEST_NAME} and "
            f"text/{MANIFEST_NAME}, here or below)"
        )
    return folders


def read_export(folder: Path) -> dict[str, dict[str, Any]]:
    """Both towers' manifests, refusing a manifest version this edgeclip does not know."""
    manifests = {}
    for tower in TOWERS:
        manifest = read_manifest(folder / tower)
        if manifest.get("manifest_version") != MANIFEST_VERSION:
            raise UserError(
                f"{folder / tower / MANIFEST_NAME}: manifest_version "
                f"{manifest.get('manifest_version')!r}; this edgeclip reads {MANIFEST_VERSION}"
            )
        manifests[tower] = manifest
    return manifests


def check_files(folder: Path, manifest: dict[str, Any]) -> int:
    """Every file the manifest lists is there with its SHA-256; returns how many were checked.

    Raises:
        IntegrityError: naming the first missing or changed (tampered, truncated) file.
    """
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise IntegrityError(f"{path}: missing (listed in {folder / MANIFEST_NAME})")
        if sha256_file(path) != digest:
            raise IntegrityError(
                f"{path}: sha256 differs from {folder / MANIFEST_NAME} "
                f"({path.stat().st_size} bytes); the file was changed or truncated"
            )
    return len(manifest["files"])


def verify_export(folder: str | os.PathLike) -> dict[str, Any]:
    """Check a shipped export folder: its files' hashes, then its stored parity samples rerun in
    the target's runtime against the eager outputs stored beside them, with the manifest's
    thresholds; then its golden files (:mod:`export.golden`) the same way, fed as an app feeds
    them: the golden pixels normalised as the manifest says, the golden captions' token ids.

    Returns:
        ``{"dir", "target", "precision", "files", "parity", "golden"}``; ``parity`` and
        ``golden`` map each tower to its measured record, or are the reason they cannot be
        measured here (e.g. "needs macOS"); ``golden`` is None for a folder without golden files.

    Raises:
        IntegrityError: a file is missing or changed.
        export.verify.ParityError: the rerun misses the manifest's thresholds.
    """
    folder = Path(folder)
    manifests = read_export(folder)
    files = sum(check_files(folder / tower, manifests[tower]) for tower in TOWERS)
    shipped_golden = read_golden(folder)  # (golden.json, its checked pixels) or None
    target = _target(manifests)
    summary: dict[str, Any] = {
        "dir": str(folder),
        "target": target.name,
        "precision": artifact_precision({t: manifests[t]["precision"] for t in TOWERS}),
        "files": files,
    }
    unrunnable = target.runs_here()
    if unrunnable is not None:
        return summary | {
            "parity": unrunnable,
            "golden": None if shipped_golden is None else unrunnable,
        }
    artifact = ArtifactModel(folder)
    reference, exported = {}, {}
    for tower in TOWERS:
        inputs, reference[tower] = load_samples(folder / tower)
        exported[tower] = artifact.run(tower, inputs)
    parity = measure(reference, exported)
    _check(parity, manifests, folder)
    golden_parity = None
    if shipped_golden is not None:
        golden, pixels = shipped_golden
        inputs = {
            "image": artifact.transform.normalize(pixels).numpy()[None],
            "text": np.array([c["ids"] for c in golden["captions"]], np.int64),
        }
        expected = {
            "image": np.array([golden["image_embedding"]], np.float32),
            "text": np.array([c["embedding"] for c in golden["captions"]], np.float32),
        }
        golden_parity = measure(expected, {t: artifact.run(t, inputs[t]) for t in TOWERS})
        # one picture: its best caption is no agreement rate, so only cosine and max-abs count
        _check(golden_parity, manifests, folder, f" on {GOLDEN_NAME}", agreement=False)
    return summary | {"parity": parity, "golden": golden_parity}


def read_golden(folder: Path) -> tuple[dict[str, Any], np.ndarray] | None:
    """The folder's ``golden.json`` and the cropped pixels it records, both pictures checked;
    None where there is none.

    Raises:
        IntegrityError: a golden picture is missing, or not what ``golden.json`` records.
    """
    path = folder / GOLDEN_NAME
    if not path.is_file():
        return None
    golden = json.loads(path.read_text())
    picture, pre = (folder / golden[key]["file"] for key in ("image", "preprocessed"))
    for file in (picture, pre):
        if not file.is_file():
            raise IntegrityError(f"{file}: missing (listed in {path})")
    pixels = np.asarray(Image.open(pre).convert("RGB"))
    if (
        sha256_file(picture) != golden["image"]["sha256"]
        or pixels_sha256(pixels) != golden["preprocessed"]["pixels_sha256"]
    ):
        raise IntegrityError(f"{folder}: a golden picture differs from {path}; it was changed")
    return golden, pixels


def _check(
    measured: dict[str, Any],
    manifests: dict[str, Any],
    folder: Path,
    what: str = "",
    agreement: bool = True,
) -> None:
    for tower in TOWERS:
        thresholds = Thresholds(**manifests[tower]["parity"]["thresholds"])
        if not agreement:
            thresholds = replace(thresholds, min_zero_shot_agreement=0.0)
        check(measured[tower], thresholds, f"{folder / tower / manifests[tower]['file']}{what}")


class ArtifactModel:
    """Both towers of an export folder, run in the target's runtime, fed as an app feeds them:
    images preprocessed and text tokenized as the manifests say, with the shipped vocabulary.

    It has the two methods :mod:`compress.evaluate` calls, so zero-shot and retrieval measured
    through it are the accuracy an app will see.

    Raises:
        UserError: the target's runtime cannot run on this machine (Core ML off macOS).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.manifests = read_export(self.folder)
        target = _target(self.manifests)
        unrunnable = target.runs_here()
        if unrunnable is not None:
            raise UserError(f"{self.folder}: a {target.name} export cannot run here ({unrunnable})")
        pre, tok = self.manifests["image"]["preprocessing"], self.manifests["text"]["tokenizer"]
        self.transform = image_transform(pre["size"][0], pre["mean"], pre["std"])
        self.tokenize = Tokenizer(
            tok["context_length"], vocab=self.folder / "text" / tok["vocab_file"]
        )
        self._runs = {t: target.load(self.folder / t / self.manifests[t]["file"]) for t in TOWERS}

    def run(self, tower: str, inputs: np.ndarray) -> np.ndarray:
        """One tower over any number of input rows, in the manifest's fixed batch."""
        batch = int(self.manifests[tower]["inputs"][0]["shape"][0])
        return run_batched(self._runs[tower], inputs, batch)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run("image", images.float().contiguous().numpy()))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run("text", tokens.long().contiguous().numpy()))


def _target(manifests: dict[str, dict[str, Any]]) -> Target:
    return exporters.get(manifests["image"]["target"])()
