"""2-D rotary position embeddings over a ViT's patch grid (RoPE, Su et al. 2021; axial 2-D RoPE as
Heo et al. 2024 and the Perception Encoder, Bolya et al. 2025, use it).

Attention rotates each query and key before their dot product, so the score of two patches depends
on their offset on the grid. The rotation angles depend only on the grid, so they are computed once
into sin and cos tables: what runs, and what an exporter traces, is two multiplies and an add.
"""

from __future__ import annotations

import torch
from torch import nn


class Rotary2d(nn.Module):
    """Axial rotary embedding of a fixed ``grid`` × ``grid`` patch sequence, after ``prefix``
    tokens that it leaves as they are (the class token).

    Layout (PE-Core's, timm's ``rope_type='cat'`` with ``rope_grid_indexing='xy'``): a head's
    ``head_dim`` channels form adjacent pairs (0, 1), (2, 3), …; the first half of the pairs turns
    by the patch's column x, the second half by its row y, pair j of each half by the angle
    position · θ^(−j / (head_dim / 4)). Positions are patch indices plus ``offset`` (PE-Core
    counts from 1), rescaled by ``ref_grid / grid`` when given: the grid the weights were trained
    on, which the angles keep spanning at another resolution.

    The tables are buffers computed from these arguments (not saved with the weights). A prefix
    token's row is the identity (cos 1, sin 0), so the whole sequence turns in one multiply-add
    with no slicing, and the table of sines carries the rotation's sign, so turning a pair
    (a, b) → (a·cos − b·sin, b·cos + a·sin) needs only a swap within each pair: plain tensor
    ops that ONNX, ExecuTorch and Core ML export as they are, without complex numbers.
    """

    def __init__(
        self,
        head_dim: int,
        grid: int,
        prefix: int = 1,
        offset: float = 0.0,
        ref_grid: int | None = None,
        temperature: float = 10000.0,
    ) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(
                f"2-D rotary embeddings need a head width divisible by 4, got {head_dim}"
            )
        self.head_dim, self.grid, self.prefix = head_dim, grid, prefix
        self.offset, self.ref_grid, self.temperature = float(offset), ref_grid, float(temperature)
        self.spec = {"offset": self.offset, "temperature": self.temperature}  # ``vision.rope``
        if ref_grid is not None:  # the keys that rebuild these tables (a pruned model's config)
            self.spec["ref_grid"] = ref_grid
        angles = self._angles()  # (grid², head_dim / 2): x's pairs, then y's
        pairs = angles.repeat_interleave(2, dim=-1)  # (grid², head_dim): one angle per channel
        sign = torch.tensor([-1.0, 1.0]).repeat(head_dim // 2)  # a pair (a, b) gets (−b, a)·sin
        cos = torch.cat([torch.ones(prefix, head_dim), pairs.cos()])  # (prefix + grid², head_dim)
        sin = torch.cat([torch.zeros(prefix, head_dim), pairs.sin() * sign])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _angles(self) -> torch.Tensor:
        """Each patch's angle per pair, in row-major patch order: (grid², head_dim / 2)."""
        bands = self.head_dim // 4
        exponent = torch.arange(bands, dtype=torch.float32) / bands
        freqs = 1.0 / self.temperature**exponent  # (bands,), from 1 down to ~1/θ
        pos = torch.arange(self.grid, dtype=torch.float32) + self.offset  # (grid,)
        if self.ref_grid is not None:
            pos = pos / self.grid * self.ref_grid  # in this order, as the trained weights saw it
        y, x = torch.meshgrid(pos, pos, indexing="ij")  # each (grid, grid): row, column
        xy = torch.stack([x, y], dim=-1).reshape(-1, 2)  # (grid², 2): x first
        return (xy.unsqueeze(-1) * freqs).flatten(1)  # (grid², 2 · bands)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, heads, T, head_dim)
        pairs = x.unflatten(-1, (-1, 2))  # (B, heads, T, head_dim / 2, 2): (a, b)
        # unit-stride slices and a concatenation, which XNNPACK delegates (a flip it does not)
        swapped = torch.cat([pairs[..., 1:], pairs[..., :1]], dim=-1).flatten(-2)  # (b, a) pairs
        return x * self.cos + swapped * self.sin  # (B, heads, T, head_dim)

    def extra_repr(self) -> str:
        ref = f", ref_grid={self.ref_grid}" if self.ref_grid is not None else ""
        return (
            f"head_dim={self.head_dim}, grid={self.grid}, prefix={self.prefix}, "
            f"offset={self.offset:g}{ref}, temperature={self.temperature:g}"
        )
