"""Multi-head self-attention with pluggable probabilities and gates (Quantizable Transformers, Bondarenko et al. 2023).

Three registered variants, chosen per tower in the recipe:
- ``softmax``: plain scaled dot-product attention.
- ``clipped``: clip((ζ − γ)·softmax(x) + γ, 0, 1); a head can output exact zeros without pushing
  its logits to extremes. γ is given directly, or per sequence length as γ = −α/T.
- ``gated``: each head's output is scaled by σ(G(x)); a head that wants to do nothing closes its
  gate instead of creating activation outliers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from compress.errors import require
from compress.registry import Registry

attention_variants = Registry("attention")


class Softmax(nn.Module):
    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.softmax(dim=-1)


class ClippedSoftmax(nn.Module):
    """clip((ζ − γ)·softmax(x) + γ, 0, 1) with γ ≤ 0 ≤ 1 ≤ ζ; γ = 0, ζ = 1 is the softmax."""

    def __init__(self, gamma: float, zeta: float) -> None:
        super().__init__()
        if gamma > 0 or zeta < 1:
            raise ValueError(
                f"clipped softmax needs gamma <= 0 <= 1 <= zeta, got gamma={gamma}, zeta={zeta}"
            )
        self.gamma, self.zeta = float(gamma), float(zeta)
        self.stretch = self.zeta - self.gamma  # computed here, not in forward (FX QAT traps floats)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores.softmax(dim=-1) * self.stretch + self.gamma).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma:.4g}, zeta={self.zeta:.4g}"


def _gate_projection(dim: int, heads: int, bias_init: float) -> nn.Linear:
    """Features → one gate logit per head; small weights, so every gate starts near σ(bias_init)."""
    proj = nn.Linear(dim, heads)
    nn.init.normal_(proj.weight, std=dim**-0.5 * 0.1)
    nn.init.constant_(proj.bias, bias_init)
    return proj


class TokenGate(nn.Module):
    """Conditional gate: one sigmoid per head and token, a linear map of the token's features."""

    def __init__(self, dim: int, heads: int, bias_init: float) -> None:
        super().__init__()
        self.proj = _gate_projection(dim, heads, bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, dim)
        return self.proj(x).sigmoid().transpose(1, 2).unsqueeze(-1)  # (B, heads, T, 1)


class HeadGate(nn.Module):
    """Unconditional gate: one learnable sigmoid per head, the same for every input."""

    def __init__(self, dim: int, heads: int, bias_init: float) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.full((heads,), float(bias_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit.sigmoid().view(1, -1, 1, 1)  # (1, heads, 1, 1)


class PooledGate(nn.Module):
    """Per-head gate from the mean of the sequence's features: one sigmoid per head and input."""

    def __init__(self, dim: int, heads: int, bias_init: float) -> None:
        super().__init__()
        self.proj = _gate_projection(dim, heads, bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=1)).sigmoid().unsqueeze(-1).unsqueeze(-1)  # (B, heads, 1, 1)


GATES = {"token": TokenGate, "head": HeadGate, "pooled": PooledGate}


class Attention(nn.Module):
    """Multi-head self-attention over a fixed-length sequence.

    Args:
        dim: token width.
        heads: number of heads.
        head_dim: width of each head; ``dim // heads`` by default (pruned models keep the
            teacher's head width with fewer heads, so heads · head_dim may differ from dim).
        seq_len: the sequence length the tower always feeds (fixed shapes export cleanly).
        causal: mask future tokens (text towers).
        probs: maps scores (B, heads, T, T) to attention probabilities.
        gate: optional module mapping x (B, T, dim) to per-head output gates.
        qkv_bias: give the q, k, v projection a bias (CLIP towers do, FastViT's attention does not).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        seq_len: int,
        causal: bool = False,
        probs: nn.Module | None = None,
        gate: nn.Module | None = None,
        qkv_bias: bool = True,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        if head_dim is None and dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, head_dim or dim // heads
        inner = heads * self.head_dim
        self.scale = self.head_dim**-0.5  # computed here, not in forward (FX QAT traps floats)
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.out = nn.Linear(inner, dim)
        self.probs = probs if probs is not None else Softmax()
        self.gate = gate
        if causal:  # True above the diagonal: the future tokens each token may not see
            mask = torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1)
            self.register_buffer("mask", mask, persistent=False)
        else:
            self.mask = None

    def forward(self, x: torch.Tensor, rope: nn.Module | None = None) -> torch.Tensor:
        """``rope``, the tower's rotary embedding (:class:`~compress.models.rope.Rotary2d`),
        turns every query and key by its token's position before their dot products."""
        B, T, _ = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, head_dim)
        if rope is not None:
            q, k = rope(q), rope(k)
        scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, T, T)
        if self.mask is not None:  # a fill, not an add of -inf: int8 quantizers annotate adds
            mask = self.mask if len(self.mask) == T else self.mask[:T, :T]  # a trimmed batch
            scores = scores.masked_fill(mask, float("-inf"))
        y = self.probs(scores) @ v  # (B, heads, T, head_dim)
        if self.gate is not None:
            y = y * self.gate(x)
        return self.out(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, dim)


