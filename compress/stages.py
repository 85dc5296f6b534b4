"""The stages of an edgeclip run, in order: data → pretrain | teacher → eval → export → report."""

from __future__ import annotations

import copy
import json
from itertools import islice
from pathlib import Path

import torch

from compress.data.datasets import CsvDataset, WdsDataset
from compress.data.scenes import SPLITS
from compress.data.transforms import image_transform
from compress.models import (
    build_model,
    count_params,
    image_normalization,
    load_model,
    model_config,
    save_model,
)
from compress.pipeline import Context, Stage
from compress.recipe import Recipe, RecipeError
from compress.tokenizer import Tokenizer

SCENES = "scenes"


def uses_scenes(recipe: Recipe) -> bool:
    """Whether the run trains or evaluates on the embedded scenes dataset (so must write it)."""
    tasks = (*recipe.eval.zeroshot, *recipe.eval.retrieval) if recipe.eval else ()
    trains = (recipe.pretrain or recipe.distill) is not None and recipe.data.train == SCENES
    return trains or any(task in SPLITS for task in tasks)


def _scenes_dir(ctx: Context) -> Path:
    return ctx.stage_dir("data") / "scenes"


def resolve_csv(ctx: Context, name: str) -> Path:
    """A task name of the scenes dataset (``zs_colour_shape``) or a CSV path of the user's."""
    return Path(name) if name.endswith(".csv") else _scenes_dir(ctx) / f"{name}.csv"


def teacher_model(ctx: Context):
    """The run's own model (trained by pretrain, or given as the teacher) and its architecture record."""
    source = "pretrain" if ctx.recipe.pretrain is not None else "teacher"
    return load_model(ctx.stage_dir(source) / "model.pt")


def final_model(ctx: Context):
    """The model the run ends with (the distilled student, else the run's own) and its architecture."""
    if ctx.recipe.distill is not None:
        return load_model(ctx.stage_dir("distill") / "model.pt")
    return teacher_model(ctx)


def train_dataset(ctx: Context, image_size: int, context_length: int, preprocess: dict | None = None):
    """This process's training data: a CSV file or webdataset shards (the scenes' or the user's)."""
    data = ctx.recipe.data
    transform, tokenize = image_transform(image_size, **(preprocess or {})), Tokenizer(context_length)
    source = data.train
    if source == SCENES:
        root = _scenes_dir(ctx)
        source = (
            str(root / "train.csv")
            if data.format == "csv"
            else sorted(map(str, (root / "wds").glob("train-*.tar")))
        )
    if isinstance(source, str) and source.endswith(".csv"):
        columns = {"image_key": data.image_key, "caption_key": data.caption_key}
        return CsvDataset(source, transform, tokenize, skip_bad=data.skip_bad, **columns)
    return WdsDataset(  # a list of shards, or a brace pattern it expands
        source, transform, tokenize, shuffle_buffer=2000, seed=ctx.recipe.seed,
        rank=ctx.rank, world_size=ctx.world, skip_bad=data.skip_bad,
    )  # fmt: skip


# --- stage bodies ---------------------------------------------------------------------------


def make_data(ctx: Context, out: Path) -> dict:
    from compress.data.scenes import write_scenes

    s = ctx.recipe.data.scenes
    sizes = {"train": s.train, "val": s.val, "retrieval": s.retrieval}
    sizes |= {task: s.zeroshot for task in ("zs_shape", "zs_colour", "zs_colour_shape", "zs_count")}
    write_scenes(
        _scenes_dir(ctx),
        seed=ctx.recipe.seed,
        image_size=s.image_size,
        sizes=sizes,
        shard_size=s.shard_size,
    )
    return {"splits": sizes}


