"""The run report: report.json for tools, report.md for people, both in the run folder."""

from __future__ import annotations

from pathlib import Path

from compress.io import write_json, write_text
from compress.models import count_params, model_config
from compress.pipeline import Context


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.2f} MB"


def collect(ctx: Context) -> dict:
    """Everything the report shows, read from the stages' done markers and outputs."""
    recipe = ctx.recipe
    from compress.stages import STAGES

    stages = {}
    for stage in STAGES:  # in pipeline order
        done = ctx.done(stage.name)
        if done is not None:
            stages[stage.name] = {"finished": done["finished"], "summary": done["summary"]}
    out = {
        "name": recipe.name,
        "recipe_hash": recipe.hash,
        "recipe": recipe.to_dict(),
        "stages": stages,
    }
    if recipe.pretrain is not None:
        from compress.models import build_model

        cfg = recipe.pretrain
        model = build_model(cfg.model, cfg.attention.image.spec(), cfg.attention.text.spec())
        params = {
            "image": count_params(model.visual),
            "text": count_params(model.text),
            "total": count_params(model),
        }
        out["model"] = {
            "name": cfg.model,
            "architecture": model_config(cfg.model),
            "attention": {"image": cfg.attention.image.spec(), "text": cfg.attention.text.spec()},
            "parameters": params,
            "fp32_bytes": 4 * params["total"],
        }
    return out


def render_markdown(info: dict) -> str:
    lines = [
        f"# edgeclip run `{info['name']}`",
        "",
        f"Recipe hash `{info['recipe_hash']}` · resolved recipe in `recipe.yaml`.",
        "",
    ]
    stages = info["stages"]
    lines += ["## Stages", "", "| stage | finished | seconds |", "|---|---|---:|"]
    lines += [
        f"| {name} | {s['finished']} | {s['summary'].get('seconds', '')} |"
        for name, s in stages.items()
    ]
    if "model" in info:
        m = info["model"]
        p = m["parameters"]
        attn = ", ".join(f"{tower}: {spec['kind']}" for tower, spec in m["attention"].items())
        lines += ["", "## Model", "", f"`{m['name']}` — {p['total'] / 1e6:.2f} M parameters "
                  f"(image {p['image'] / 1e6:.2f} M, text {p['text'] / 1e6:.2f} M), {_mb(m['fp32_bytes'])} in fp32; attention {attn}."]  # fmt: skip
    if "data" in stages:
        splits = stages["data"]["summary"].get("splits", {})
        lines += [
            "",
            "## Data",
            "",
            "Scenes splits: " + ", ".join(f"{k} {v}" for k, v in splits.items()) + ".",
        ]
    if "pretrain" in stages:
        t = stages["pretrain"]["summary"]
        lines += ["", "## Training", "", f"{t['steps']} steps, final loss {t['final_loss']:.4f}, "
                  f"{t['samples_per_s']:.0f} samples/s, {t['train_seconds']:.0f} s; skipped samples: {t['skipped_samples']}."]  # fmt: skip
    if "eval" in stages:
        ev = stages["eval"]["summary"]
        lines += [
            "",
            "## Zero-shot classification",
            "",
            "| task | classes | images | top-1 | top-5 |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {task} | {r['classes']} | {r['images']} | {_pct(r['top1'])} | {_pct(r['top5'])} |"
            for task, r in ev["zeroshot"].items()
        ]
        lines += [
            "",
            "## Retrieval",
            "",
            "| split | pairs | direction | R@1 | R@5 | R@10 |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for task, r in ev["retrieval"].items():
            for key, label in (("image_to_text", "image→text"), ("text_to_image", "text→image")):
                lines.append(
                    f"| {task} | {r['pairs']} | {label} | {_pct(r[key + '_r1'])} | {_pct(r[key + '_r5'])} | {_pct(r[key + '_r10'])} |"
                )
    if "export" in stages:
        lines += ["", "## Exports (checked against PyTorch)", "",
                  "| artifact | size | min cosine | max abs diff | zero-shot agreement |", "|---|---:|---:|---:|---:|"]  # fmt: skip
        for fmt, result in stages["export"]["summary"].items():
            if not isinstance(result, dict):
                continue
            for tower in ("image", "text"):
                a = result[tower]
                par = a["parity"]
                lines.append(
                    f"| `{fmt}/{tower}/{Path(a['model']).name}` | {_mb(a['bytes'])} | {par['cosine_min']:.6f} | "
                    f"{par['max_abs']:.2e} | {_pct(par['zero_shot_agreement'])} |"
                )
    return "\n".join(lines) + "\n"


def write_report(ctx: Context) -> dict:
    info = collect(ctx)
    write_json(ctx.run_dir / "report.json", info)
    write_text(ctx.run_dir / "report.md", render_markdown(info))
    return {"report": str(ctx.run_dir / "report.md")}
