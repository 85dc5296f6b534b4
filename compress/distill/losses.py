"""Training losses, chosen by name in the recipe: CLIP contrastive (Radford et al. 2021) and
TinyCLIP affinity mimicking (Wu et al. 2023), mixed by α, against one teacher or an ensemble;
and the pairwise sigmoid loss (SigLIP, Zhai et al. 2023), alone or as the base loss that
affinity mimicking is mixed with.

A loss is built once from its recipe options (``losses.get(kind)(**options)``) and called every
step as ``loss(student, teachers)``, where ``student`` is the (image embeddings, text embeddings,
logit scale) the student returned, with its logit bias last when the base loss is the sigmoid
one, and ``teachers`` the (image, text, scale) triples of the teachers (empty for training
without one). Embeddings are L2-normalised; under DDP every rank's rows are gathered so
similarities span the global batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from compress.registry import Registry

losses = Registry("loss")

Embeddings = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (image (B, D), text (B, D), scale)


def _float(value):
    """Tensors (also inside tuples and lists) as float32; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, tuple | list):
        return type(value)(_float(v) for v in value)
    return value


def fp32(fn):
    """Run a loss in float32 under any autocast: the logit matrix, its softmax and the logit scale
    are where bf16's 8-bit mantissa would cost accuracy (mixed precision stops at the towers)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in _tensors(args)), "cpu")
        with torch.autocast(device, enabled=False):
            return fn(*_float(args), **{k: _float(v) for k, v in kwargs.items()})

    return wrapper


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _tensors(v)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows (rank order) so similarities span the global batch.

    The gather is differentiable: each rank's gradient flows back to the rows it produced.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


@fp32
def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """L = ½[CE(s·I·Tᵀ, diag) + CE(s·T·Iᵀ, diag)] over the global batch."""
    return _contrastive(scale * gather(image_emb) @ gather(text_emb).T)


@fp32
def clip_loss_with_negatives(
    image_emb: torch.Tensor, text_emb: torch.Tensor, negative_emb: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """The CLIP loss with one hard negative caption per image (``negative_emb``, row i a false
    caption of image i): image→text over the batch's captions and its negatives, (B, 2B);
    text→image as in :func:`clip_loss` (a negative caption has no image).

    L = ½[CE(s·I·[T; N]ᵀ, diag) + CE(s·T·Iᵀ, diag)] over the global batch.
    """
    image = gather(image_emb)
    logits = scale * image @ gather(text_emb).T  # (B, B): the pairs on the diagonal
    negatives = scale * image @ gather(negative_emb).T  # (B, B): image i's own negative at i
    labels = torch.arange(logits.shape[0], device=logits.device)
    i2t = torch.cat([logits, negatives], dim=1)
    return 0.5 * (F.cross_entropy(i2t, labels) + F.cross_entropy(logits.T, labels))


SIGMOID_CHUNK = 1024  # rows of the (N, N) logits the sigmoid loss holds at a time
# SigLIP's initial logits: scale s = exp(log 10), bias b = −10 (most pairs are negatives); what a
# model trained with the sigmoid loss starts from where its architecture sets neither
SIGMOID_INIT = {"logit_scale": math.log(10.0), "logit_bias": -10.0}
BASES = ("clip", "sigmoid")  # the contrastive losses of the model's own pairs


@fp32
def sigmoid_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    chunk: int = SIGMOID_CHUNK,
) -> torch.Tensor:
    """L = −(1/N)·Σ_i Σ_j log σ(ℓ_ij·(s·x_i·y_jᵀ + b)) over the global batch of N pairs, with
    ℓ_ii = 1 (a pair) and ℓ_ij = −1 (any other image and caption): every pair is its own binary
    decision, with a learned scale s and bias b.

    Computed ``chunk`` rows of the logits at a time, forward and backward (the backward
    recomputes them), so a large batch's (N, N) matrix is never held; the result and its
    gradients are the whole batch's up to float rounding.
    """
    return _SigmoidLoss.apply(gather(image_emb), gather(text_emb), scale, bias, chunk)


class _SigmoidLoss(torch.autograd.Function):
    """The sigmoid loss a block of rows at a time. With z = s·x·yᵀ + b, ∂L/∂z_ij =
    −ℓ_ij·σ(−ℓ_ij·z_ij)/N, from which the gradients of x, y, s and b follow."""

    @staticmethod
    def _blocks(image: torch.Tensor, text: torch.Tensor, chunk: int):
        """(start, rows, x·yᵀ of those rows, their labels ℓ) for each block of rows."""
        n = image.shape[0]
        for start in range(0, n, chunk):
            rows = image[start : start + chunk]
            labels = torch.full((len(rows), n), -1.0, device=image.device)
            labels[torch.arange(len(rows)), torch.arange(start, start + len(rows))] = 1.0
            yield start, rows, rows @ text.T, labels

    @staticmethod
    def forward(ctx, image, text, scale, bias, chunk):
        ctx.save_for_backward(image, text, scale, bias)
        ctx.chunk = chunk
        total = image.new_zeros(())
        for _, _, dots, labels in _SigmoidLoss._blocks(image, text, chunk):
            total = total + F.logsigmoid(labels * (scale * dots + bias)).sum()
        return -total / image.shape[0]

    @staticmethod
    def backward(ctx, grad):
        image, text, scale, bias = ctx.saved_tensors
        d_image, d_text = torch.zeros_like(image), torch.zeros_like(text)
        d_scale, d_bias = scale.new_zeros(()), bias.new_zeros(())
        for start, rows, dots, labels in _SigmoidLoss._blocks(image, text, ctx.chunk):
            g = -grad / image.shape[0] * labels * torch.sigmoid(-labels * (scale * dots + bias))
            d_image[start : start + len(rows)] = scale * g @ text
            d_text += scale * g.T @ rows
            d_scale += (g * dots).sum()
            d_bias += g.sum()
        return d_image, d_text, d_scale.reshape(scale.shape), d_bias.reshape(bias.shape), None


def _contrastive(logits: torch.Tensor) -> torch.Tensor:
    """The CLIP loss of (B, B) image→text logits whose diagonal holds the pairs."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """softCE(z, p) = −Σ_j p_j·log_softmax(z)_j, averaged over rows."""
    return -(targets * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


def affinity_targets(
    teachers: Sequence[Embeddings], scale: torch.Tensor | float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ensemble's image→text and text→image affinities: the mean over members m of
    softmax(s_m·I_m·T_mᵀ) and of its transpose; ``scale`` replaces every s_m when given."""
    i2t, t2i = 0.0, 0.0
    for image, text, own_scale in teachers:
        s = own_scale if scale is None else scale
        logits = s * gather(image) @ gather(text).T
        i2t = i2t + logits.softmax(dim=-1)
        t2i = t2i + logits.T.softmax(dim=-1)
    return i2t / len(teachers), t2i / len(teachers)