def pretrain(ctx: Context, out: Path) -> dict:
    from compress.train import batch_stream, train

    cfg = ctx.recipe.pretrain
    if cfg.batch_size % ctx.world:
        raise RecipeError(
            f"pretrain.batch_size: {cfg.batch_size} does not split evenly across {ctx.world} processes"
        )
    torch.manual_seed(ctx.recipe.seed)
    image_attn, text_attn = cfg.attention.image.spec(), cfg.attention.text.spec()
    model = build_model(cfg.model, image_attn, text_attn)
    dataset = train_dataset(ctx, model.visual.image_size, model.text.context_length)

    def batches(start: int):
        return batch_stream(
            dataset, cfg.batch_size, ctx.recipe.seed, ctx.rank, ctx.world, start, cfg.num_workers
        )

    summary = train(model, batches, cfg, out, rank=ctx.rank, world=ctx.world, desc="pretrain")
    if ctx.rank == 0:
        save_model(model, out / "model.pt", cfg.model, image_attn, text_attn)
        (out / "checkpoint.pt").unlink(missing_ok=True)  # the finished model supersedes it
    summary["skipped_samples"] += getattr(dataset, "skipped", 0)  # CSV rows dropped at load
    keys = ("steps", "final_loss", "samples_per_s", "train_seconds", "skipped_samples")
    return {k: summary[k] for k in keys}


def load_teacher(ctx: Context, out: Path) -> dict:
    """Load the recipe's teacher (open_clip or ours) once and store it in our model format."""
    from compress.models.loaders import load_given

    cfg = ctx.recipe.teacher
    model, config, attention = load_given(cfg.model, cfg.checkpoint, cfg.pretrained)
    save_model(model, out / "model.pt", config, **attention)
    weights = cfg.checkpoint or (f"open_clip tag {cfg.pretrained}" if cfg.pretrained else None)
    if weights is None:
        print(f"teacher {cfg.model}: no checkpoint or pretrained tag given, weights are random")
    params = {"image": count_params(model.visual), "text": count_params(model.text)}
    return {"model": cfg.model, "weights": weights or "random init", "params": params}


def distill(ctx: Context, out: Path) -> dict:
    """Distil the run's model into the recipe's student(s); see :mod:`compress.distill`."""
    from compress.distill import Trained, freeze, load, run_stage, save
    from compress.io import write_json
    from compress.models.loaders import load_given
    from compress.train import batch_stream

    cfg = ctx.recipe.distill
    if cfg.batch_size % ctx.world:
        raise RecipeError(
            f"distill.batch_size: {cfg.batch_size} does not split evenly across {ctx.world} processes"
        )
    model, arch = teacher_model(ctx)
    attention = {k: arch[k] for k in ("image_attention", "text_attention")}
    current = Trained(model, {**arch["config"], "name": arch["name"]}, attention)
    # a frozen copy runs online; the original stays differentiable for Taylor importance scores
    teachers = [freeze(copy.deepcopy(model))]
    teachers += [freeze(load_given(t.model, t.checkpoint, t.pretrained)[0]) for t in cfg.ensemble]
    teacher_params = count_params(teachers[0])
    summaries = []
    for i, step in enumerate(cfg.plan()):
        stage_dir = out / f"stage{i}"
        if (stage_dir / "model.pt").exists() and (stage_dir / "summary.json").exists():
            current = load(stage_dir / "model.pt")
            summaries.append(json.loads((stage_dir / "summary.json").read_text()))
            continue
        shape = current.config if step.model is None else model_config(step.model)
        dataset = train_dataset(
            ctx, shape["vision"]["image_size"], shape["text"]["context_length"], image_normalization(shape)
        )

        def batches(start: int, size: int, dataset=dataset, seed=ctx.recipe.seed + i):
            return batch_stream(dataset, size, seed, ctx.rank, ctx.world, start, cfg.num_workers)

        current, summary = run_stage(
            i, step, cfg, current, teachers, batches, stage_dir, rank=ctx.rank, world=ctx.world
        )
        summary["model"] = current.config.get("name")
        summary["kept_fraction_of_teacher_parameters"] = summary["parameters"] / teacher_params
        if ctx.rank == 0:
            if ctx.recipe.eval is not None:
                summary["metrics"] = evaluate_model(ctx, current.model)
            save(current, stage_dir / "model.pt")
            write_json(stage_dir / "summary.json", summary)
            (stage_dir / "checkpoint.pt").unlink(missing_ok=True)
        summaries.append(summary)
    if ctx.rank == 0:
        save(current, out / "model.pt")
    return {"stages": summaries, "teacher_parameters": teacher_params, "parameters": count_params(current.model)}


