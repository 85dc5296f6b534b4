"""The `edgeclip` command: a thin layer over the library (run, validate, ls, eval, export,
verify, profile, report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compress.errors import UserError
from edgeclip.model_commands import add_eval, add_export, add_profile, add_verify

EXAMPLES = """examples:
  edgeclip run recipes/demo.yaml                      # the embedded default, nothing downloaded
  edgeclip run recipes/demo.yaml pretrain.steps=200   # a.b=c overrides any recipe key
  edgeclip run recipes/demo.yaml --from export        # redo export and what follows
  edgeclip validate recipes/demo.yaml
  edgeclip ls models                                  # our architectures, with parameter counts
  edgeclip ls openclip                                # open_clip architectures a teacher can load
  edgeclip ls apple                                   # Apple's MobileCLIP files a teacher can load
  edgeclip eval runs/demo/pretrain/model.pt --zeroshot my_labels.csv --retrieval my_pairs.csv
  edgeclip eval runs/demo --outliers --plot outliers.png   # activation outliers, per layer
  edgeclip export runs/demo --target executorch --precision fp16
  edgeclip verify runs/demo/export                    # every export folder below it
  edgeclip profile runs/demo/export --device host     # latency of every artifact here
  edgeclip profile runs/demo/export/onnx-int8 --device ssh://nvidia@jetson -o key=~/.ssh/jetson
  edgeclip eval runs/demo/export/onnx-fp16 --zeroshot my_labels.csv   # through onnxruntime
"""


def _split_overrides(args: list[str]) -> list[str]:
    for a in args:
        if "=" not in a:
            raise UserError(f"unexpected argument {a!r}; overrides look like key.path=value")
    return args


def add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a recipe without running it")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="key.path=value")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from edgeclip.pipeline import check_inputs
    from edgeclip.recipe import load_recipe
    from edgeclip.stages import STAGES, enabled_stages

    recipe = load_recipe(args.recipe, _split_overrides(args.overrides))
    check_inputs(recipe, STAGES)
    print(
        f"{args.recipe}: ok (recipe hash {recipe.hash}; stages: {', '.join(enabled_stages(recipe))})"
    )
    return 0


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a recipe's stages (skipping finished ones)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="key.path=value")
    p.add_argument("--from", dest="from_stage", metavar="STAGE", help="rerun from this stage on")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from compress.train import init_distributed
    from edgeclip.pipeline import run_pipeline
    from edgeclip.recipe import load_recipe
    from edgeclip.stages import STAGES

    recipe = load_recipe(args.recipe, _split_overrides(args.overrides))
    rank, world = init_distributed()
    ctx = run_pipeline(recipe, STAGES, from_stage=args.from_stage, rank=rank, world=world)
    if rank == 0:
        print(f"run folder: {ctx.run_dir}  (report: {ctx.run_dir / 'report.md'})")
    return 0


def add_reinforce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reinforce", help="reinforce a recipe's training data once (its teacher, then the shards)"
    )
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="key.path=value")
    p.set_defaults(func=cmd_reinforce)


def cmd_reinforce(args: argparse.Namespace) -> int:
    """The recipe's stages up to and including reinforce: its teacher, then the reinforced data."""
    from compress.train import init_distributed
    from edgeclip.pipeline import run_pipeline
    from edgeclip.recipe import load_recipe
    from edgeclip.stages import STAGES

    recipe = load_recipe(args.recipe, _split_overrides(args.overrides))
    if recipe.reinforce is None:
        raise UserError(f"{args.recipe}: no reinforce section (k, n, captioner …) to run")
    names = [s.name for s in STAGES]
    rank, world = init_distributed()
    ctx = run_pipeline(recipe, STAGES[: names.index("reinforce") + 1], rank=rank, world=world)
    if rank == 0:
        print(f"reinforced data: {ctx.stage_dir('reinforce') / 'index.json'}")
    return 0


def add_ls(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ls",
        help="list models, loadable open_clip architectures and Apple files, recipes or stages",
    )
    p.add_argument("what", choices=["models", "openclip", "apple", "recipes", "stages"])
    p.set_defaults(func=cmd_ls)


