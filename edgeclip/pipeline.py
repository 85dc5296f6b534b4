"""Named stages, each writing one folder of the run folder, with done markers, resume and `--from`."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch.distributed as dist
import yaml

from compress.errors import UserError
from compress.io import write_json, write_text
from edgeclip.recipe import Recipe

DONE = "done.json"
STARTED = "started.json"


@dataclass(frozen=True)
class Stage:
    """One step of a run.

    Attributes:
        name: the stage's folder name inside the run folder, and its name for ``--from``.
        needs: recipe sections its output depends on; a change to any of them reruns it.
        run: ``run(ctx, out_dir) -> summary`` writes the stage's outputs into ``out_dir``.
        enabled: whether this recipe runs the stage.
        about: one line for ``edgeclip ls stages``.
        distributed: runs on every process under torchrun (others run on rank 0 only).
        check: ``check(recipe)`` raises a :class:`~edgeclip.recipe.RecipeError` for an input the
            stage will read that is not there (a file, a tag); run before any stage starts.
        report: ``report(summary) -> markdown lines``: the stage's section of the run report.
        keeps_outputs: a rerun does not clear the stage's folder first: the stage replaces its
            outputs itself, atomically, so a failed rerun leaves the last good ones in place.
        more_needs: ``more_needs(recipe) -> sections``: those it depends on in some recipes only
            (the quant plan's, where ``quant.max_drop`` makes one), added to ``needs``.
    """

    name: str
    needs: tuple[str, ...]
    run: Callable[[Context, Path], dict]
    enabled: Callable[[Recipe], bool]
    about: str
    distributed: bool = False
    check: Callable[[Recipe], None] | None = None
    report: Callable[[dict], list[str]] | None = None
    keeps_outputs: bool = False
    more_needs: Callable[[Recipe], tuple[str, ...]] | None = None

    def sections(self, recipe: Recipe) -> tuple[str, ...]:
        """The recipe sections this stage's output depends on in ``recipe``."""
        more = self.more_needs(recipe) if self.more_needs is not None else ()
        return tuple(dict.fromkeys(self.needs + more))


@dataclass
class Context:
    """What a stage sees: the recipe, the run folder and this process's place in the job."""

    recipe: Recipe
    run_dir: Path
    stages: list[Stage] = field(default_factory=list)
    rank: int = 0
    world: int = 1
    # training steps after which a training stage stops as if interrupted (tests, time slices)
    stop_after: int | None = None
    # decoded training samples (data.cache), kept for the later stages of this process
    decoded: dict = field(default_factory=dict)

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    def barrier(self) -> None:
        """Wait for every process of the job (a no-op in a single-process run)."""
        if self.world > 1:
            dist.barrier()

    def done(self, name: str) -> dict | None:
        """A finished stage's done marker (``hash``, ``finished``, ``seconds``, ``summary``), or None."""
        marker = self.stage_dir(name) / DONE
        return json.loads(marker.read_text()) if marker.exists() else None

    def fresh(self, name: str) -> dict | None:
        """A finished stage's done marker if the recipe sections it depends on are still the
        ones it ran with (what the pipeline would skip), else None."""
        done = self.done(name)
        stage = next((s for s in self.stages if s.name == name), None)
        if done is None or stage is None:
            return None
        current = self.recipe.section_hash(*stage.sections(self.recipe))
        return done if done.get("hash") == current else None


def check_inputs(recipe: Recipe, stages: list[Stage]) -> None:
    """Every enabled stage's input checks, before anything expensive runs."""
    for stage in stages:
        if stage.check is not None and stage.enabled(recipe):
            stage.check(recipe)


def run_pipeline(
    recipe: Recipe,
    stages: list[Stage],
    *,
    from_stage: str | None = None,
    rank: int = 0,
    world: int = 1,
    stop_after: int | None = None,
) -> Context:
    """Run the recipe's stages in order, skipping those already done with the same inputs.

    A stage reruns when its done marker is missing, when the recipe sections it depends on
    (:meth:`Stage.sections`) changed, from ``from_stage`` on, or after an earlier stage reran.
    An unfinished stage with unchanged inputs keeps its folder, so training resumes from its
    last checkpoint; otherwise the folder is cleared first. ``stop_after`` stops each training run after that many steps as
    if interrupted (:class:`compress.train.Interrupted`); rerunning resumes.
    """
    names = [s.name for s in stages]
    if from_stage is not None and from_stage not in names:
        raise UserError(f"--from {from_stage}: unknown stage; expected one of: {', '.join(names)}")
    check_inputs(recipe, stages)
    ctx = Context(recipe, Path(recipe.runs_dir) / recipe.name, stages, rank, world, stop_after)
    if rank == 0:
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(ctx.run_dir / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        write_json(ctx.run_dir / "recipe.json", {"hash": recipe.hash, "recipe": recipe.to_dict()})
    forced = False
    for stage in stages:
        forced = forced or stage.name == from_stage
        if not stage.enabled(recipe):
            continue
        out = ctx.stage_dir(stage.name)
        digest = recipe.section_hash(*stage.sections(recipe))
        done = out / DONE
        if not forced and ctx.fresh(stage.name):
            _log(rank, f"[{stage.name}] done already (inputs {digest}); skipping")
            continue
        if rank == 0:
            started = out / STARTED
            resumable = started.exists() and json.loads(started.read_text()).get("hash") == digest
            if out.exists() and (forced or not resumable) and not stage.keeps_outputs:
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
            done.unlink(missing_ok=True)
            write_json(started, {"hash": digest})
        ctx.barrier()
        if stage.distributed or rank == 0:
            _log(rank, f"[{stage.name}] {stage.about}")
            begin = time.perf_counter()
            summary = stage.run(ctx, out) or {}
            if rank == 0:
                write_json(
                    done,
                    {
                        "hash": digest,
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "seconds": round(time.perf_counter() - begin, 2),
                        "summary": summary,
                    },
                )
        ctx.barrier()
        forced = True  # later stages consumed the old outputs: redo them too
    return ctx


def _log(rank: int, message: str) -> None:
    if rank == 0:
        print(message, flush=True)
