"""Transformer towers of a CLIP model: a ViT image tower and a text tower (Radford et al. 2021).

The text tower optionally opens with convolutional RepMixer blocks (MobileCLIP's Text-RepMixer).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from compress.models.attention import build_attention
from compress.models.mobile import MixerBlock, fuse_bn
from compress.models.rope import Rotary2d


class QuickGELU(nn.Module):
    """x·σ(1.702x): the GELU approximation OpenAI's CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


# gelu_tanh: GELU's tanh approximation, which SigLIP2's towers (and some SigLIP ones) train with
ACTIVATIONS = {
    "gelu": nn.GELU,
    "quick_gelu": QuickGELU,
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),
}


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str = "gelu") -> None:
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {act!r}; expected one of: {', '.join(ACTIVATIONS)}"
            )
        self.fc = nn.Linear(dim, hidden)
        self.act = ACTIVATIONS[act]()
        self.proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x)).

    A pruned block may have no heads (no attention sub-layer) or no MLP neurons (no MLP).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_hidden: int,
        seq_len: int,
        causal: bool,
        attention: dict | None,
        act: str = "gelu",
        head_dim: int | None = None,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.ln_1 = self.attn = self.ln_2 = self.mlp = None
        if heads:
            self.ln_1 = nn.LayerNorm(dim, eps=eps)
            self.attn = build_attention(dim, heads, seq_len, causal, attention, head_dim=head_dim)
        if mlp_hidden:
            self.ln_2 = nn.LayerNorm(dim, eps=eps)
            self.mlp = MLP(dim, mlp_hidden, act)

    def forward(self, x: torch.Tensor, rope: nn.Module | None = None) -> torch.Tensor:
        if self.attn is not None:
            x = x + self.attn(self.ln_1(x), rope)
        if self.mlp is not None:
            x = x + self.mlp(self.ln_2(x))
        return x


def layer_plan(
    width: int, layers: int, heads: int | list[int], mlp_ratio: float, mlp_hidden: list[int] | None
) -> list[tuple[int, int]]:
    """(heads, MLP width) per layer: the same for every layer, or given per layer (pruned models)."""
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * layers
    hidden = list(mlp_hidden) if mlp_hidden is not None else [int(width * mlp_ratio)] * layers
    if len(heads) != layers or len(hidden) != layers:
        raise ValueError(f"per-layer heads {heads} and mlp_hidden {hidden} need {layers} entries")
    return list(zip(heads, hidden, strict=True))


