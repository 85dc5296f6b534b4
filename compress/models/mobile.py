"""MobileCLIP-style hybrid building blocks (Vasu et al. 2023–24: FastViT / MCi image towers, Text-RepMixer).

Every convolution here trains with several branches (MobileOne, RepLKNet, RepVGG style) and folds
them into one convolution for inference: call :func:`reparameterize` on a model in eval mode
before export. The folded model computes the same function (up to float rounding) and holds no
train-time branch and no batch norm outside the attention blocks.

Layout of a hybrid image tower (MCi0 = layers (2, 6, 10, 2), widths (64, 128, 256, 512)):
stem (÷4) → stages of RepMixer blocks, each but the first opened by a stride-2 large-kernel
downsample → a last stage of attention blocks with a conditional positional encoding → a
grouped 3×3 "final" convolution that doubles the width → global average pool → projection.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.models.attention import build_attention

Kernel = int | tuple[int, int]


def _pair(k: Kernel) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else tuple(k)


def _padding(k: Kernel) -> tuple[int, int]:
    kh, kw = _pair(k)
    return kh // 2, kw // 2  # odd kernels: 'same' at stride 1, centred taps at stride 2


def fuse_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel and bias of ``bn(conv(x))`` for a bias-free convolution with ``kernel``."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def identity_kernel(channels: int, groups: int, kernel: Kernel, like: torch.Tensor) -> torch.Tensor:
    """A (channels, channels / groups, kh, kw) kernel whose convolution is the identity."""
    kh, kw = _pair(kernel)
    per_group = channels // groups
    weight = torch.zeros(channels, per_group, kh, kw, dtype=like.dtype, device=like.device)
    weight[torch.arange(channels), torch.arange(channels) % per_group, kh // 2, kw // 2] = 1.0
    return weight


def _pad_to(kernel: torch.Tensor, size: Kernel) -> torch.Tensor:
    """Zero-pad a smaller centred kernel to ``size``."""
    (kh, kw), (h, w) = _pair(size), kernel.shape[-2:]
    dh, dw = (kh - h) // 2, (kw - w) // 2
    return nn.functional.pad(kernel, [dw, dw, dh, dh])


class ConvBN(nn.Module):
    """A bias-free convolution followed by batch norm; folds into one biased convolution."""

    def __init__(self, cin: int, cout: int, kernel: Kernel, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(
            cin, cout, kernel, stride, _padding(kernel), groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        return fuse_bn(self.conv.weight, self.bn)


class SqueezeExcite(nn.Module):
    """Channel gate from globally pooled features: x · σ(W₂ ReLU(W₁ mean(x)))."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3), keepdim=True)
        return x * self.fc2(self.fc1(pooled).relu()).sigmoid()


class RepConv(nn.Module):
    """A convolution trained as a sum of branches and folded into one for inference.

    Branches: ``branches`` k×k conv+BN, an optional smaller centred conv+BN (``small``: 1×1 as
    in MobileOne, 3×3 under a 7×7 as in RepLKNet) and, when shapes allow and ``identity`` is set,
    a batch-norm-only skip. After the sum: an optional squeeze-excite, then the activation.

    Args:
        cin, cout, kernel, stride, groups: the folded convolution's shape.
        branches: number of k×k conv+BN branches.
        small: kernel of the extra small branch, or None.
        identity: add the BN skip branch when ``cin == cout`` and ``stride == 1``.
        se: reduced width of a squeeze-excite after the sum, or None.
        act: apply GELU at the end.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: Kernel,
        stride: int = 1,
        groups: int = 1,
        branches: int = 1,
        small: Kernel | None = 1,
        identity: bool = True,
        se: int | None = None,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.kernel, self.stride, self.groups = (
            cin,
            cout,
            kernel,
            stride,
            groups,
        )
        self.convs = nn.ModuleList(
            ConvBN(cin, cout, kernel, stride, groups) for _ in range(branches)
        )
        use_small = small is not None and _pair(small) != _pair(kernel)
        self.small = ConvBN(cin, cout, small, stride, groups) if use_small else None
        use_identity = identity and cin == cout and stride == 1
        self.identity = nn.BatchNorm2d(cin) if use_identity else None
        self.se = SqueezeExcite(cout, se) if se else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            y = self.fused(x)
        else:
            y = sum(branch(x) for branch in self.branches())
        return self.act(self.se(y))

    def branches(self) -> list[nn.Module]:
        return [*self.convs, *(b for b in (self.small, self.identity) if b is not None)]

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernel and bias of the sum of the branches."""
        parts = [conv.fused() for conv in self.convs]
        if self.small is not None:
            kernel, bias = self.small.fused()
            parts.append((_pad_to(kernel, self.kernel), bias))
        if self.identity is not None:
            like = self.identity.weight
            parts.append(
                fuse_bn(identity_kernel(self.cin, self.groups, self.kernel, like), self.identity)
            )
        return sum(k for k, _ in parts), sum(b for _, b in parts)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.fused is not None:
            return
        kernel, bias = self.folded()
        self.fused = _conv_like(kernel, bias, self.stride, self.groups)
        self.convs, self.small, self.identity = nn.ModuleList(), None, None


