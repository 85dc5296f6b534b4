"""The profile stage: every exported artifact (and the final model in torch eager, on the host)
timed on each of the recipe's devices, one record per tower in ``profile/<device>/<artifact>/``,
and the accuracy-vs-latency plot of the host's image towers."""

from __future__ import annotations

import json
from pathlib import Path

from edgeclip.figures import mean_top1, pct
from edgeclip.pipeline import Context, Stage
from edgeclip.recipe import Recipe
from edgeclip.run_folder import artifact_metrics, evaluation, final_model, has_model

PARETO = "pareto.png"


def run(ctx: Context, out: Path) -> dict:
    from export.profile.devices import Settings, parse_address
    from export.profile.profiler import PYTORCH, profile, pytorch_towers, towers_of

    cfg = ctx.recipe.profile
    settings = Settings(cfg.runs, cfg.warmup, cfg.threads, cfg.ops)
    exported = ctx.stage_dir("export")
    towers = towers_of(exported) if ctx.done("export") else []
    batch_size = ctx.recipe.export.batch_size if ctx.recipe.export else 1
    devices = {}
    for device in cfg.devices:
        kind = parse_address(device).kind
        extra = (
            pytorch_towers(final_model(ctx), batch_size) if cfg.pytorch and kind == "host" else []
        )
        result = profile(exported, device, out, settings, cfg.options(kind), towers=towers + extra)
        result["rows"] = [
            _row(json.loads(Path(path).read_text()))
            for paths in result.pop("records").values()
            for path in paths.values()
        ]
        devices[device] = result
    summary = {"devices": devices}
    points = _pareto_points(ctx, devices.get("host"), PYTORCH)
    if points:
        from export.profile.pareto import plot_pareto

        plot_pareto(points, out / PARETO, title="Accuracy vs image-tower latency on the host")
        summary["pareto"] = f"{out.name}/{PARETO}"  # relative to the run folder, as report.md
    return summary


def check(recipe: Recipe) -> None:
    """Every device can be opened here (its address and options; Core ML needs macOS) before
    any training starts, rather than at the end of the run."""
    from compress.errors import UserError
    from export.profile.devices import open_device, parse_address

    cfg = recipe.profile
    for i, device in enumerate(cfg.devices):
        try:
            open_device(device, cfg.options(parse_address(device).kind))
        except UserError as err:
            raise recipe.error(f"profile.devices[{i}]", str(err)) from None


def _row(record: dict) -> dict:
    """What the report shows of one record (the record file keeps everything)."""
    keys = ("artifact", "tower", "runtime", "compute_unit", "precision", "threads", "load_ms")
    row = {key: record[key] for key in keys}
    row.update(
        p50_ms=record["latency_ms"]["p50"],
        p90_ms=record["latency_ms"]["p90"],
        first_ms=record["first_inference_ms"],
        peak_rss_mb=record["peak_rss_mb"],
        flops=record["flops"],
        gflops=record["achieved_gflops"],
        gemm_fraction=record["gemm_fraction"],
        gemm=record["gemm_gflops"],
        cpu=record["device"].get("cpu"),
        cores=record["device"].get("cores"),
        ops=(record["ops"] or [])[:5],
    )
    return row


def _pareto_points(ctx: Context, host: dict | None, pytorch: str) -> list[dict]:
    """One point per artifact the host timed and the export stage evaluated: image-tower p50
    against mean zero-shot top-1 (the eval stage's for the PyTorch model)."""
    if host is None:
        return []
    accuracy = {name: mean_top1(metrics) for name, metrics in artifact_metrics(ctx).items()}
    evaluated = evaluation(ctx)
    if evaluated is not None:
        accuracy[pytorch] = mean_top1(evaluated.model)
    return [
        {"name": row["artifact"], "latency_ms": row["p50_ms"], "top1": accuracy[row["artifact"]]}
        for row in host["rows"]
        if row["tower"] == "image" and accuracy.get(row["artifact"]) is not None
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(summary: dict) -> list[str]:
    lines = []
    for device, result in summary["devices"].items():
        rows = result["rows"]
        if not rows:
            continue
        first = rows[0]
        gemm = first["gemm"] or {}
        rates = ", ".join(f"{p} {r:.0f}" for p, r in gemm.items())
        lines += [
            f"## Latency on `{device}` ({first['cpu']}, {first['cores']} cores)",
            "",
            f"Per call at the exported batch size, after warm-up; GEMM reference {rates} "
            "GFLOP/s (a large matrix product here, the rate the achieved GFLOP/s is a fraction "
            "of). Peak RSS is the measuring process's, runtime libraries included.",
            "",
            "| artifact | tower | runtime | p50 ms | p90 ms | load ms | first ms | peak RSS "
            "| GFLOP/s | of GEMM |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(rows, key=lambda r: (r["tower"], r["p50_ms"])):
            gflops = "-" if r["gflops"] is None else f"{r['gflops']:.1f}"
            fraction = "-" if r["gemm_fraction"] is None else pct(r["gemm_fraction"])
            rss = "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f} MB"
            unit = r["compute_unit"].removesuffix("ExecutionProvider")
            lines.append(
                f"| `{r['artifact']}` | {r['tower']} | {r['runtime']} ({unit}) | "
                f"{_ms(r['p50_ms'])} | {_ms(r['p90_ms'])} | {_ms(r['load_ms'])} | "
                f"{_ms(r['first_ms'])} | {rss} | {gflops} | {fraction} |"
            )
        for artifact, why in result["skipped"].items():
            lines.append(f"| `{artifact}` | | not timed here: {why} | | | | | | | |")
        with_ops = [r for r in rows if r["ops"] and r["tower"] == "image"]
        if with_ops:
            lines += [
                "",
                "Top operators of the image tower, from a separate profiled pass (the "
                "profiler's own cost inflates a small model's times: read the shares):",
                "",
                "| artifact | operators (share of the profiled time) |",
                "|---|---|",
            ]
            lines += [
                f"| `{r['artifact']}` | "
                + ", ".join(f"{op['op']} {pct(op['share'])}" for op in r["ops"])
                + " |"
                for r in with_ops
            ]
    if "pareto" in summary:
        lines += [
            "",
            "Accuracy (mean zero-shot top-1) against the image tower's p50 latency on the host; "
            "the line joins the artifacts nothing beats on both:",
            "",
            f"![accuracy vs latency]({summary['pareto']})",
        ]
    return lines


STAGE = Stage(
    "profile",
    ("data", "pretrain", "teacher", "distill", "quant", "qat", "eval", "export", "profile"),
    run,
    lambda r: r.profile is not None and has_model(r),
    "time every artifact on each device (one record per tower), per-operator breakdown",
    check=check,
    report=report,
)