def affinity_loss(logits: torch.Tensor, i2t: torch.Tensor, t2i: torch.Tensor) -> torch.Tensor:
    """L_aff = ½[softCE(A_s, P_i2t) + softCE(A_sᵀ, P_t2i)] for the student's affinities A_s = s·I·Tᵀ."""
    return 0.5 * (soft_cross_entropy(logits, i2t) + soft_cross_entropy(logits.T, t2i))


def _bias(student: tuple) -> torch.Tensor:
    """The student's logit bias, last of its embeddings where a sigmoid loss is trained."""
    if len(student) < 4:
        raise ValueError("the sigmoid loss needs the student's logit bias (config logit_bias)")
    return student[3]


class CLIPLoss(nn.Module):
    """The contrastive loss alone; needs no teacher."""

    def forward(self, student: Embeddings, teachers: Sequence[Embeddings] = ()) -> torch.Tensor:
        return clip_loss(*student[:3])  # fp32 itself


class SigmoidLoss(nn.Module):
    """The sigmoid loss alone, with the student's own scale and bias; needs no teacher."""

    def forward(self, student: tuple, teachers: Sequence[Embeddings] = ()) -> torch.Tensor:
        return sigmoid_loss(*student[:3], _bias(student))  # fp32 itself


class AffinityMimicking(nn.Module):
    """α·L_aff + (1 − α)·L_base against one teacher or the mean affinities of an ensemble,
    where L_base is the CLIP loss or the sigmoid loss of the student's own pairs.

    Args:
        alpha: weight of affinity mimicking (1 = TinyCLIP's default, 0 = the base loss alone).
        student_scale: a fixed logit scale for the student's affinities, or None for the
            student's own learnable one.
        teacher_scale: a fixed logit scale for every teacher, ``"learnable"`` for one learned
            scale (initialised at the first teacher's) shared by the ensemble, or None for each
            teacher's own.
        base: ``"clip"`` or ``"sigmoid"`` (the student's embeddings then end with its logit
            bias). The affinities stay softmaxes either way: a bias added to every logit of a
            row changes no softmax, so L_aff reads only the scale.

    Example:
        >>> loss = AffinityMimicking(alpha=1.0, student_scale=50.0, teacher_scale=50.0)
        >>> value = loss(student_out, [teacher_out])  # doctest: +SKIP
    """

    def __init__(
        self,
        alpha: float = 1.0,
        student_scale: float | None = None,
        teacher_scale: float | str | None = None,
        base: str = "clip",
    ) -> None:
        super().__init__()
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if base not in BASES:
            raise ValueError(f"base must be one of {list(BASES)}, got {base!r}")
        self.base = base
        if isinstance(teacher_scale, str) and teacher_scale != "learnable":
            raise ValueError(
                f"teacher_scale must be a number, 'learnable' or null, got {teacher_scale!r}"
            )
        self.alpha, self.student_scale, self.teacher_scale = alpha, student_scale, teacher_scale
        # learned in log space like CLIP's; initialised from the teacher at the first step
        self.teacher_log_scale = (
            nn.Parameter(torch.tensor(math.nan)) if teacher_scale == "learnable" else None
        )

    @fp32
    def forward(self, student: tuple, teachers: Sequence[Embeddings]) -> torch.Tensor:
        if not teachers:
            raise ValueError("affinity mimicking needs at least one teacher")
        image, text, own_scale = student[:3]
        image, text = gather(image), gather(text)  # once: both terms span the global batch
        s_student = own_scale if self.student_scale is None else self.student_scale
        if self.teacher_log_scale is not None:
            if self.teacher_log_scale.isnan():
                with torch.no_grad():
                    self.teacher_log_scale.copy_(teachers[0][2].log())
            s_teacher = self.teacher_log_scale.exp()
        else:
            s_teacher = self.teacher_scale
        i2t, t2i = affinity_targets(teachers, s_teacher)  # grads reach only a learnable scale
        similarity = image @ text.T
        value = affinity_loss(s_student * similarity, i2t, t2i)
        if self.alpha < 1:
            if self.base == "clip":
                base = _contrastive(own_scale * similarity)
            else:  # on the rows gathered above
                base = _SigmoidLoss.apply(image, text, own_scale, _bias(student), SIGMOID_CHUNK)
            value = self.alpha * value + (1 - self.alpha) * base
        return value


