"""Activation outlier statistics of block and FFN outputs: ∞-norm and kurtosis (Bondarenko et al.
2023, "Quantizable Transformers", docs/design.md, "Methods").

Attention heads that learn to "do nothing" push a few hidden dimensions of the residual stream
to huge values; per-tensor int8 activations then spend their whole range on those few values.
The ∞-norm (max |x|) shows how large the outliers get; the kurtosis over the hidden dimension
(≈ 3 for Gaussian features, far larger when a few dimensions dominate) shows how concentrated
they are. Clipped softmax and gated attention exist to keep both small.

Example:
    >>> record = ModelRecord.named("tiny")  # doctest: +SKIP
    >>> result = measure_heldout(record.build(), record, n=64)  # doctest: +SKIP
    >>> result["summary"]["image"]["max_inf_norm"]  # doctest: +SKIP
    5.91
    >>> print("\\n".join(outlier_table(result)))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.models import ModelRecord
from compress.models.mobile import AttentionBlock, MixerBlock
from compress.models.towers import Block

BLOCKS = (Block, MixerBlock, AttentionBlock)  # transformer, RepMixer and hybrid-attention blocks
TOWERS = {"visual": "image", "text": "text"}  # CLIP attribute → tower name
KINDS = ("block", "ffn")
# float64 elements per kurtosis chunk (32 MB): bounds the memory of large layers and batches
_CHUNK = 2**22


def kurtosis(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """E[(x − μ)⁴] / σ⁴ over ``dim``, with the population σ; computed in float64.

    A Gaussian has kurtosis 3, a ±1 vector 1 (the smallest possible); one large value among many
    small ones drives it towards the vector's length. A constant vector has no spread (0/0): it
    gets 0, not NaN, so an averaged statistic stays finite, and 0 is below every attainable value
    (≥ 1), so it never passes for an outlier.

    Returns:
        ``x``'s shape without ``dim``, in ``x``'s floating dtype (float64 for integer inputs).

    Example:
        >>> kurtosis(torch.tensor([1.0, -1.0, 1.0, -1.0]))
        tensor(1.)
    """
    return _kurtosis64(x, dim).to(x.dtype if x.is_floating_point() else torch.float64)


def _kurtosis64(x: torch.Tensor, dim: int) -> torch.Tensor:
    # in place on one float64 copy: ~15x faster on CPU than out-of-place pow()s
    centred = x.detach().to(torch.float64, copy=True)
    centred -= centred.mean(dim=dim, keepdim=True)
    squared = centred.mul_(centred)
    m2 = squared.mean(dim=dim)
    m4 = squared.mul_(squared).mean(dim=dim)
    # an exact test, not m2 > eps: the float64 mean of n equal values need not equal the value
    lo, hi = torch.aminmax(x.detach(), dim=dim)
    constant = lo == hi
    return torch.where(constant, 0.0, m4 / torch.where(constant, 1.0, m2 * m2))


def inf_norm(x: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """max |x| over ``dim`` (every element when None).

    Example:
        >>> inf_norm(torch.tensor([[1.0, -3.0], [2.0, 0.5]]), dim=1)
        tensor([3., 2.])
    """
    return x.detach().abs().amax() if dim is None else x.detach().abs().amax(dim=dim)


def hidden_last(x: torch.Tensor) -> torch.Tensor:
    """(B, tokens, hidden): a (B, T, D) sequence as it is; a (B, C, H, W) feature map with its
    channels as the hidden dimension and its H·W positions as tokens."""
    if x.ndim == 4:
        return x.flatten(2).transpose(1, 2)  # (B, H·W, C)
    return x.reshape(x.shape[0], -1, x.shape[-1])  # (B, T, D)


@dataclass
class LayerStats:
    """Running sums of one hooked output over the samples seen so far."""

    name: str
    tower: str
    kind: str
    inf_sum: float = 0.0
    inf_max: float = 0.0
    samples: int = 0
    kurtosis_sum: float = 0.0
    tokens: int = 0

    def add(self, output: torch.Tensor) -> None:
        h = hidden_last(output.detach())  # (B, tokens, hidden)
        per_sample = inf_norm(h.flatten(1), dim=1)  # (B,)
        self.inf_sum += per_sample.sum().item()
        self.inf_max = max(self.inf_max, per_sample.max().item())
        self.samples += h.shape[0]
        rows = max(1, _CHUNK // max(1, h.shape[1] * h.shape[2]))
        for part in h.split(rows):  # (≤ rows, tokens, hidden)
            self.kurtosis_sum += _kurtosis64(part, dim=-1).sum().item()
        self.tokens += h.shape[0] * h.shape[1]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "tower": self.tower,
            "kind": self.kind,
            "inf_norm": self.inf_sum / self.samples,
            "inf_norm_max": self.inf_max,
            "kurtosis": self.kurtosis_sum / self.tokens,
        }


def hooked_layers(model: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """(module path, module, tower, kind) of every block and FFN of a CLIP model's towers.

    Blocks are transformer blocks, MobileCLIP RepMixer blocks and hybrid attention blocks; an FFN
    is a block's ``mlp`` (absent from blocks pruned to no neurons), hooked before the residual add
    (and before the layer scale of MobileCLIP's blocks). Paths are from the model, e.g.
    ``visual.blocks.0`` and ``visual.blocks.0.mlp``, in the model's module order.
    """
    layers = []
    for attr, tower in TOWERS.items():
        for name, module in getattr(model, attr).named_modules(prefix=attr):
            if isinstance(module, BLOCKS):
                layers.append((name, module, tower, "block"))
                if getattr(module, "mlp", None) is not None:
                    layers.append((f"{name}.mlp", module.mlp, tower, "ffn"))
    return layers


class OutlierHooks:
    """Forward hooks that gather :class:`LayerStats` of every block and FFN output while active.

    A context manager: the hooks are removed on exit, also when the forward pass raised.

    Example:
        >>> with OutlierHooks(model) as hooks, torch.no_grad():  # doctest: +SKIP
        ...     model.visual(images)
        >>> hooks.layers()[0]["name"]  # doctest: +SKIP
        'visual.blocks.0'
    """

    def __init__(self, model: nn.Module) -> None:
        layers = hooked_layers(model)
        self.stats = [LayerStats(name, tower, kind) for name, _, tower, kind in layers]
        self._modules = [module for _, module, _, _ in layers]
        self._handles: list = []

    def __enter__(self) -> OutlierHooks:
        for stats, module in zip(self.stats, self._modules, strict=True):
            self._handles.append(module.register_forward_hook(self._hook(stats)))
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @staticmethod
    def _hook(stats: LayerStats):
        def hook(module: nn.Module, inputs: tuple, output) -> None:
            if isinstance(output, torch.Tensor):
                stats.add(output)

        return hook

    def layers(self) -> list[dict]:
        """Per-layer statistics of the layers that ran, in module order."""
        return [s.to_dict() for s in self.stats if s.samples]


def _summary(layers: list[dict]) -> dict:
    if not layers:
        return {"max_inf_norm": None, "mean_kurtosis": None, "max_kurtosis": None}
    kurt = [layer["kurtosis"] for layer in layers]
    return {
        "max_inf_norm": max(layer["inf_norm"] for layer in layers),
        "mean_kurtosis": sum(kurt) / len(kurt),
        "max_kurtosis": max(kurt),
    }


def summarize(layers: list[dict]) -> dict:
    """Per tower (``image``, ``text``, ``all``): the largest per-layer ∞-norm (each layer's
    averaged over samples: the paper's "max inf. norm"), the mean and the max over layers of the
    kurtosis; None for a tower that did not run."""
    towers = {tower: [la for la in layers if la["tower"] == tower] for tower in TOWERS.values()}
    return {tower: _summary(rows) for tower, rows in {**towers, "all": layers}.items()}


@torch.no_grad()
def measure_outliers(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> dict:
    """∞-norm and kurtosis of every block and FFN output of a CLIP model over some batches.

    Args:
        model: a CLIP model with ``visual`` and ``text`` towers (any the project builds). It runs
            in eval mode (batch norms use their running statistics); its mode is restored after.
        batches: dicts with ``"image"`` (B, 3, S, S) float, preprocessed for the model, and
            ``"text"`` (B, T) int64 token ids, as :func:`compress.data.datasets.collate` and
            :func:`sample_batches` yield; other keys are ignored. A batch without one of the two
            keys leaves that tower out. Every token position counts, padding included: the
            deployed int8 graph computes (and quantizes) those activations too.

    Returns:
        A JSON-able dict: ``layers`` (per hooked output, in module order: ``name``, ``tower``,
        ``kind`` (block|ffn), ``inf_norm`` (per-sample max |x|, averaged over samples),
        ``inf_norm_max`` (its max over samples), ``kurtosis`` (over the hidden dimension, per
        token, averaged over tokens and samples)), ``summary`` (:func:`summarize`) and
        ``samples`` (images seen, else captions).

    Example:
        >>> images, tokens = heldout_samples(record, 64)  # doctest: +SKIP
        >>> result = measure_outliers(model, sample_batches(images, tokens, 32))  # doctest: +SKIP
    """
    device = next(model.parameters()).device
    training = model.training
    model.eval()
    counts = {"image": 0, "text": 0}
    try:
        with OutlierHooks(model) as hooks:
            for batch in batches:
                if "image" in batch:
                    model.visual(batch["image"].to(device))
                    counts["image"] += len(batch["image"])
                if "text" in batch:
                    model.text(batch["text"].to(device))
                    counts["text"] += len(batch["text"])
    finally:
        model.train(training)
    layers = hooks.layers()
    return {
        "layers": layers,
        "summary": summarize(layers),
        "samples": counts["image"] or counts["text"],
    }


def sample_batches(
    images: torch.Tensor, tokens: torch.Tensor, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Paired images (N, 3, S, S) and token ids (N, T) as :func:`measure_outliers` batches."""
    for start in range(0, len(images), batch_size):
        end = start + batch_size
        yield {"image": images[start:end], "text": tokens[start:end]}


def measure_heldout(
    model: nn.Module,
    record: ModelRecord,
    n: int = 256,
    *,
    csv: Path | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """:func:`measure_outliers` on ``n`` held-out samples: the first rows of a captioned CSV, else
    the scenes' retrieval split rendered in memory, preprocessed and tokenized as ``record`` says
    (:func:`compress.data.heldout.heldout_samples`)."""
    from compress.data.heldout import heldout_samples

    images, tokens = heldout_samples(record, n, csv, seed)
    return measure_outliers(model, sample_batches(images, tokens, batch_size))


@torch.no_grad()
def inject_outlier(mlp: nn.Module, scale: float, channel: int = 0) -> None:
    """Give an MLP (``fc`` → activation → ``proj``, in place) an outlier channel: ``fc``'s
    output ``channel`` scaled by ``scale`` and ``proj``'s input column by ``1 / scale``. The MLP
    computes about what it did (exactly for a positive input to the activation; a GELU's small
    negative outputs go to zero), while per-tensor int8 spends the range of ``fc``'s output and
    ``proj``'s input on that one channel: a model with an outlier where one is wanted, for
    tests and benchmarks."""
    mlp.fc.weight[channel] *= scale
    if mlp.fc.bias is not None:
        mlp.fc.bias[channel] *= scale
    mlp.proj.weight[:, channel] /= scale


# ---------------------------------------------------------------------------------------------
# Presentation: markdown tables and a per-layer plot.


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def summary_table(summaries: Mapping[str, dict]) -> list[str]:
    """Markdown rows of max ∞-norm and mean/max kurtosis per model (label → ``summary``) and tower."""
    lines = [
        "| model | tower | max ∞-norm | mean kurtosis | max kurtosis |",
        "|---|---|---:|---:|---:|",
    ]
    for label, summary in summaries.items():
        for tower, s in summary.items():
            lines.append(
                f"| {label} | {tower} | {_num(s['max_inf_norm'])} | {_num(s['mean_kurtosis'])} "
                f"| {_num(s['max_kurtosis'])} |"
            )
    return lines


def outlier_table(result: dict, label: str = "model") -> list[str]:
    """Markdown lines: one row per hooked layer, then the summary per tower."""
    lines = [
        f"Activation outliers over {result['samples']} samples: ∞-norm = max |x| per sample "
        "(mean and max over samples), kurtosis over the hidden dimension (mean over tokens).",
        "",
        "| layer | tower | kind | ∞-norm | ∞-norm (max) | kurtosis |",
        "|---|---|---|---:|---:|---:|",
    ]
    for la in result["layers"]:
        lines.append(
            f"| `{la['name']}` | {la['tower']} | {la['kind']} | {_num(la['inf_norm'])} "
            f"| {_num(la['inf_norm_max'])} | {_num(la['kurtosis'])} |"
        )
    return [*lines, "", *summary_table({label: result["summary"]})]


def _depths(layers: list[dict]) -> list[int]:
    """Each layer's block index within its tower (an FFN shares its block's)."""
    seen: dict[str, dict[str, int]] = {}
    out = []
    for la in layers:
        blocks = seen.setdefault(la["tower"], {})
        block = la["name"].removesuffix(".mlp") if la["kind"] == "ffn" else la["name"]
        out.append(blocks.setdefault(block, len(blocks)))
    return out


def plot_outliers(result: dict, path: Path) -> None:
    """A PNG with two panels, ∞-norm and kurtosis per layer on log axes, written atomically.

    ``result`` is one :func:`measure_outliers` result, or several by label (e.g. ``{"model": …,
    "teacher": …}``), drawn in one figure. The x axis is the block index within each tower;
    colour tells the tower, the marker the kind (● block output, △ FFN output), the line style
    the model.
    """
    from matplotlib.backends.backend_agg import (
        FigureCanvasAgg,
    )  # lazy: `import compress` stays light
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from compress.io import atomic_write

    results = {"": result} if "layers" in result else dict(result)
    colours = {"image": "tab:blue", "text": "tab:orange"}
    markers = {"block": "o", "ffn": "^"}
    styles = ["-", "--", ":", "-."]
    fig = Figure(figsize=(8, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for i, (label, res) in enumerate(results.items()):
        depths = _depths(res["layers"])
        for tower in colours:
            for kind in KINDS:
                rows = [
                    (d, la)
                    for d, la in zip(depths, res["layers"], strict=True)
                    if la["tower"] == tower and la["kind"] == kind
                ]
                if not rows:
                    continue
                xs = [d - (0.15 if kind == "ffn" else 0.0) for d, _ in rows]  # FFN, then block
                style = {
                    "color": colours[tower],
                    "marker": markers[kind],
                    "linestyle": styles[i % len(styles)],
                    "markerfacecolor": colours[tower] if kind == "block" else "none",
                    "label": f"{label} {tower} {kind}".strip(),
                }
                top.plot(xs, [la["inf_norm"] for _, la in rows], **style)
                bottom.plot(xs, [la["kurtosis"] for _, la in rows], **style)
    samples = next(iter(results.values()))["samples"] if results else 0
    top.set_title(f"Activation outliers of block and FFN outputs ({samples} samples)")
    top.set_ylabel("∞-norm (max |x|, mean over samples)")
    bottom.set_ylabel("kurtosis over hidden dim")
    bottom.set_xlabel("block index within the tower")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 4, not 4×10⁰
    for ax in (top, bottom):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.grid(True, which="both", alpha=0.3)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(
        *top.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize="small"
    )
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