def _conv_like(kernel: torch.Tensor, bias: torch.Tensor, stride: int, groups: int) -> nn.Conv2d:
    cout, per_group, kh, kw = kernel.shape
    conv = nn.Conv2d(per_group * groups, cout, (kh, kw), stride, (kh // 2, kw // 2), groups=groups)
    conv.weight.copy_(kernel)
    conv.bias.copy_(bias)
    return conv.to(kernel.device)


class RepMixer(nn.Module):
    """Token mixing by a depthwise convolution: x + γ·(mixer(x) − BN(x)) (FastViT).

    Folds into one depthwise convolution: identity + γ·(W_mixer − W_bn).
    """

    def __init__(
        self, dim: int, kernel: Kernel, layer_scale: float = 1e-5, small: Kernel | None = 1
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.norm = nn.BatchNorm2d(dim)
        self.mixer = RepConv(dim, dim, kernel, groups=dim, small=small, act=False)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        return x + self.layer_scale * (self.mixer(x) - self.norm(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.fused is not None:
            return
        dim = self.layer_scale.shape[0]
        mixer_k, mixer_b = self.mixer.folded()
        eye = identity_kernel(dim, dim, self.kernel, mixer_k)
        norm_k, norm_b = fuse_bn(eye, self.norm)
        gamma = self.layer_scale.reshape(-1)
        kernel = eye + gamma.reshape(-1, 1, 1, 1) * (mixer_k - norm_k)
        self.fused = _conv_like(kernel, gamma * (mixer_b - norm_b), 1, dim)
        del self.norm, self.mixer, self.layer_scale


class ConvMLP(nn.Module):
    """Depthwise conv+BN, then a 1×1 expand, GELU, 1×1 project."""

    def __init__(self, dim: int, hidden: int, kernel: Kernel) -> None:
        super().__init__()
        self.conv = ConvBN(dim, dim, kernel, groups=dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if isinstance(self.conv, ConvBN):
            kernel, bias = self.conv.fused()
            self.conv = _conv_like(kernel, bias, 1, kernel.shape[0])


class RepCPE(nn.Module):
    """Conditional positional encoding x + DWConv(x) (Chu et al. 2021), folded into one conv."""

    def __init__(self, dim: int, kernel: Kernel = 7) -> None:
        super().__init__()
        self.kernel = kernel
        self.pos = nn.Conv2d(dim, dim, kernel, padding=_padding(kernel), groups=dim)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x) if self.fused is not None else x + self.pos(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.fused is None:
            eye = identity_kernel(
                self.pos.in_channels, self.pos.groups, self.kernel, self.pos.weight
            )
            self.fused = _conv_like(eye + self.pos.weight, self.pos.bias, 1, self.pos.groups)
            del self.pos


class MixerBlock(nn.Module):
    """RepMixer token mixing, then x + γ·ConvMLP(x). Works on (B, C, H, W); text uses H = 1.

    ``small``: the token mixer's extra small branch (1×1, or None for none).
    """

    def __init__(
        self,
        dim: int,
        kernel: Kernel,
        mlp_ratio: float,
        mlp_kernel: Kernel,
        small: Kernel | None = 1,
    ) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim, kernel, small=small)
        self.mlp = ConvMLP(dim, int(dim * mlp_ratio), mlp_kernel)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.layer_scale * self.mlp(x)


class LayerNorm2d(nn.LayerNorm):
    """Layer norm over the channels at each position of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class AttentionBlock(nn.Module):
    """A norm, then self-attention over the H·W positions, then a ConvMLP; both with layer scale.

    ``norm``: ``"batch"`` (MCi0–2) or ``"layer"`` (MCi3/4: a layer norm over the channels at each
    position).
    """

    def __init__(
        self,
        dim: int,
        head_dim: int,
        mlp_ratio: float,
        seq_len: int,
        attention: dict | None,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"width {dim} is not divisible by head_dim {head_dim}")
        if norm not in ("batch", "layer"):
            raise ValueError(f"unknown attention norm {norm!r}; expected 'batch' or 'layer'")
        self.norm = nn.BatchNorm2d(dim) if norm == "batch" else LayerNorm2d(dim)
        self.attn = build_attention(dim, dim // head_dim, seq_len, False, attention, qkv_bias=False)
        self.layer_scale_1 = nn.Parameter(torch.full((dim, 1, 1), 1e-5))
        self.mlp = ConvMLP(dim, int(dim * mlp_ratio), 7)
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H·W, C)
        mixed = self.attn(tokens).transpose(1, 2).reshape(B, C, H, W)
        x = x + self.layer_scale_1 * mixed
        return x + self.layer_scale_2 * self.mlp(x)


class HybridVisionTower(nn.Module):
    """MobileCLIP's MCi image tower: convolutional RepMixer stages, then attention stages.

    Args:
        image_size: square input side; must be divisible by 4 · 2^(stages − 1).
        layers, widths, mixers: blocks, channels and token mixer (``"repmixer"`` or
            ``"attention"``) per stage.
        mlp_ratio: ConvMLP expansion.
        embed_dim: output embedding width.
        se_downsample: squeeze-excite in each stage's downsample.
        pos_embed: a conditional positional encoding at the start of each stage.
        head_dim: attention head width.
        attention: attention variant spec for every attention block.
        attention_norm: ``"batch"`` or ``"layer"`` norm in the attention blocks.
        stem_scale_branch: the stem's 3×3 convolutions train a 1×1 branch beside them.
    """

    def __init__(
        self,
        image_size: int,
        layers: list[int],
        widths: list[int],
        mixers: list[str],
        mlp_ratio: float,
        embed_dim: int,
        se_downsample: list[bool],
        pos_embed: list[bool],
        head_dim: int = 32,
        attention: dict | None = None,
        attention_norm: str = "batch",
        stem_scale_branch: bool = True,
    ) -> None:
        super().__init__()
        stages = len(layers)
        if not (len(widths) == len(mixers) == len(se_downsample) == len(pos_embed) == stages):
            raise ValueError(
                "layers, widths, mixers, se_downsample and pos_embed need one entry per stage"
            )
        if image_size % (4 * 2 ** (stages - 1)):
            raise ValueError(f"image_size {image_size} is not divisible by {4 * 2 ** (stages - 1)}")
        self.image_size = image_size
        w0, small = widths[0], 1 if stem_scale_branch else None
        self.stem = nn.Sequential(
            RepConv(3, w0, 3, stride=2, small=small),
            RepConv(w0, w0, 3, stride=2, groups=w0, small=small),
            RepConv(w0, w0, 1),
        )
        self.stages = nn.ModuleList()
        side, prev = image_size // 4, w0
        for i, (depth, width, mixer) in enumerate(zip(layers, widths, mixers, strict=True)):
            stage = nn.Module()
            stage.downsample = nn.Identity()
            if i > 0:
                side //= 2
                se = max(8, int(width * 0.25 + 4) // 8 * 8) if se_downsample[i] else None
                stage.downsample = nn.Sequential(
                    RepConv(prev, width, 7, stride=2, groups=prev, small=3, identity=False, se=se),
                    RepConv(width, width, 1),
                )
            stage.pos_embed = RepCPE(width) if pos_embed[i] else nn.Identity()
            if mixer == "repmixer":
                blocks = (MixerBlock(width, 3, mlp_ratio, 7) for _ in range(depth))
            elif mixer == "attention":
                blocks = (
                    AttentionBlock(
                        width, head_dim, mlp_ratio, side * side, attention, attention_norm
                    )
                    for _ in range(depth)
                )
            else:
                raise ValueError(
                    f"unknown token mixer {mixer!r}; expected 'repmixer' or 'attention'"
                )
            stage.blocks = nn.Sequential(*blocks)
            self.stages.append(stage)
            prev = width
        self.final_conv = RepConv(prev, 2 * prev, 3, groups=prev, se=max(1, round(2 * prev / 16)))
        self.proj = nn.Linear(2 * prev, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # images: (B, 3, H, W)
        x = self.stem(images)
        for stage in self.stages:
            x = stage.blocks(stage.pos_embed(stage.downsample(x)))
        x = self.final_conv(x).mean(dim=(2, 3))  # (B, 2 · width)
        return self.proj(x)  # (B, embed_dim)


def reparameterize(model: nn.Module) -> nn.Module:
    """Fold every train-time branch of ``model`` in place (eval mode; BN statistics are frozen)."""
    if model.training:
        raise ValueError("reparameterize needs a model in eval mode (call model.eval() first)")
    for module in list(model.modules()):
        if hasattr(module, "reparameterize") and module is not model:
            module.reparameterize()
    return model


def is_reparameterized(model: nn.Module) -> bool:
    """True when no module of ``model`` still has train-time branches or foldable batch norms."""
    for module in model.modules():
        if type(module).__name__ == "ConvStem" and any(
            isinstance(m, nn.BatchNorm2d) for m in module.modules()
        ):
            return False
        if isinstance(module, (RepConv, RepMixer, RepCPE)) and module.fused is None:
            return False
        if isinstance(module, ConvMLP) and isinstance(module.conv, ConvBN):
            return False
    return True
