"""The commands that take a model, a run folder or an artifact rather than a recipe: eval,
export, verify and profile (each command's parser beside it; :mod:`edgeclip.cli` joins them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compress.errors import UserError

DEFAULT_OUTLIER_SAMPLES = 256  # as the recipe's eval.outlier_samples


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="zero-shot and retrieval metrics of a model on CSV datasets")
    p.add_argument(
        "model",
        help="a model.pt written by a training stage, or an export folder (run in its runtime)",
    )
    p.add_argument(
        "--zeroshot",
        action="append",
        default=[],
        metavar="CSV",
        help="filepath,label CSV (repeatable)",
    )
    p.add_argument(
        "--retrieval",
        action="append",
        default=[],
        metavar="CSV",
        help="filepath,caption CSV (repeatable)",
    )
    p.add_argument(
        "--template", action="append", metavar="TEXT", help="prompt template with {} (repeatable)"
    )
    p.add_argument("--label-key", default="label")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--skip-bad", action="store_true", help="skip and count unreadable samples")
    p.add_argument(
        "--outliers",
        action="store_true",
        help="activation ∞-norm and kurtosis of every block and FFN output on held-out samples "
        "(a model.pt or a run folder; the CSVs become optional)",
    )
    p.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help=f"held-out samples of --outliers (default {DEFAULT_OUTLIER_SAMPLES})",
    )
    p.add_argument("--plot", metavar="PNG", help="--outliers: also draw them per layer here")
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="what INT8 costs each layer quantized alone: embedding cosine on held-out samples, "
        "most sensitive first (a float model.pt or a run folder; the CSVs become optional)",
    )
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from compress.evaluate import evaluate_csvs
    from compress.io import write_json
    from edgeclip.recipe import EvalConfig

    hooked = args.outliers or args.sensitivity  # measured on a PyTorch model's layers
    if not args.zeroshot and not args.retrieval and not hooked:
        raise UserError(
            "eval: give at least one --zeroshot or --retrieval CSV, or --outliers, --sensitivity"
        )
    if not hooked and args.samples is not None:
        raise UserError("eval: --samples goes with --outliers or --sensitivity")
    if not args.outliers and args.plot:
        raise UserError("eval: --plot goes with --outliers")
    if args.samples is not None and args.samples < 1:
        raise UserError(f"--samples: must be >= 1, got {args.samples}")
    source = Path(args.model)
    if hooked:  # measured in PyTorch: a model.pt or a run folder's model
        flag = "--outliers" if args.outliers else "--sensitivity"
        if source.is_dir() and not (source / "recipe.yaml").is_file():
            raise UserError(
                f"{flag}: {source} is an export folder; {flag} measures a PyTorch model's "
                "layers, so give a model.pt or a run folder"
            )
        if source.is_file() and _is_int8(source):  # its graphs have no blocks to hook
            raise UserError(
                f"{flag}: {source} is an INT8 model; {flag} measures a float model's layers, "
                "so give the float model.pt it was quantized from"
            )
        model, record, ctx = _run_model(source)
    elif source.is_dir():  # an export folder: measured through the artifact's runtime
        from export.artifact import ArtifactModel

        model = ArtifactModel(args.model)
    else:
        model, _ = _load(Path(args.model))
    results = {"model": str(args.model)}
    if args.zeroshot or args.retrieval:
        results |= evaluate_csvs(
            model,
            {path: Path(path) for path in args.zeroshot},
            {path: Path(path) for path in args.retrieval},
            templates=args.template or EvalConfig.templates,
            label_key=args.label_key,
            batch_size=args.batch_size,
            skip_bad=args.skip_bad,
        )
        print(json.dumps(results, indent=2))
    if args.outliers:
        from compress.data.heldout import heldout_samples
        from compress.quant.outliers import (
            measure_outliers,
            outlier_table,
            plot_outliers,
            sample_batches,
        )
        from edgeclip.run_models import parity_samples

        n = DEFAULT_OUTLIER_SAMPLES if args.samples is None else args.samples
        # a run's own held-out samples (as its eval stage measures them), else rendered scenes
        images, tokens = parity_samples(ctx, record, n) if ctx else heldout_samples(record, n)
        results["outliers"] = measure_outliers(
            model, sample_batches(images, tokens, args.batch_size)
        )
        if args.plot:
            plot_outliers(results["outliers"], Path(args.plot))
        print("\n".join(outlier_table(results["outliers"], f"`{record.name}`")))
    if args.sensitivity:
        results["sensitivity"] = _sensitivity(model, record, ctx, args.samples)
    if args.out:
        write_json(Path(args.out), results)
    return 0


def _sensitivity(model, record, ctx, samples: int | None) -> list[dict]:
    """Each layer's INT8 sensitivity, printed as a table: calibrated on training samples, as PTQ
    is, and measured on held-out ones (a run's own, else rendered scenes). A run folder's is
    also kept in the run, where its report shows it."""
    from compress.data.heldout import heldout_samples
    from compress.quant.config import QuantConfig
    from compress.quant.sensitivity import sensitivity, sensitivity_table
    from edgeclip.run_models import parity_samples, save_sensitivity

    quant = (ctx.recipe.quant if ctx else None) or QuantConfig()  # its calibration method
    n = DEFAULT_OUTLIER_SAMPLES if samples is None else samples
    images, tokens = heldout_samples(record, quant.samples, split="train")
    held = parity_samples(ctx, record, n) if ctx else heldout_samples(record, n)
    rows = sensitivity(
        model, quant, {"image": images, "text": tokens}, {"image": held[0], "text": held[1]}
    )
    print(f"INT8 sensitivity of `{record.name}`: each layer quantized alone, {n} held-out samples")
    print("\n".join(sensitivity_table(rows, quant.float_layers)))
    if ctx is not None:
        saved = save_sensitivity(ctx, rows, n)
        print(f"kept in {saved}: `edgeclip report {ctx.run_dir}` shows it")
    return rows


def _is_int8(path: Path) -> bool:
    """Whether a model file holds an INT8 model (its record only: the weights stay on disk)."""
    from compress.models import read_record

    return read_record(path).quantization is not None


def _load(path: Path):
    """A model file: a float model, or an INT8 one (converted: its INT8 simulation)."""
    from compress.models import load_model

    if not _is_int8(path):
        return load_model(path)
    from compress.quant.ptq import convert
    from compress.quant.qat import load_quantized

    quantized, record = load_quantized(path)
    return convert(quantized), record


def _int8(model, record, ctx):
    """The INT8 graphs to export: an INT8 model file's own; a run's (its QAT model, else the
    final model quantized after training); a float model file quantized after training,
    calibrated on rendered scenes training images."""
    from compress.quant.ptq import QuantizedCLIP, quantize

    if isinstance(model, QuantizedCLIP):
        return model
    if ctx is not None:
        from edgeclip.run_models import int8_model

        return int8_model(ctx, model, record)[0]
    from compress.data.heldout import heldout_samples
    from compress.quant.config import QuantConfig
    from compress.quant.outliers import sample_batches

    quant = QuantConfig()
    images, tokens = heldout_samples(record, quant.samples, split="train")
    return quantize(model, quant, sample_batches(images, tokens, quant.batch_size))


def _run_model(path: Path):
    """The model of a run folder (what its last training stage wrote), or a model.pt itself;
    with the run's recipe when there is one."""
    from edgeclip.pipeline import Context
    from edgeclip.recipe import load_recipe
    from edgeclip.run_folder import final_model
    from edgeclip.stages import STAGES

    if path.is_dir():
        if not (path / "recipe.yaml").is_file():
            raise UserError(f"{path}: not a run folder (no recipe.yaml) nor a model.pt")
        ctx = Context(load_recipe(path / "recipe.yaml"), path, STAGES)
        model_file = final_model(ctx)
        if not model_file.is_file():
            raise UserError(f"{path}: the run has no model yet ({model_file} is missing)")
        return (*_load(model_file), ctx)
    return (*_load(path), None)


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a run's (or a model.pt's) towers to one target, checked"
    )
    p.add_argument("source", help="a run folder (its final model) or a model.pt")
    p.add_argument("--target", required=True, help="onnx, executorch or coreml")
    p.add_argument("--precision", default="fp32", help="fp32, fp16, int8, w8 or w4 (default fp32)")
    p.add_argument(
        "--out",
        help="export folder (default: <run>/export/<target>-<precision>, or "
        "exports/<target>-<precision> beside a model.pt)",
    )
    p.add_argument("--batch-size", type=int, default=1, help="fixed batch of the towers")
    p.add_argument("--samples", type=int, default=64, help="held-out samples of the parity check")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from compress.data.heldout import heldout_samples
    from edgeclip.run_folder import exported_model
    from edgeclip.run_models import parity_samples
    from export import exporters
    from export.driver import export_model

    if args.target not in exporters:
        raise UserError(
            f"--target {args.target}: unknown target; expected one of: {', '.join(exporters.names())}"
        )
    precisions = exporters.get(args.target).precisions
    if args.precision not in precisions:
        raise UserError(
            f"--precision {args.precision}: the {args.target} target exports "
            f"{', '.join(precisions)}"
        )
    if args.batch_size < 1 or args.samples < 1:
        raise UserError("--batch-size and --samples must be >= 1")
    source = Path(args.source)
    if args.precision != "int8" and source.is_file() and _is_int8(source):  # before loading it
        raise UserError(f"{source}: an INT8 model exports at --precision int8 only")
    model, record, ctx = _run_model(source)
    name = f"{args.target}-{args.precision}"
    # beside a model file: "exports", not "export", which would shadow the package for
    # `python -m edgeclip.cli` started in that folder
    default = source / "export" if ctx else source.parent / "exports"
    out = Path(args.out) if args.out else default / name
    if ctx is not None:
        images, tokens = parity_samples(ctx, record, args.samples)
    else:
        images, tokens = heldout_samples(record, args.samples)
    quantized = _int8(model, record, ctx) if args.precision == "int8" else None
    if quantized is not None and quantized is model:  # an INT8 file: its float shape
        model = record.build().eval()  # (sizes and the logit scale, for the manifest)
        model.logit_scale.data.copy_(quantized.logit_scale.data)
    summary = export_model(
        model,
        record,
        out,
        target=args.target,
        precision=args.precision,
        sample_images=images,
        sample_tokens=tokens,
        batch_size=args.batch_size,
        recipe_hash=ctx.recipe.hash if ctx else None,
        quantized=quantized,
        source=exported_model(ctx, args.precision) if ctx else source,
    )
    for tower in ("image", "text"):
        parity = summary[tower]["parity"]
        measured = (
            f"min cosine {parity['cosine_min']:.6f}, max-abs {parity['max_abs']:.2e}"
            if parity["status"] == "passed"
            else f"parity {parity['status']}; spec checks passed"
        )
        print(f"{summary[tower]['model']}: {measured}")
    print(f"export folder: {out}")
    return 0


