"""Which layers INT8 hurts: each layer the W8A8 scheme quantizes, quantized alone with the
quantizer that ships (:func:`compress.quant.ptq.quantizer`, every other op left in float),
calibrated, and its tower's embeddings compared with the float model's on held-out samples;
and the plan that keeps the fewest, most sensitive of them in float within an accuracy budget.

A layer is named ``<tower>.<module path>`` of the folded model (``image.blocks.3.mlp.fc2``), the
names :attr:`compress.quant.config.QuantConfig.float_layers` takes to keep layers in float.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compress.compat import torch_export_quiet
from compress.models import CLIP, count_params, reparameterize
from compress.models.record import TOWERS
from compress.quant.config import QuantConfig
from compress.quant.ptq import exported_tower, prepare_graph, quantizer


def quantizable_layers(deployed: CLIP, config: QuantConfig) -> list[str]:
    """The layers of a folded model that W8A8 quantizes: every linear layer and convolution,
    and the token table (weight-only) where ``config.embeddings``."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d) + ((nn.Embedding,) if config.embeddings else ())
    return [
        f"{name}.{path}"
        for name, tower in zip(TOWERS, (deployed.visual, deployed.text), strict=True)
        for path, module in tower.named_modules()
        if isinstance(module, kinds)
    ]


@torch.no_grad()
def sensitivity(
    model: CLIP,
    config: QuantConfig,
    calibration: dict[str, torch.Tensor],
    heldout: dict[str, torch.Tensor],
    layers: list[str] | None = None,
) -> list[dict]:
    """What quantizing each layer alone costs, most sensitive first.

    Args:
        model: the float model.
        config: the W8A8 scheme (its calibration method; its ``float_layers`` are ignored).
        calibration: ``image`` (N, 3, S, S) and ``text`` (N, T) inputs the ranges are set on.
        heldout: other inputs of both towers, on which the embeddings are compared.
        layers: the layers to measure (:func:`quantizable_layers`' names); all by default.

    Returns:
        One row per layer: ``layer``, ``tower``, ``params``, ``cosine_drop`` (the mean over
        held-out samples of 1 − cos(float embedding, embedding with the layer quantized)) and
        ``cosine_drop_max`` (the worst sample's).
    """
    deployed = reparameterize(copy.deepcopy(model).float().eval())
    towers = dict(zip(TOWERS, (deployed.visual, deployed.text), strict=True))
    reference = {
        name: F.normalize(towers[name](heldout[name]), dim=-1) for name in TOWERS
    }  # (N, D) each
    graphs = {}  # each tower exported once, if any of its layers is measured
    rows = []
    for layer in layers or quantizable_layers(deployed, config):
        name, path = layer.split(".", 1)
        if name not in graphs:
            graphs[name] = exported_tower(deployed, name)
        only = quantizer(config, tower=name, only=path)
        prepared = prepare_graph(copy.deepcopy(graphs[name]), only)
        prepared.eval()(calibration[name])  # post-training observers record in either mode
        with torch_export_quiet():
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

            converted = convert_pt2e(prepared.graph)
        drop = 1 - (converted(heldout[name]) * reference[name]).sum(dim=-1)  # (N,)
        module = towers[name].get_submodule(path)
        rows.append(
            {
                "layer": layer,
                "tower": name,
                "params": count_params(module),
                "cosine_drop": float(drop.mean()),
                "cosine_drop_max": float(drop.max()),
            }
        )
    return sorted(rows, key=lambda row: -row["cosine_drop"])


def plan_float_layers(
    ranking: Callable[[], Sequence[dict]],
    drop: Callable[[tuple[str, ...]], float],
    max_drop: float,
    keep: Sequence[str] = (),
) -> dict:
    """The fewest layers to keep in float, most sensitive first, for ``drop`` to be within
    ``max_drop``: ``drop(float_layers)`` is what quantizing every other layer costs (the INT8
    simulation's accuracy drop). Layers are added one at a time in the order ``ranking()``
    gives (:func:`sensitivity`'s, measured only when quantizing all but ``keep`` costs too
    much), after those of ``keep``, until the drop fits or none is left.

    Returns:
        ``float_layers``, their ``drop``, ``within_budget``, every step's (layers, drop) and
        the ``sensitivity`` ranking where it was measured.
    """
    floats = list(keep)
    value = drop(tuple(floats))
    steps = [{"float_layers": list(floats), "drop": value}]
    rows = ranking() if value > max_drop else None
    for row in rows or ():
        if value <= max_drop:
            break
        if row["layer"] in floats:
            continue
        floats.append(row["layer"])
        value = drop(tuple(floats))
        steps.append({"float_layers": list(floats), "drop": value})
    return {
        "float_layers": floats,
        "drop": value,
        "max_drop": max_drop,
        "within_budget": value <= max_drop,
        "steps": steps,
        "sensitivity": rows,
    }


