"""FLOPs of a model, counted from the operations it runs (not from a formula about its shape)."""

from __future__ import annotations

import torch
from torch import nn


def count_flops(module: nn.Module, example: torch.Tensor) -> int:
    """Floating-point operations of one forward pass of ``module`` on ``example``.

    Counted by torch's ``FlopCounterMode`` while the module runs: every matrix multiply,
    batched matmul, convolution and fused attention, at 2 FLOPs per multiply-add — the same
    convention as the GEMM rate records compare against (2·n³ for an n×n product). Elementwise
    work (norms, activations, softmax) is not counted; it is a few percent of a CLIP tower's.
    Papers that quote "GFLOPs" often count multiply-adds once (ViT-B/16 at 224²: 17.6 G
    multiply-adds, 35.1 GFLOP here).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(example)
    return int(counter.get_total_flops())
