"""Atomic writes (a killed run never leaves a half-written file that a later stage trusts) and
weights-only reading of others' checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from compress.errors import UserError, first_line

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``: readers
    see the old file or the whole new one, never half of it."""
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
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_json(path: Path, obj: Any, *, allow_nan: bool = True) -> None:
    """JSON via a temp file and a rename; ``allow_nan=False`` refuses NaN/inf (not valid JSON)."""
    atomic_write(
        path,
        lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, allow_nan=allow_nan) + "\n"),
    )


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks so large models need no extra memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pickled_global(err: pickle.UnpicklingError) -> str | None:
    """The global (``module.name``) a weights-only load refused to unpickle, if it names one."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    return found[1] if found else None


def state_misfits(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> tuple[list[str], list[str]]:
    """The ``expected`` tensors ``state`` lacks or shapes otherwise, and its names beyond them."""
    wrong = [k for k, v in expected.items() if getattr(state.get(k), "shape", None) != v.shape]
    return wrong, sorted(set(state) - set(expected))


def read_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict, read weights-only (tensors and containers: no code in it ever
    runs), unwrapped from a training checkpoint's ``state_dict`` and DDP's ``module.`` prefix.

    A missing or unreadable file, a pickled object and anything but a dict are one-line
    :class:`UserError` errors that start with ``what`` and the path.
    """
    where = f"{what} {path}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{where}: no such file") from None
    except pickle.UnpicklingError as err:
        found = pickled_global(err)
        held = f"it holds a pickled {found}" if found else "not a torch.save file of tensors"
        raise UserError(
            f"{where}: not loadable weights-only ({held}); edgeclip never runs code from a checkpoint"
        ) from None
    except (RuntimeError, OSError) as err:  # not a torch.save archive at all
        raise UserError(f"{where}: cannot be read: {first_line(err)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{where}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}