def evaluate_model(ctx: Context, model) -> dict:
    """The recipe's zero-shot and retrieval metrics of one model."""
    from compress.evaluate import evaluate_csvs

    cfg = ctx.recipe.eval
    return evaluate_csvs(
        model,
        {task: resolve_csv(ctx, task) for task in cfg.zeroshot},
        {task: resolve_csv(ctx, task) for task in cfg.retrieval},
        templates=cfg.templates,
        label_key=cfg.label_key,
        batch_size=cfg.batch_size,
        skip_bad=ctx.recipe.data.skip_bad,
    )


def evaluate(ctx: Context, out: Path) -> dict:
    from compress.io import write_json

    model, _ = final_model(ctx)
    results = evaluate_model(ctx, model)
    if ctx.recipe.distill is not None:  # what the student kept of its teacher
        results["teacher"] = evaluate_model(ctx, teacher_model(ctx)[0])
    write_json(out / "metrics.json", results)
    return results


def _parity_samples(ctx: Context, model, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real images and captions for the parity check: the first retrieval set's, else the training data's."""
    image_size, context_length = model.visual.image_size, model.text.context_length
    retrieval = ctx.recipe.eval.retrieval if ctx.recipe.eval else ()
    if retrieval:
        data = CsvDataset(resolve_csv(ctx, retrieval[0]), image_transform(image_size, **model.preprocess))
        items = [data[i] for i in range(min(n, len(data)))]
    else:
        items = list(islice(iter(train_dataset(ctx, image_size, context_length)), n))
    tokens = Tokenizer(context_length)([item["caption"] for item in items])
    return torch.stack([item["image"] for item in items]), tokens


def export(ctx: Context, out: Path) -> dict:
    from export.onnx import export_onnx

    cfg = ctx.recipe.export
    model, arch = final_model(ctx)
    images, tokens = _parity_samples(ctx, model, cfg.samples)
    preprocessing = dict(model.preprocess)
    return {
        fmt: export_onnx(
            model, out / fmt, model_name=arch["name"], batch_size=cfg.batch_size, recipe_hash=ctx.recipe.hash,
            preprocessing=preprocessing, sample_images=images, sample_tokens=tokens, tolerance=cfg.tolerance,
        )
        for fmt in cfg.formats
    }  # fmt: skip


def report(ctx: Context, out: Path) -> dict:
    from compress.report import write_report

    return write_report(ctx)


def has_model(recipe: Recipe) -> bool:
    return recipe.pretrain is not None or recipe.teacher is not None


STAGES = [
    Stage("data", ("data",), make_data, uses_scenes, "write the scenes dataset (CSV + webdataset shards)"),
    Stage("pretrain", ("data", "pretrain"), pretrain, lambda r: r.pretrain is not None, "train a CLIP model with the contrastive loss", distributed=True),
    Stage("teacher", ("teacher",), load_teacher, lambda r: r.teacher is not None, "load a given model (open_clip checkpoint or tag, or ours)"),
    Stage("distill", ("data", "pretrain", "teacher", "distill"), distill, lambda r: r.distill is not None, "distil a student from the run's model (affinity mimicking, weight inheritance)", distributed=True),
    Stage("eval", ("data", "pretrain", "teacher", "distill", "eval"), evaluate, lambda r: r.eval is not None and has_model(r), "zero-shot classification and retrieval"),
    Stage("export", ("data", "pretrain", "teacher", "distill", "export"), export, lambda r: r.export is not None and has_model(r), "export the towers and check them against PyTorch"),
    Stage("report", (), report, lambda r: True, "write report.md and report.json"),
]  # fmt: skip


def enabled_stages(recipe: Recipe) -> list[str]:
    return [s.name for s in STAGES if s.enabled(recipe)]
