"""Atomic writes: a killed run never leaves a half-written file that a later stage trusts."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files owner-only; artifacts get shared
        with open(tmp, "rb") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` via a temp file and a rename."""
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def write_json(path: Path, obj: Any, *, allow_nan: bool = True) -> None:
    """JSON via a temp file and a rename; ``allow_nan=False`` refuses NaN/inf (not valid JSON)."""
    _atomic(
        path,
        lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, allow_nan=allow_nan) + "\n"),
    )


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_text(text))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks so large models need no extra memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
