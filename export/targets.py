"""Export targets: one registry, and the small protocol each target implements.

A target knows only its own format: how to write one tower, how to load and run the written file,
and what the file declares. Folding, sample selection, atomic folders, parity checks and
manifests are the same for every target and live in :mod:`export.driver`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
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

    name: str  # the recipe's name for it (export.targets: "<name>-<precision>")
    file_name: str  # the model file (or bundle folder) in each tower folder
    precisions: tuple[str, ...]  # what it writes: "fp32", "fp16", "int8", "w8", "w4"

    def export(
        self,
        module: nn.Module,
        example: torch.Tensor,
        path: Path,
        input_name: str,
        precision: str,
    ) -> dict[str, Any]:
        """Write ``module`` (eval mode, one input, one output) at ``precision`` with the shapes
        of ``example``; inputs and outputs stay as the fp32 module has them (float32 images,
        int64 tokens, float32 embeddings), whatever the precision inside. ``module`` is fp32,
        or for int8 a converted PT2E graph (:func:`compress.quant.ptq.convert`: int8 weights,
        quantize/dequantize around the activations) that the target lowers to its int8 ops,
        or for w8/w4 the weight-only simulation (:class:`compress.quant.weight_only.WeightOnlyTower`:
        float weights holding their quantized values, the integers and scales beside them)
        that the target writes with its low-bit weight formats.
        Returns what the manifest should add about this format (e.g. ops left outside a
        delegate)."""

    def runs_here(self) -> str | None:
        """None where :meth:`load` works on this machine, else why not (e.g. "needs macOS")."""

    def load(self, path: Path) -> Runner:
        """Load a written file into the runtime apps use, as a function of one input batch."""

    def runtime(self) -> str:
        """The runtime and version that :meth:`load` runs, for the manifest's parity record."""

    def io_specs(
        self, path: Path, input_name: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Inputs and outputs as the written file declares them (name, shape, dtype); formats
        that store no names use ``input_name`` and ``embedding``."""


class Half(nn.Module):
    """A tower computing in fp16 behind the fp32 interface apps feed: float inputs are cast to
    fp16 on the way in, the embedding back to fp32 on the way out; integer inputs pass as they are.
    Layers of the ``keep_fp32`` types stay fp32 inside (their input cast up, their output down)."""

    def __init__(self, tower: nn.Module, keep_fp32: tuple[type[nn.Module], ...] = ()) -> None:
        super().__init__()
        self.tower = tower.half()
        for parent in list(self.tower.modules()):
            for name, child in parent.named_children():
                if isinstance(child, keep_fp32):
                    setattr(parent, name, Float32(child))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tower(x.half() if x.is_floating_point() else x).float()


class Float32(nn.Module):
    """One layer kept in fp32 inside an fp16 program."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.float()).to(x.dtype)


def at_precision(
    module: nn.Module, precision: str, keep_fp32: tuple[type[nn.Module], ...] = ()
) -> nn.Module:
    """``module`` as it should be traced for ``precision`` (a copy for fp16; the fp32 one, the
    quantized graph of an int8 export and the weight-only simulation, as they are)."""
    if precision in ("fp32", "int8", "w8", "w4"):
        return module
    if precision == "fp16":
        return Half(copy.deepcopy(module), keep_fp32).eval()
    raise ValueError(f"unknown precision {precision!r}; expected fp32, fp16, int8, w8 or w4")