def add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="re-check shipped export folders: file hashes, then parity in the runtime"
    )
    p.add_argument("export_dir", help="an export folder, or a folder with export folders below")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from export.artifact import export_folders, verify_export

    for folder in export_folders(args.export_dir):
        result = verify_export(folder)
        parity = result["parity"]
        if isinstance(parity, str):
            measured = f"parity not measured here ({parity})"
        else:
            cosine = min(parity[t]["cosine_min"] for t in parity)
            agreement = parity["image"]["zero_shot_agreement"]
            measured = f"min cosine {cosine:.6f}, zero-shot agreement {agreement:.2%}"
        golden = result["golden"]
        if isinstance(golden, dict):
            cosine = min(golden[t]["cosine_min"] for t in golden)
            measured += f"; golden files: min cosine {cosine:.6f}"
        print(f"{folder}: ok ({result['files']} files match their sha256; {measured})")
    return 0


def add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile", help="time export folders (or a model.pt in torch eager) on a device"
    )
    p.add_argument(
        "source", help="an export folder, a folder with export folders below, or a model.pt"
    )
    p.add_argument(
        "--device",
        default="host",
        help="host (default), ssh://user@board[:port], adb[:serial] or apple[:compute_unit]",
    )
    p.add_argument("--runs", type=int, default=50, help="timed runs per tower (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--threads", type=int, help="runtime threads (default: the runtime's own)")
    p.add_argument("--no-ops", action="store_true", help="skip the per-operator pass")
    p.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="device option, e.g. -o key=~/.ssh/board -o python=python3 (ssh), "
        "-o runner=/data/local/tmp/executor_runner (adb)",
    )
    p.add_argument("--out", help="records folder (default: <run>/profile, else ./profiles)")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from export.profile.devices import Settings
    from export.profile.profiler import profile

    source = Path(args.source)
    if not source.exists():
        raise UserError(f"{source}: no such export folder or model file")
    options = {}
    for option in args.option:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise UserError(f"-o {option}: expected KEY=VALUE (e.g. -o key=~/.ssh/board)")
        options[key] = value
    settings = Settings(args.runs, args.warmup, args.threads, ops=not args.no_ops)
    out = Path(args.out) if args.out else _profile_dir(source)
    result = profile(source, args.device, out, settings, options)
    for artifact, towers in result["records"].items():
        for tower, path in towers.items():
            latency = json.loads(Path(path).read_text())["latency_ms"]
            print(
                f"{artifact} {tower}: p50 {latency['p50']:.2f} ms, p90 {latency['p90']:.2f} ms  ({path})"
            )
    for artifact, why in result["skipped"].items():
        print(f"{artifact}: not timed on {result['device']} ({why})")
    return 0


def _profile_dir(source: Path) -> Path:
    """Records go beside the run: ``<run>/profile`` for a run's exports or models, else
    ``profiles`` in the working folder."""
    for folder in source.resolve().parents:
        if (folder / "recipe.yaml").is_file():
            return folder / "profile"
    return Path("profiles")
