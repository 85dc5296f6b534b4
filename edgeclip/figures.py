"""How the report writes numbers: percentages, sizes, the precision a trainer chose, and the
summary figures of an evaluation (mean zero-shot top-1, first retrieval R@1)."""

from __future__ import annotations

from compress.precision import describe


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def recall_pct(results: dict) -> str:
    """Image→text R@1 of the first retrieval task in ``results`` (an eval summary), or "-"."""
    retrieval = results["retrieval"]
    return pct(next(iter(retrieval.values()))["image_to_text_r1"]) if retrieval else "-"


def precision_lines(train: dict) -> list[str]:
    """The precision a training stage ran in and why (runs before precision: auto lack it)."""
    choice = train.get("precision_choice")
    return ["", f"Precision: {describe(choice)}."] if choice else []


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.2f} MB"


def mean_top1(results: dict) -> float | None:
    """The mean zero-shot top-1 over the tasks, or None without zero-shot tasks."""
    zeroshot = results["zeroshot"]
    return sum(r["top1"] for r in zeroshot.values()) / len(zeroshot) if zeroshot else None


def top1_pct(results: dict) -> str:
    """The mean zero-shot top-1 of ``results`` (an eval summary) as a percentage, or "-"."""
    top1 = mean_top1(results)
    return "-" if top1 is None else pct(top1)
