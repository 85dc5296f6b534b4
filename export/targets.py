"""Export targets: one registry, and the small protocol each target implements.

A target knows only its own format: how to write one tower, how to load and run the written file,
and what the file declares. Folding, sample selection, atomic folders, parity checks and
manifests are the same for every target and live in :mod:`export.driver`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from compress.registry import Registry

exporters = Registry("export target")

OUTPUT = "embedding"  # every exported tower's one output: L2-normalised embeddings

Runner = Callable[[np.ndarray], np.ndarray]  # a fixed-size input batch → the output batch


class Target(Protocol):
    """What :func:`export.driver.export_model` needs of a format."""

    name: str  # the recipe's name for it (export.formats)
    file_name: str  # the model file in each tower folder

    def export(
        self, module: nn.Module, example: torch.Tensor, path: Path, input_name: str
    ) -> dict[str, Any]:
        """Write ``module`` (eval mode, one input, one output) with the shapes of ``example``;
        what the manifest should add about this format (e.g. ops left outside a delegate)."""

    def load(self, path: Path) -> Runner:
        """Load a written file into the runtime apps use, as a function of one input batch."""

    def runtime(self) -> str:
        """The runtime and version that :meth:`load` runs, for the manifest's parity record."""

    def io_specs(
        self, path: Path, input_name: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Inputs and outputs as the written file declares them (name, shape, dtype); formats
        that store no names use ``input_name`` and ``embedding``."""


@contextlib.contextmanager
def torch_export_quiet() -> Iterator[None]:
    """Around ``torch.export`` and the runtimes: torch's own pytree code trips its own
    deprecation warning (``LeafSpec``) in 2.13, which is not ours to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        yield