losses.register("clip")(CLIPLoss)
losses.register("sigmoid")(SigmoidLoss)
losses.register("affinity")(AffinityMimicking)


def stored_teachers(
    image: torch.Tensor, text: torch.Tensor, dims: Sequence[int], scales: Sequence[float]
) -> list[Embeddings]:
    """An ensemble's stored embeddings as one (image, text, scale) triple per member.

    A reinforced dataset keeps each sample's teacher embeddings concatenated over the ensemble
    (``dims`` the members' widths, in order); every member's slice is L2-normalised on its own,
    as that member's tower returned it.
    """
    if image.shape[-1] != sum(dims) or text.shape[-1] != sum(dims):
        raise ValueError(
            f"stored embeddings are {image.shape[-1]} and {text.shape[-1]} wide; the teachers' "
            f"dims {list(dims)} add up to {sum(dims)}"
        )
    images, texts = image.float().split(list(dims), -1), text.float().split(list(dims), -1)
    return [
        (F.normalize(i, dim=-1), F.normalize(t, dim=-1), torch.tensor(float(s)))
        for i, t, s in zip(images, texts, scales, strict=True)
    ]


class ReinforcedKD(nn.Module):
    """MobileCLIP's loss on a reinforced dataset: for the real caption and for one synthetic
    caption, (1 − λ)·L_base + λ·L_kd with L_kd the ensemble's stored affinities (each member's
    own logit scale) and L_base the CLIP or sigmoid loss of the student's own pairs; the two are
    summed. No teacher runs: its embeddings come with the data.

    Args:
        lam: λ, the weight of distillation against the base loss.
        dims: the ensemble members' embedding widths, as the dataset's index lists them.
        scales: the members' logit scales, likewise.
        base: ``"clip"`` or ``"sigmoid"`` (the student's logit bias is then passed in).
    """

    def __init__(
        self, lam: float, dims: Sequence[int], scales: Sequence[float], base: str = "clip"
    ) -> None:
        super().__init__()
        if len(dims) != len(scales) or not dims:
            raise ValueError(f"one logit scale per teacher: dims {dims}, scales {scales}")
        self.dims, self.scales = list(dims), list(scales)
        self.affinity = AffinityMimicking(alpha=lam, base=base)

    def forward(
        self,
        image: torch.Tensor,
        real_text: torch.Tensor,
        synthetic_text: torch.Tensor,
        scale: torch.Tensor,
        stored_image: torch.Tensor,
        stored_real: torch.Tensor,
        stored_synthetic: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The student's image and both captions' embeddings (L2-normalised), logit scale (and
        bias), against the stored teacher embeddings of the replayed augmentation and both
        captions."""
        logits = (scale,) if bias is None else (scale, bias)
        total = 0.0
        for text, stored_text in ((real_text, stored_real), (synthetic_text, stored_synthetic)):
            teachers = stored_teachers(stored_image, stored_text, self.dims, self.scales)
            total = total + self.affinity((image, text, *logits), teachers)
        return total
