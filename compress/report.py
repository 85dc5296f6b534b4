"""The run report: report.json for tools, report.md for people, both in the run folder."""

from __future__ import annotations

from pathlib import Path

import torch

from compress.io import write_json, write_text
from compress.models import model_config, tower_params
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
    own = "pretrain" if recipe.pretrain is not None else "teacher"
    final = "distill" if recipe.distill is not None else own
    model = _describe(ctx.stage_dir(final) / "model.pt")
    if model is not None:
        out["model"] = model
    if final != own and (teacher := _describe(ctx.stage_dir(own) / "model.pt")) is not None:
        out["teacher"] = teacher
    return out


def _describe(path: Path) -> dict | None:
    """Architecture, attention and parameter counts of a saved model, without loading its weights."""
    if not path.exists():
        return None
    arch = torch.load(path, weights_only=True, mmap=True, map_location="cpu")["arch"]
    config = arch.get("config") or model_config(arch["name"])
    counts = tower_params(config)
    return {
        "name": arch["name"],
        "architecture": config,
        "attention": {"image": arch["image_attention"], "text": arch["text_attention"]},
        "parameters": {k: counts[k] for k in ("image", "text", "total")},
        "fp32_bytes": 4 * counts["total"],
    }


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
        attn = ", ".join(f"{tower}: {(spec or {'kind': 'softmax'})['kind']}" for tower, spec in m["attention"].items())
        lines += ["", "## Model", "", f"`{m['name']}` — {p['total'] / 1e6:.2f} M parameters "
                  f"(image {p['image'] / 1e6:.2f} M, text {p['text'] / 1e6:.2f} M), {_mb(m['fp32_bytes'])} in fp32; attention {attn}."]  # fmt: skip
        if "teacher" in info:
            t = info["teacher"]["parameters"]["total"]
            lines.append(f"Distilled from `{info['teacher']['name']}` ({t / 1e6:.2f} M parameters): "
                         f"{t / p['total']:.1f}× fewer parameters.")  # fmt: skip
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
    if "distill" in stages:
        lines += ["", "## Distillation", "", "| stage | student | parameters | of teacher | inheritance | steps | final loss | colour+shape top-1 |",
                  "|---|---|---:|---:|---|---:|---:|---:|"]  # fmt: skip
        for i, s in enumerate(stages["distill"]["summary"].get("stages", [])):
            zs = s.get("metrics", {}).get("zeroshot", {}).get("zs_colour_shape")
            lines.append(
                f"| {i} | `{s.get('model')}` | {s['parameters'] / 1e6:.2f} M | {_pct(s['kept_fraction_of_teacher_parameters'])} | "
                f"{s['inherit']['method']} | {s['train']['steps']} | {s['train']['final_loss']:.4f} | {_pct(zs['top1']) if zs else '-'} |"
            )
    if "eval" in stages:
        ev = stages["eval"]["summary"]
        teacher = ev.get("teacher", {}).get("zeroshot", {})
        extra = " teacher top-1 | kept |" if teacher else ""
        lines += [
            "",
            "## Zero-shot classification",
            "",
            "| task | classes | images | top-1 | top-5 |" + extra,
            "|---|---:|---:|---:|---:|" + ("---:|---:|" if teacher else ""),
        ]
        for task, r in ev["zeroshot"].items():
            row = f"| {task} | {r['classes']} | {r['images']} | {_pct(r['top1'])} | {_pct(r['top5'])} |"
            if task in teacher:
                t1 = teacher[task]["top1"]
                row += f" {_pct(t1)} | {_pct(r['top1'] / t1) if t1 else '-'} |"
            lines.append(row)
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
