"""The distill stage: the run's model distilled into one student or several in a row.

Each student (``distill/stage<i>/``) inherits from the one before (the run's model for the
first) and is trained against the frozen teachers; a finished student is skipped on a rerun, so
a killed run resumes inside the student it was training. See :mod:`compress.distill.student`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from compress.data.batches import batch_stream
from compress.distill.student import Trained, freeze, run_stage
from compress.io import sha256_file, write_json
from compress.models import ModelRecord, count_params, load_model, save_model
from edgeclip.figures import pct, precision_lines
from edgeclip.inputs import check_batch, check_given, check_train_data, train_dataset
from edgeclip.pipeline import Context, Stage
from edgeclip.recipe import Recipe
from edgeclip.run_folder import MODEL_FILE, distill_stage_dir, own_model, reinforced_index
from edgeclip.run_models import evaluate_model


def check(recipe: Recipe) -> None:
    check_train_data(recipe)
    for i, member in enumerate(recipe.distill.ensemble):
        check_given(recipe, f"distill.ensemble[{i}]", member)


def replay_dataset(ctx: Context, record: ModelRecord):
    """The reinforce stage's data, replayed for a student of ``record``'s input size."""
    from compress.data.replay import ReplayDataset
    from compress.data.transforms import image_transform
    from compress.tokenizer import Tokenizer

    return ReplayDataset(
        reinforced_index(ctx),
        image_transform(record.image_size, **record.normalization),
        Tokenizer(record.context_length),
        cache=ctx.recipe.data.cache,
        skip_bad=ctx.recipe.data.skip_bad,
    )


def teachers_behind(ctx: Context, own: ModelRecord) -> dict:
    """Who the students learnt from, for their records (and so every manifest exported from
    them): the run's model file and each ensemble member (distill's, or reinforce's when the
    knowledge comes with reinforced data), with their files' sha256 and tokenizer files."""
    path = own_model(ctx)
    teachers = [{"model": own.name, "file": str(path), "sha256": sha256_file(path)}]
    reinforced = ctx.recipe.distill.loss.kind == "reinforced"
    members = ctx.recipe.reinforce.ensemble if reinforced else ctx.recipe.distill.ensemble
    for t in members:
        entry = {"model": t.model, "pretrained": t.pretrained, "checkpoint": t.checkpoint}
        for key, file in (("checkpoint", t.checkpoint), ("tokenizer", t.tokenizer)):
            if file is not None and Path(file).is_file():
                entry[f"{key}_sha256"] = sha256_file(file)
        teachers.append(entry)
    behind = {"teachers": teachers}
    if reinforced:
        index = reinforced_index(ctx)
        behind["reinforced_index"] = {"file": str(index), "sha256": sha256_file(index)}
    return behind


def run(ctx: Context, out: Path) -> dict:
    from compress.models.given import load_given  # lazy: open_clip loads only when needed

    cfg = ctx.recipe.distill
    check_batch("distill", cfg.batch_size, ctx.world)
    current = Trained(*load_model(own_model(ctx)))  # inheritance reads it once
    behind = teachers_behind(ctx, current.record)
    teacher_params = count_params(current.model)
    reinforced = cfg.loss.kind == "reinforced"
    teachers = []  # reinforced: the teachers' knowledge comes with the data, no teacher runs
    if not reinforced:
        # a frozen copy runs online; the original stays differentiable for Taylor importance
        teachers = [freeze(copy.deepcopy(current.model))]
        teachers += [
            freeze(load_given(t.model, t.checkpoint, t.pretrained, t.tokenizer)[0])
            for t in cfg.ensemble
        ]
    summaries = []
    for i, step in enumerate(cfg.plan()):
        stage_dir = distill_stage_dir(ctx, i)
        if (stage_dir / MODEL_FILE).exists() and (stage_dir / "summary.json").exists():
            current = Trained(*load_model(stage_dir / MODEL_FILE))
            summaries.append(json.loads((stage_dir / "summary.json").read_text()))
            continue
        shape = current.record if step.model is None else ModelRecord.named(step.model)
        dataset = replay_dataset(ctx, shape) if reinforced else train_dataset(ctx, shape)

        def batches(start: int, size: int, dataset=dataset, seed=ctx.recipe.seed + i):
            return batch_stream(dataset, size, seed, ctx.rank, ctx.world, start, cfg.num_workers)

        current, summary = run_stage(
            i,
            step,
            cfg,
            current,
            teachers,
            batches,
            stage_dir,
            stored=(dataset.dims, dataset.scales) if reinforced else None,
            rank=ctx.rank,
            world=ctx.world,
            stop_after=ctx.stop_after,
        )
        record = current.record
        current = Trained(current.model, record.derive(provenance={**record.provenance, **behind}))
        summary["model"] = current.record.name
        summary["kept_fraction_of_teacher_parameters"] = summary["parameters"] / teacher_params
        if ctx.rank == 0:
            if ctx.recipe.eval is not None:
                summary["metrics"] = evaluate_model(ctx, current.model)
            save_model(current.model, current.record, stage_dir / MODEL_FILE)
            write_json(stage_dir / "summary.json", summary)
            (stage_dir / "checkpoint.pt").unlink(missing_ok=True)
        summaries.append(summary)
    if ctx.rank == 0:
        save_model(current.model, current.record, out / MODEL_FILE)
    return {
        "stages": summaries,
        "teacher_parameters": teacher_params,
        "parameters": count_params(current.model),
    }


def report(summary: dict) -> list[str]:
    stages = summary.get("stages", [])
    # the first zero-shot task the recipe evaluates, if any, as the per-student accuracy column
    task = next((t for s in stages for t in s.get("metrics", {}).get("zeroshot", {})), None)
    column = f"{task} top-1" if task else "top-1"
    lines = [
        "## Distillation",
        "",
        f"| stage | student | parameters | of teacher | inheritance | steps | final loss | {column} |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for i, s in enumerate(stages):
        zs = s.get("metrics", {}).get("zeroshot", {}).get(task)
        lines.append(
            f"| {i} | `{s.get('model')}` | {s['parameters'] / 1e6:.2f} M | {pct(s['kept_fraction_of_teacher_parameters'])} | "
            f"{s['inherit']['method']} | {s['train']['steps']} | {s['train']['final_loss']:.4f} | {pct(zs['top1']) if zs else '-'} |"
        )
    if stages:
        lines += precision_lines(stages[-1]["train"])
    return lines


STAGE = Stage(
    "distill",
    ("data", "pretrain", "teacher", "reinforce", "distill"),
    run,
    lambda r: r.distill is not None,
    "distil a student from the run's model (affinity mimicking, weight inheritance)",
    distributed=True,
    check=check,
    report=report,
)