# ---------------------------------------------------------------------------------------------
# Presentation: a markdown table and a plot.


def sensitivity_table(
    rows: Sequence[dict], float_layers: Sequence[str] = (), limit: int | None = None
) -> list[str]:
    """Markdown rows of :func:`sensitivity`'s ranking, most sensitive first, each layer's
    precision as quantized (``float`` where named in ``float_layers``, else ``int8``); with
    ``limit``, the first ``limit`` rows and any float layer after them."""
    floats = set(float_layers)
    lines = [
        "| layer | tower | parameters | 1 − cos, mean | 1 − cos, worst | runs in |",
        "|---|---|---:|---:|---:|---|",
    ]
    for i, row in enumerate(rows):
        if limit is not None and i >= limit and row["layer"] not in floats:
            continue
        lines.append(
            f"| `{row['layer']}` | {row['tower']} | {row['params']:,} | {row['cosine_drop']:.2e} "
            f"| {row['cosine_drop_max']:.2e} | {'float' if row['layer'] in floats else 'int8'} |"
        )
    return lines


def plot_sensitivity(
    rows: Sequence[dict],
    path: Path,
    float_layers: Sequence[str] = (),
    plan: dict | None = None,
) -> None:
    """A PNG of each layer's cost (mean 1 − cosine, log axis: a cost of 0 draws no bar), most
    sensitive first, coloured by tower, the layers in ``float_layers`` hatched; with a ``plan`` (:func:`plan_float_layers`'
    result), a second panel: the INT8 simulation's accuracy drop after each layer sent to float,
    against its budget (the two are in different units: cosine per layer, top-1 points per
    plan). Written atomically."""
    from matplotlib.backends.backend_agg import (
        FigureCanvasAgg,
    )  # lazy: `import compress` stays light
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    from compress.io import atomic_write

    if not rows:
        raise ValueError(f"plot_sensitivity: no layers to plot for {path}")
    colours = {"image": "tab:blue", "text": "tab:orange"}
    floats = set(float_layers)
    fig = Figure(figsize=(8, 9 if plan else 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    costs, steps = fig.subplots(2, 1, height_ratios=(3, 2)) if plan else (fig.subplots(), None)
    ranks = range(1, len(rows) + 1)
    costs.bar(
        ranks,
        [row["cosine_drop"] for row in rows],
        width=0.8,
        color=[colours[row["tower"]] for row in rows],
        edgecolor=["black" if row["layer"] in floats else "none" for row in rows],
        hatch=["//" if row["layer"] in floats else "" for row in rows],
    )
    costs.set_yscale("log")
    costs.set_title(f"INT8 cost of each layer quantized alone ({len(rows)} layers)")
    costs.set_ylabel("1 − cos(float, int8) embedding, mean")
    if len(rows) <= 40:  # few enough to name
        costs.set_xticks(list(ranks), [row["layer"] for row in rows], rotation=90, fontsize=7)
    else:
        costs.set_xlabel("rank, most sensitive first")
        costs.xaxis.set_major_locator(MaxNLocator(integer=True))
    costs.grid(True, axis="y", which="both", alpha=0.3)
    legend = [Patch(color=c, label=f"{t} tower") for t, c in colours.items()]
    legend.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="kept in float"))
    costs.legend(handles=legend, fontsize="small", loc="upper right")
    if plan:
        counts = [len(step["float_layers"]) for step in plan["steps"]]
        drops = [100 * step["drop"] for step in plan["steps"]]
        steps.plot(counts, drops, marker="o", color="0.2", label="INT8 simulation (PTQ)")
        budget = 100 * plan["max_drop"]
        steps.axhline(
            budget, color="tab:red", linestyle="--", label=f"budget (quant.max_drop, {budget:g} pt)"
        )
        steps.set_title("The plan: layers sent to float, most sensitive first")
        steps.set_xlabel("layers kept in float")
        steps.set_ylabel("mean zero-shot top-1 drop (points)")
        steps.set_xticks(counts)  # one per step (a locator puts fractions around a single one)
        steps.grid(True, alpha=0.3)
        steps.legend(fontsize="small", loc="best")
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