def cmd_ls(args: argparse.Namespace) -> int:
    if args.what == "models":
        from compress.models import model_config, model_names, tower_params

        print(f"{'model':<22}{'image':>9}{'text':>9}{'total':>9}  published (ours vs theirs)")
        for name in model_names():
            config, counts = model_config(name), tower_params(model_config(name))
            published = config.get("published", {})
            versus = ", ".join(
                f"{key} {counts[key] / 1e6:.2f}M vs {published[key] / 1e6:.2f}M"
                for key in ("image", "text", "text_body")
                if key in published
            )
            sizes = "".join(f"{counts[k] / 1e6:>8.2f}M" for k in ("image", "text", "total"))
            print(f"{name:<22}{sizes}  {versus or '-'}")
            print(f"{'':<22}{config.get('description', '')}")
        print("text_body: the text tower without its token table (how TinyCLIP's names count)")
    elif args.what == "openclip":
        from compress.compat import open_clip
        from compress.models.loaders import PREFIX, foreign_tokenizer, supported_architectures

        print("open_clip architectures a recipe can load as a teacher (teacher.model), with tags")
        print(
            "(* reads text by its own SentencePiece tokenizer: give its file as teacher.tokenizer):"
        )
        archs = supported_architectures()
        column = max(map(len, archs)) + 2  # SigLIP's names run past 24 characters
        for arch in archs:
            tags = ", ".join(open_clip().list_pretrained_tags_by_model(arch)) or "(checkpoint only)"
            mark = "*" if foreign_tokenizer(arch) else " "
            print(f" {mark}{PREFIX}{arch:<{column}}{tags}")
    elif args.what == "apple":
        from compress.models import tower_params
        from compress.models.apple import NAMES, PREFIX, apple_config

        print("Apple ml-mobileclip checkpoints a recipe can load (teacher.model, with checkpoint:")
        print("the mobileclip_<name>.pt file Apple publishes):")
        for name in NAMES:
            config = apple_config(name)
            counts = tower_params(config)
            sizes = f"image {counts['image'] / 1e6:.1f}M, text {counts['text'] / 1e6:.1f}M"
            print(f"  {PREFIX + name:<16}{sizes:<28}{config['description']}")
    elif args.what == "recipes":
        folder = Path("recipes")
        files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
        if not files:
            raise UserError("recipes/: no recipe files here; run from the edgeclip checkout")
        for path in files:
            first = next(
                (
                    ln.lstrip("# ").strip()
                    for ln in path.read_text().splitlines()
                    if ln.startswith("#")
                ),
                "",
            )
            print(f"{str(path):<32}{first}")
    else:
        from edgeclip.stages import STAGES

        for s in STAGES:
            needs = ", ".join(s.needs) or "every earlier stage"
            if s.more_needs is not None:  # e.g. quant_plan_sections: "+ quant plan sections"
                needs += " + " + s.more_needs.__name__.replace("_", " ")
            print(f"{s.name:<10}{s.about}  (depends on: {needs})")
    return 0


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="rewrite report.md, report.html and report.json of a run folder"
    )
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from edgeclip.pipeline import Context
    from edgeclip.recipe import load_recipe
    from edgeclip.stages import STAGES
    from edgeclip.stages.report import write_report

    run_dir = Path(args.run_dir)
    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.is_file():
        raise UserError(f"{run_dir}: not a run folder (no recipe.yaml)")
    recipe = load_recipe(recipe_file)
    written = write_report(Context(recipe, run_dir, STAGES))
    print(f"{written['report']}\n{written['html']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeclip",
        description="Compress CLIP-style image-text models for phones and edge boards, from one recipe.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    for add in (
        add_run,
        add_reinforce,
        add_validate,
        add_ls,
        add_eval,
        add_export,
        add_verify,
        add_profile,
        add_report,
    ):
        add(sub)  # each command's parser is beside the command
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from export.artifact import IntegrityError
    from export.verify import ParityError

    try:
        return args.func(args)
    except UserError as err:
        print(f"edgeclip: error: {err}", file=sys.stderr)
        return 2
    except (ParityError, IntegrityError) as err:  # an artifact that disagrees is never done
        print(f"edgeclip: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edgeclip: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