@attention_variants.register("softmax")
def softmax_attention(
    dim: int, heads: int, seq_len: int, causal: bool = False, **shape
) -> Attention:
    """Plain softmax attention; ``shape`` passes ``qkv_bias`` / ``head_dim`` to :class:`Attention`."""
    return Attention(dim, heads, seq_len, causal, **shape)


@attention_variants.register("clipped")
def clipped_attention(
    dim: int,
    heads: int,
    seq_len: int,
    causal: bool = False,
    gamma: float | None = None,
    zeta: float = 1.0,
    alpha: float | None = None,
    **shape,
) -> Attention:
    """Clipped softmax; give ``gamma`` directly or ``alpha`` for γ = −α/T (T = ``seq_len``)."""
    if (gamma is None) == (alpha is None):
        raise ValueError("clipped attention needs exactly one of gamma or alpha")
    if alpha is not None:
        gamma = -alpha / seq_len
    return Attention(dim, heads, seq_len, causal, ClippedSoftmax(gamma, zeta), **shape)


@attention_variants.register("gated")
def gated_attention(
    dim: int,
    heads: int,
    seq_len: int,
    causal: bool = False,
    gate: str = "token",
    gate_init: float = 0.5,
    **shape,
) -> Attention:
    """Gated attention; ``gate_init`` is the initial gate value p, so the bias starts at logit(p)."""
    if gate not in GATES:
        raise ValueError(f"unknown gate {gate!r}; expected one of: {', '.join(GATES)}")
    if not 0 < gate_init < 1:
        raise ValueError(f"gate_init must be in (0, 1), got {gate_init}")
    bias = math.log(gate_init / (1 - gate_init))
    return Attention(dim, heads, seq_len, causal, gate=GATES[gate](dim, heads, bias), **shape)


def build_attention(
    dim: int, heads: int, seq_len: int, causal: bool, spec: dict | None, **shape
) -> Attention:
    """Build the variant named by ``spec["kind"]`` with the rest of ``spec`` as its options;
    ``shape`` (``qkv_bias``, ``head_dim``) goes to :class:`Attention`."""
    options = dict(spec or {"kind": "softmax"})
    build = attention_variants.get(options.pop("kind"))
    return build(dim, heads, seq_len, causal, **shape, **options)


# ---------------------------------------------------------------------------------------------
# Configuration: one tower's variant, as a recipe gives it


@dataclass(frozen=True)
class AttentionConfig:
    """One tower's attention variant (docs/design.md, "Methods")."""

    kind: Literal["softmax", "clipped", "gated"] = "softmax"
    gamma: float | None = None  # clipped: lower stretch, ≤ 0 (or give alpha)
    zeta: float = 1.0  # clipped: upper stretch, ≥ 1
    alpha: float | None = None  # clipped: γ = −α/T for sequence length T
    gate: Literal["token", "head", "pooled"] = "token"  # gated: conditional per token, or per head
    gate_init: float = 0.5  # gated: initial gate value p; bias starts at logit(p)

    def __post_init__(self) -> None:
        if self.kind != "clipped":
            require(
                self.gamma is None and self.alpha is None,
                "gamma",
                f"only applies to kind: clipped, not {self.kind}",
            )
        else:
            require(
                (self.gamma is None) != (self.alpha is None),
                "gamma",
                "give exactly one of gamma or alpha",
            )
            require(
                self.gamma is None or self.gamma <= 0, "gamma", f"must be <= 0, got {self.gamma}"
            )
            require(
                self.alpha is None or self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}"
            )
            require(self.zeta >= 1, "zeta", f"must be >= 1, got {self.zeta}")
        require(0 < self.gate_init < 1, "gate_init", f"must be in (0, 1), got {self.gate_init}")

    def spec(self) -> dict:
        """The options the attention builder takes for this kind."""
        if self.kind == "clipped":
            return {"kind": "clipped", "gamma": self.gamma, "zeta": self.zeta, "alpha": self.alpha}
        if self.kind == "gated":
            return {"kind": "gated", "gate": self.gate, "gate_init": self.gate_init}
        return {"kind": "softmax"}


@dataclass(frozen=True)
class TowerAttention:
    image: AttentionConfig = field(default_factory=AttentionConfig)
    text: AttentionConfig = field(default_factory=AttentionConfig)
