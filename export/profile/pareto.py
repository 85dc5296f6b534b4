"""Accuracy against latency: which artifacts are worth shipping, and a plot of the trade-off.

A point is one artifact: ``{"name": "onnx-int8", "latency_ms": 1.9, "top1": 0.62}``, with
``latency_ms`` its latency p50 on one device and ``top1`` its zero-shot top-1 as a fraction
(as the eval and export stages store it; the plot shows percent).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# Colours for the points, in order; the front line is grey so it never competes with them.
COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
MARKERS = ["o", "s", "^", "D", "v", "P"]
MIN_SPAN = 2.0  # the accuracy axis shows at least this many points of top-1


def dominates(a: dict, b: dict) -> bool:
    """``a`` is at most as slow and at least as accurate as ``b``, and strictly better in one."""
    no_worse = a["latency_ms"] <= b["latency_ms"] and a["top1"] >= b["top1"]
    better = a["latency_ms"] < b["latency_ms"] or a["top1"] > b["top1"]
    return no_worse and better


def pareto_front(points: Sequence[dict]) -> list[dict]:
    """The points no other point dominates, fastest first.

    Equal points do not dominate each other, so both stay on the front (e.g. an fp32 ONNX and an
    fp32 ExecuTorch export that time the same): the choice between them is not about speed or
    accuracy.

    Example:
        >>> pts = [{"name": "fp32", "latency_ms": 4.0, "top1": 0.70},
        ...        {"name": "int8", "latency_ms": 1.5, "top1": 0.68},
        ...        {"name": "slow", "latency_ms": 5.0, "top1": 0.69}]
        >>> [p["name"] for p in pareto_front(pts)]
        ['int8', 'fp32']
    """
    front = [p for p in points if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda p: (p["latency_ms"], -p["top1"]))


def plot_pareto(
    points: Sequence[dict], path: Path, title: str = "Zero-shot accuracy vs latency"
) -> None:
    """A PNG of top-1 (%) against latency p50 (ms), each point named in the legend, the front
    as a line.

    The latency axis is logarithmic when the points span more than 10×, so a fast int8 model
    and a slow fp32 one both stay readable. Written atomically, like every run output.
    """
    if not points:
        raise ValueError(f"plot_pareto: no points to plot for {path}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: keeps imports light
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator

    from compress.io import atomic_write

    fig = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    front = pareto_front(points)
    ax.plot(
        [p["latency_ms"] for p in front],
        [100 * p["top1"] for p in front],
        color="0.5",
        linestyle="--",
        zorder=1,
        label="Pareto front",
    )
    by_latency = sorted(points, key=lambda p: p["latency_ms"])
    for i, p in enumerate(by_latency):  # named in the legend: labels beside points collide
        ax.scatter(
            [p["latency_ms"]],
            [100 * p["top1"]],
            s=80,
            color=COLOURS[i % len(COLOURS)],
            marker=MARKERS[i % len(MARKERS)],
            zorder=2,
            label=p["name"],
        )
    latencies = [p["latency_ms"] for p in points]
    if min(latencies) > 0 and max(latencies) > 10 * min(latencies):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20 …
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 10, not 10¹
    ax.margins(x=0.1, y=0.1)
    low, high = ax.get_ylim()
    if high - low < MIN_SPAN:  # a tenth of a point must not look like a cliff
        middle = (low + high) / 2
        ax.set_ylim(middle - MIN_SPAN / 2, middle + MIN_SPAN / 2)
    ax.set_title(title)
    ax.set_xlabel("latency p50 (ms)")
    ax.set_ylabel("zero-shot top-1 (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
