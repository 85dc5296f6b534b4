"""Environment workarounds for the pinned libraries, kept in one place (docs/library-traps.md)."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import warnings
from collections.abc import Iterator

import torch

_torchvision_fragment = None


def _import_torchvision() -> None:
    """Import torchvision, patching over a CUDA wheel that sits beside a CPU torch.

    PyPI's torchvision wheel is a CUDA build whose C++ ops fail to register next to the CPU
    torch, so `import torchvision` (pulled in by open_clip and timm) dies on the missing
    `torchvision::nms` schema. Declaring the two schemas and importing again makes everything
    but those C++ ops work; edgeclip never calls them. A working torchvision is left alone.
    """
    global _torchvision_fragment
    try:
        import torchvision  # noqa: F401
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _torchvision_fragment = torch.library.Library("torchvision", "FRAGMENT")
        _torchvision_fragment.define(
            "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
        )
        _torchvision_fragment.define(
            "qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor"
        )
        import torchvision  # noqa: F401


@functools.cache
def open_clip():
    """Return the `open_clip` module, importable beside a CPU torch."""
    _import_torchvision()
    import open_clip as oc

    return oc


# Loggers whose warnings here are notes about the CPU build, not problems: torchao reports
# each CUDA kernel library it cannot load, and torch's pytree warns that torchao (imported by
# ExecuTorch) registers an enum the deprecated way; reading an ETRecord back lists the shape
# symbols the lowered graph no longer has.
QUIET_LOGGERS = ("torchao", "torch.utils._pytree", "executorch.exir.serde.export_serialize")


@contextlib.contextmanager
def torch_export_quiet() -> Iterator[None]:
    """Around ``torch.export``, the exporters' imports and the runtimes: silence what is not
    ours to act on (torch's own pytree code trips its own ``LeafSpec`` deprecation warning in
    2.13, and the :data:`QUIET_LOGGERS` notes); errors still get through."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
