"""Weight-only quantization (``w8``, ``w4``): integer weights, float activations.

The scheme, one for every target:

- ``w8``: every linear layer, convolution and the token table as int8, symmetric, one scale per
  output channel (per row of a linear weight or of the token table; per output filter of a
  convolution): ``scale = max|w| / 127``, ``q = round(w / scale)`` in [-127, 127].
- ``w4``: linear layers and the token table as int4, symmetric, one scale per group of
  :data:`GROUP_SIZE` consecutive input channels (along the last axis): ``scale = max|w| / 7``
  over the group, ``q`` in [-7, 7]. Convolutions stay 8-bit per output channel, and so does a
  layer whose input width is not a multiple of the group: no runtime here has a 4-bit
  convolution kernel, and every 4-bit kernel needs whole groups.

Activations, norms, biases and every other parameter stay float. Both rules are idempotent
(quantizing the dequantized weights again gives the same integers), so a converter that
recomputes scales from the simulation's weights (coremltools) writes the same integers.

:func:`quantize_tower` returns the simulation: a copy of the tower whose weights hold their
dequantized values (``q * scale``, float), an ordinary module that runs, traces and exports as
the float one does, with the integers and scales of each quantized layer beside it
(:class:`WeightOnlyTower`). It is the PyTorch reference of every ``w8``/``w4`` artifact, and the
exporters write exactly its integers in their runtime's low-bit formats.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS = ("w8", "w4")  # the weight-only precisions, as recipes and exports name them
# w4's input channels per scale: what every 4-bit kernel here takes (ExecuTorch's XNNPACK
# delegate needs a multiple of 32; onnxruntime's MatMulNBits and GatherBlockQuantized a power
# of two ≥ 16; Core ML any divisor)
GROUP_SIZE = 32
BITS = {"w8": 8, "w4": 4}
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)  # whose ``weight`` the scheme quantizes


@dataclass(frozen=True)
class QuantizedWeight:
    """One layer's weight as integers and scales: ``weight = values * scales`` per row, or per
    group of ``group`` consecutive values along the last axis of each row."""

    values: torch.Tensor  # int8, the weight's shape, in [-qmax, qmax] (qmax = 2**(bits-1) - 1)
    scales: torch.Tensor  # float32, (rows, groups per row); per channel (rows, 1)
    bits: int  # 8 or 4
    group: int | None  # values per scale along the last axis; None: one scale per row

    def dequantize(self) -> torch.Tensor:
        """The float weight the integers stand for (what the simulation computes with)."""
        rows = self.values.reshape(len(self.values), -1).float()
        if self.group is None:
            return (rows * self.scales).reshape(self.values.shape)
        grouped = rows.reshape(len(rows), -1, self.group) * self.scales.unsqueeze(-1)
        return grouped.reshape(self.values.shape)

    @property
    def kind(self) -> str:
        """How it is quantized, in words for manifests: ``int4 per 32`` or ``int8 per channel``."""
        return f"int{self.bits} " + ("per channel" if self.group is None else f"per {self.group}")


def quantize_weight(weight: torch.Tensor, bits: int, group: int | None = None) -> QuantizedWeight:
    """Symmetric quantization of ``weight`` to ``bits`` bits, one scale per row (output channel;
    a convolution's filter is one row) or per ``group`` values along the last axis.

    Example:
        >>> q = quantize_weight(torch.tensor([[1.4, -0.6, 0.7, 0.0]]), bits=4, group=2)
        >>> q.values.tolist(), q.scales.tolist()
        ([[7, -3, 7, 0]], [[0.20000000298023224, 0.10000000149011612]])
    """
    qmax = 2 ** (bits - 1) - 1
    rows = weight.detach().float().reshape(len(weight), -1)
    if group is not None:
        if weight.ndim != 2 or weight.shape[1] % group:
            raise ValueError(
                f"group-wise quantization needs a 2-D weight whose rows are whole groups of "
                f"{group}, got {tuple(weight.shape)}"
            )
        rows = rows.reshape(len(rows), -1, group)
    # an all-zero row or group keeps scale 1 (its integers are 0 whatever the scale)
    amax = rows.abs().amax(dim=-1, keepdim=True)
    scales = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    values = torch.clamp(torch.round(rows / scales), -qmax, qmax).to(torch.int8)
    return QuantizedWeight(
        values.reshape(weight.shape),
        scales.reshape(len(weight), -1),
        bits,
        group,
    )


def layer_scheme(layer: nn.Module, precision: str) -> tuple[int, int | None]:
    """(bits, group) of one layer's weight at ``precision``: see the module docstring."""
    if precision not in BITS:
        raise ValueError(f"unknown weight-only precision {precision!r}; expected w8 or w4")
    grouped = (
        isinstance(layer, nn.Linear | nn.Embedding) and layer.weight.shape[1] % GROUP_SIZE == 0
    )
    if precision == "w4" and grouped:
        return 4, GROUP_SIZE
    return 8, None


class WeightOnlyTower(nn.Module):
    """The weight-only simulation of a tower: the module with each quantized layer's weight
    replaced by its dequantized values (float), and ``weights``, each layer's integers and
    scales by its module path in ``module``. Exporters lower the layers of ``weights`` to their
    runtime's integer formats and everything else as the float module."""

    def __init__(
        self, module: nn.Module, weights: dict[str, QuantizedWeight], precision: str
    ) -> None:
        super().__init__()
        self.module = module
        self.weights = weights
        self.precision = precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def layers(self) -> dict[str, str]:
        """Each quantized layer's scheme in words (``int4 per 32``), by module path."""
        return {path: weight.kind for path, weight in self.weights.items()}


@torch.no_grad()
def quantize_tower(module: nn.Module, precision: str) -> WeightOnlyTower:
    """A weight-only copy of ``module`` (folded for deployment already: what ships) at
    ``precision`` (``w8`` or ``w4``); ``module`` itself is left as it is.

    Example:
        >>> tower = quantize_tower(nn.Sequential(nn.Linear(64, 8)), "w4")
        >>> tower.layers()
        {'0': 'int4 per 32'}
    """
    quantized = copy.deepcopy(module).float().eval()
    weights = {}
    for path, layer in quantized.named_modules():
        if isinstance(layer, LAYERS):
            bits, group = layer_scheme(layer, precision)
            weight = quantize_weight(layer.weight, bits, group)
            layer.weight.copy_(weight.dequantize())
            weights[path] = weight
    return WeightOnlyTower(quantized, weights, precision).eval()