class ConvStem(nn.Module):
    """Strided convolutions with batch norm and an activation, then a last biased convolution to
    the width: a patchifier that converges faster than one large-stride convolution (Xiao et al.
    2021, "Early convolutions help transformers see better").

    By default ``log2(patch_size)`` stride-2 3×3 convolutions and a 1×1 projection; ``kernels``,
    ``strides`` and ``padding`` (one per convolution, the last included) describe other stems,
    e.g. MobileCLIP-B's 4×4/4, 2×2/2, 2×2/2. Its batch norms use per-process statistics under
    DDP; :meth:`reparameterize` folds them into the convolutions for export.
    """

    def __init__(
        self,
        patch_size: int,
        width: int,
        channels: list[int] | None = None,
        kernels: list[int] | None = None,
        strides: list[int] | None = None,
        padding: list[int] | None = None,
        act: str = "relu",
    ) -> None:
        super().__init__()
        halvings = patch_size.bit_length() - 1  # log2(patch_size)
        kernels = list(kernels or [3] * halvings + [1])
        strides = list(strides or [2] * halvings + [1])
        padding = list(padding or [k // 2 if k % 2 else 0 for k in kernels])
        if channels is None:
            channels = [max(width // 2 ** (halvings - 1 - i), 16) for i in range(len(kernels) - 1)]
        if not len(kernels) == len(strides) == len(padding) == len(channels) + 1:
            raise ValueError(
                f"a conv stem needs one kernel, stride and padding per convolution "
                f"({len(channels) + 1} with channels {channels}), got {kernels}, {strides}, {padding}"
            )
        if math.prod(strides) != patch_size:
            raise ValueError(f"conv stem strides {strides} do not make patch_size {patch_size}")
        if act not in ("relu", "gelu"):
            raise ValueError(f"unknown stem activation {act!r}; expected 'relu' or 'gelu'")
        self.channels, self.patch_size = list(channels), patch_size
        self.spec = {  # the architecture keys that rebuild this stem (a pruned model's config)
            "stem_channels": self.channels,
            "stem_kernels": kernels,
            "stem_strides": strides,
            "stem_padding": padding,
            "stem_act": act,
        }
        shape = list(zip(kernels, strides, padding, strict=True))
        layers, cin = [], 3
        for out, (k, s, p) in zip(channels, shape, strict=False):
            layers += [
                nn.Conv2d(cin, out, k, stride=s, padding=p, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU() if act == "relu" else nn.GELU(),
            ]
            cin = out
        k, s, p = shape[-1]
        layers.append(nn.Conv2d(cin, width, k, stride=s, padding=p))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)  # (B, width, H / patch, W / patch)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold each batch norm into the convolution before it (the norm becomes an identity)."""
        for i, module in enumerate(self.layers):
            if isinstance(module, nn.BatchNorm2d):
                conv = self.layers[i - 1]
                kernel, bias = fuse_bn(conv.weight, module)
                fused = nn.Conv2d(
                    conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding
                )
                fused.weight.copy_(kernel)
                fused.bias.copy_(bias)
                self.layers[i - 1], self.layers[i] = fused.to(kernel.device), nn.Identity()


class VisionTransformer(nn.Module):
    """ViT: patchify, prepend a class token, transformer blocks, project the class token (or,
    SigLIP's layout: no class token, attention pooling over every token, no projection; or
    PE-Core's: a class token, rotary position embeddings in every attention on top of the
    position table, attention pooling with its own heads, a biased projection).

    Args:
        image_size: square input side in pixels.
        patch_size: square patch side; must divide ``image_size``.
        width, layers, heads, mlp_ratio: transformer shape (``heads`` may be a per-layer list).
        embed_dim: output embedding width.
        attention: attention variant spec, e.g. ``{"kind": "clipped", "alpha": 4}``.
        stem: ``"patch"`` (one strided convolution, as in CLIP) or ``"conv"`` (:class:`ConvStem`;
            ``patch_size`` must be a power of two).
        act: MLP activation, ``"gelu"`` or ``"quick_gelu"``.
        head_dim, mlp_hidden, stem_channels: explicit shapes of pruned or inherited models.
        stem_kernels, stem_strides, stem_padding, stem_act: a conv stem's other shapes
            (:class:`ConvStem`).
        ln_pre: a layer norm before the blocks (CLIP has one, timm's and Apple's ViTs do not).
        ln_eps: epsilon of every layer norm (timm's ViTs use 1e-6).
        proj_bias: give the output projection a bias.
        class_token: prepend a learned class token (SigLIP's ViTs have none).
        patch_bias: give the patch convolution a bias (timm's ViTs without ``ln_pre`` do).
        pool: ``"token"`` (the class token's features) or ``"map"`` (:class:`AttentionPool`
            over every token after ``ln_post``, as SigLIP does).
        proj: end with a linear projection to ``embed_dim``; without one (SigLIP) the pooled
            features are the embedding and ``embed_dim`` must equal ``width``.
        pool_heads, pool_mlp_ratio: the ``map`` pool's heads and MLP ratio (PE-Core's: 8 and 4
            at every width); by default the blocks' (SigLIP's).
        pool_head_dim, pool_mlp_hidden: the ``map`` pool's explicit shapes in a pruned model
            (its heads keep the unpruned width's head width and MLP neurons).
        rope: 2-D rotary position embeddings in every block's attention (:class:`Rotary2d`):
            ``{"offset": 1.0, "ref_grid": 24, "temperature": 10000.0}``, each key optional.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float,
        embed_dim: int,
        attention: dict | None = None,
        stem: str = "patch",
        act: str = "gelu",
        head_dim: int | None = None,
        mlp_hidden: list[int] | None = None,
        stem_channels: list[int] | None = None,
        stem_kernels: list[int] | None = None,
        stem_strides: list[int] | None = None,
        stem_padding: list[int] | None = None,
        stem_act: str = "relu",
        ln_pre: bool = True,
        ln_eps: float = 1e-5,
        proj_bias: bool = False,
        class_token: bool = True,
        patch_bias: bool = False,
        pool: str = "token",
        proj: bool = True,
        pool_heads: int | None = None,
        pool_mlp_ratio: float | None = None,
        rope: dict | None = None,
        pool_head_dim: int | None = None,
        pool_mlp_hidden: int | None = None,
    ) -> None:
        super().__init__()
        _check_head(pool, class_token, proj, width, embed_dim)
        if image_size % patch_size:
            raise ValueError(f"patch_size {patch_size} does not divide image_size {image_size}")
        if stem == "conv" and patch_size & (patch_size - 1):
            raise ValueError(f"a conv stem needs a power-of-two patch_size, got {patch_size}")
        if stem not in ("patch", "conv"):
            raise ValueError(f"unknown stem {stem!r}; expected 'patch' or 'conv'")
        self.image_size = image_size
        self.seq_len = (image_size // patch_size) ** 2 + int(class_token)
        if stem == "conv":
            self.patch_embed = ConvStem(
                patch_size, width, stem_channels, stem_kernels, stem_strides, stem_padding, stem_act
            )
        else:
            self.patch_embed = nn.Conv2d(
                3, width, kernel_size=patch_size, stride=patch_size, bias=patch_bias
            )
        self.class_token = nn.Parameter(torch.randn(width) * width**-0.5) if class_token else None
        self.pos_embed = nn.Parameter(torch.randn(self.seq_len, width) * 0.02)
        self.ln_pre = nn.LayerNorm(width, eps=ln_eps) if ln_pre else nn.Identity()
        plan = layer_plan(width, layers, heads, mlp_ratio, mlp_hidden)
        self.blocks = nn.ModuleList(
            Block(width, h, hidden, self.seq_len, False, attention, act, head_dim, ln_eps)
            for h, hidden in plan
        )
        self.ln_post = nn.LayerNorm(width, eps=ln_eps)
        self.rope = None
        if rope is not None:  # one table for every block: heads keep their width when pruned
            grid, prefix = image_size // patch_size, int(class_token)
            self.rope = Rotary2d(head_dim or width // plan[0][0], grid, prefix, **rope)
        self.attn_pool = None
        if pool == "map":  # by default shaped like the (unpruned) blocks' attention and MLP
            pool_hidden = pool_mlp_hidden or int(width * (pool_mlp_ratio or mlp_ratio))
            pool_heads = pool_heads or plan[0][0]
            self.attn_pool = AttentionPool(
                width, pool_heads, pool_hidden, act, ln_eps, head_dim=pool_head_dim
            )
        self.proj = nn.Linear(width, embed_dim, bias=proj_bias) if proj else nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # images: (B, 3, H, W)
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, width)
        if self.class_token is not None:
            cls = self.class_token.expand(x.shape[0], 1, -1)  # (B, 1, width)
            x = torch.cat([cls, x], dim=1)  # (B, N + 1, width)
        x = self.ln_pre(x + self.pos_embed)
        for block in self.blocks:
            x = block(x, self.rope)
        if self.attn_pool is None:
            return self.proj(self.ln_post(x[:, 0]))  # (B, embed_dim)
        return self.proj(self.attn_pool(self.ln_post(x)))  # (B, embed_dim)


def _check_head(pool: str, class_token: bool, proj: bool, width: int, embed_dim: int) -> None:
    """Reject a pooling and projection that cannot make an ``embed_dim`` embedding."""
    if pool not in ("token", "map"):
        raise ValueError(f"unknown pool {pool!r}; expected 'token' or 'map'")
    if pool == "token" and not class_token:
        raise ValueError("pool 'token' needs the class token; use pool 'map' without one")
    _check_proj(proj, width, embed_dim)


def _check_proj(proj: bool, width: int, embed_dim: int) -> None:
    """A tower without an output projection emits its width: it must be the embedding's."""
    if not proj and width != embed_dim:
        raise ValueError(f"without a projection, width {width} must equal embed_dim {embed_dim}")


class AttentionPool(nn.Module):
    """Multi-head attention pooling with one learned query, then a residual MLP: SigLIP's "MAP"
    head (multihead attention pooling, Zhai et al. 2022; Lee et al. 2019's PMA).

    y = out(softmax(q·kᵀ/√d)·v) with q from the learned latent and k, v from the tokens; the
    result is y + mlp(ln(y)). Plain matmuls and a softmax, so it exports like :class:`Attention`;
    the query does not depend on the input, so it is computed once and broadcast over the batch.
    ``head_dim`` is ``dim // heads`` unless given (a pruned tower's pool keeps its head width).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_hidden: int,
        act: str,
        eps: float,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        if head_dim is None and dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, head_dim or dim // heads
        inner = heads * self.head_dim
        self.scale = self.head_dim**-0.5  # computed here, not in forward (FX QAT traps floats)
        self.latent = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)  # the learned query token
        self.q = nn.Linear(dim, inner)
        self.kv = nn.Linear(dim, 2 * inner)
        self.out = nn.Linear(inner, dim)
        self.ln = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_hidden, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, N, dim)
        B, N, _ = x.shape
        q = self.q(self.latent).reshape(1, self.heads, 1, self.head_dim)  # (1, heads, 1, hd)
        kv = self.kv(x).reshape(B, N, 2, self.heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, 1, N)
        heads = (scores.softmax(dim=-1) @ v).reshape(B, self.heads * self.head_dim)  # side by side
        y = self.out(heads)  # (B, dim)
        return y + self.mlp(self.ln(y))


class TextTransformer(nn.Module):
    """Text transformer pooled at the end-of-text token (or at the last position, SigLIP's).

    The EOT position is found by token id (not by the largest id, which breaks when the
    tokenizer differs), on int32 ids: ONNX Runtime has no int64 ArgMax.

    Args:
        causal: mask future tokens (CLIP) or attend both ways (MobileCLIP).
        mixer_layers: convolutional RepMixer blocks before the transformer blocks, mixing
            tokens with a 1 × ``mixer_kernel`` depthwise convolution (MobileCLIP's Text-RepMixer).
        mixer_layers_after: RepMixer blocks after the transformer blocks (MobileCLIP-S0 has one
            before and one after).
        mixer_scale_branch: the mixers' token mixer trains a 1×1 branch beside its 1 × k one.
        act: MLP activation, ``"gelu"`` or ``"quick_gelu"``.
        head_dim, mlp_hidden: explicit shapes of pruned or inherited models.
        pool: ``"eot"`` (the end-of-text token's features) or ``"last"`` (the last position's,
            SigLIP's: its tokenizer pads every caption to ``context_length``).
        ln_eps: epsilon of every layer norm (SigLIP's text towers use 1e-6).
        proj_bias: give the output projection a bias.
        proj: end with a linear projection to ``embed_dim``; without one the pooled features
            are the embedding and ``embed_dim`` must equal ``width``.
    """

    def __init__(
        self,
        context_length: int,
        vocab_size: int,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float,
        embed_dim: int,
        eot_id: int,
        attention: dict | None = None,
        causal: bool = True,
        mixer_layers: int = 0,
        mixer_kernel: int = 11,
        act: str = "gelu",
        head_dim: int | None = None,
        mlp_hidden: list[int] | None = None,
        mixer_layers_after: int = 0,
        mixer_scale_branch: bool = True,
        pool: str = "eot",
        ln_eps: float = 1e-5,
        proj_bias: bool = False,
        proj: bool = True,
    ) -> None:
        super().__init__()
        if pool not in ("eot", "last"):
            raise ValueError(f"unknown text pool {pool!r}; expected 'eot' or 'last'")
        _check_proj(proj, width, embed_dim)
        self.context_length, self.eot_id, self.pool = context_length, eot_id, pool
        # Causal attention, per-token gates, norms and MLPs never carry a later position into an
        # earlier one, so training may drop the batch's all-padding tail and compute the same
        # embeddings (scenes captions fill 16 of 24 positions at most: a third of the text
        # tower's work); mixers (convolutions over tokens) and pooled gates see the padding.
        spec = attention or {}
        pooled = spec.get("kind") == "gated" and spec.get("gate", "token") == "pooled"
        # The last position moves when the tail is dropped, so last-token pooling never trims.
        mixed = mixer_layers or mixer_layers_after or pooled
        self.trims_padding = causal and pool == "eot" and not mixed
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.randn(context_length, width) * 0.01)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        kernel, small = (1, mixer_kernel), 1 if mixer_scale_branch else None
        self.mixers = nn.ModuleList(
            MixerBlock(width, kernel, mlp_ratio, kernel, small) for _ in range(mixer_layers)
        )
        self.blocks = nn.ModuleList(
            Block(width, h, hidden, context_length, causal, attention, act, head_dim, ln_eps)
            for h, hidden in layer_plan(width, layers, heads, mlp_ratio, mlp_hidden)
        )
        self.mixers_after = nn.ModuleList(
            MixerBlock(width, kernel, mlp_ratio, kernel, small) for _ in range(mixer_layers_after)
        )
        self.ln_final = nn.LayerNorm(width, eps=ln_eps)
        self.proj = nn.Linear(width, embed_dim, bias=proj_bias) if proj else nn.Identity()

    def trim(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` without the batch's all-padding tail, where that changes no embedding
        (:attr:`trims_padding`); training does it by itself, inference may call it."""
        if not self.trims_padding:
            return tokens
        longest = int((tokens != 0).any(dim=0).nonzero().max()) + 1  # 0 pads after EOT
        return tokens[:, :longest]  # (B, T ≤ context_length)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # tokens: (B, T ≤ context_length)
        if self.training and not torch.compiler.is_compiling():
            tokens = self.trim(tokens)
        T = tokens.shape[1]
        pos = self.pos_embed if self.context_length == T else self.pos_embed[:T]  # no no-op slice
        x = self.token_embed(tokens) + pos  # (B, T, width)
        x = _mix(self.mixers, x)
        for block in self.blocks:
            x = block(x)
        x = self.ln_final(_mix(self.mixers_after, x))
        if self.pool == "last":
            return self.proj(x[:, -1])  # (B, embed_dim)
        eot = (tokens.to(torch.int32) == self.eot_id).to(torch.int32).argmax(dim=-1)  # (B,)
        return self.proj(x[torch.arange(x.shape[0]), eot])  # (B, embed_dim)


def _mix(mixers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Run convolutional mixer blocks over token features (B, T, width)."""
    if not len(mixers):
        return x
    x = x.transpose(1, 2).unsqueeze(2)  # (B, width, 1, T): convolutions over tokens
    for mixer in mixers:
        x = mixer(x)
    return x.squeeze(2).transpose(1, 2)
