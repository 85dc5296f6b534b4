"""The one training loop: AdamW, warm-up + cosine, clipping, resumable checkpoints, DDP-ready."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from compress.errors import first_line, require
from compress.grad_cache import accumulated_backward
from compress.io import atomic_save, write_json
from compress.objectives import Objective, clip_objective
from compress.precision import MixedPrecision, resolve_precision


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and checkpointing, shared by every training stage."""

    steps: int = 1000
    batch_size: int = 128  # global batch: split across processes under torchrun
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    warmup: int = 100  # steps of linear warm-up before the cosine decay (capped at steps)
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    checkpoint_every: int = 200  # steps between resumable checkpoints
    num_workers: int = 0  # DataLoader worker processes
    log_every: int = 50
    # auto: bf16 where this machine runs it faster (measured once, compress.precision), else
    # fp32; bf16: autocast the towers (CPU and GPU; the loss stays fp32); fp16: GPU only,
    # loss-scaled. How, not what: a run may resume at another precision (not in the hash).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        default="auto", metadata={"hash": False}
    )
    # >1: embed the batch in this many parts, with every logit matrix still spanning the whole
    # batch (gradient caching): the same step in 1/N of the activation memory, a little slower
    accumulate: int = field(default=1, metadata={"hash": False})
    # true: run the model through torch.compile (a platform or model it cannot handle falls back
    # to eager with one warning line). Off by default on every machine: measured on 2-core CPUs
    # (benchmarks/train.py) it compiled for 20-66 s and then gained 6-11% in bf16 (AVX-512
    # BF16) and 0-6% in fp32 (AVX-512 without BF16), so only long runs gain
    compile: bool = field(default=False, metadata={"hash": False})

    def __post_init__(self) -> None:
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        require(
            self.batch_size >= 2,
            "batch_size",
            f"must be >= 2 (contrastive loss needs negatives), got {self.batch_size}",
        )
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(
            all(0 <= b < 1 for b in self.betas),
            "betas",
            f"must be in [0, 1), got {list(self.betas)}",
        )
        require(self.warmup >= 0, "warmup", f"must be >= 0, got {self.warmup}")
        require(self.grad_clip >= 0, "grad_clip", f"must be >= 0, got {self.grad_clip}")
        require(
            self.checkpoint_every >= 1,
            "checkpoint_every",
            f"must be >= 1, got {self.checkpoint_every}",
        )
        require(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        require(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        require(
            1 <= self.accumulate <= self.batch_size,
            "accumulate",
            f"must be in [1, batch_size], got {self.accumulate}",
        )


class Interrupted(KeyboardInterrupt):
    """Training stopped at ``stop_after`` steps, exactly as a Ctrl-C there would stop it."""


def init_distributed() -> tuple[int, int]:
    """Join the process group when started by torchrun (gloo on CPU, NCCL on GPU); (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases, norms, gains, the class token and the logit scale are left alone."""
    decay, rest = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 (reached at ``total``, also when warm-up fills it)."""
    warmup = min(warmup, total)
    if step >= total:
        return 0.0
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def optimizer_for(
    model: nn.Module, extra: nn.Module | None, cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the model (warm-up + cosine) and the extra state (a constant rate, so the
    pruning masks' sparsity controller can still correct late on)."""
    groups = param_groups(model, cfg.weight_decay)
    model_groups = len(groups)
    if extra is not None:
        groups += (
            extra.param_groups(cfg.lr)
            if hasattr(extra, "param_groups")
            else [
                {"params": [p for p in extra.parameters() if p.requires_grad], "weight_decay": 0.0}
            ]
        )
    # fused: one kernel for all parameters, ~6x faster than the per-tensor loop on CPU
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True)
    factors = [lambda s: lr_factor(s, cfg.warmup, cfg.steps)] * model_groups
    factors += [lambda s: 1.0] * (len(groups) - model_groups)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    skipped: int = 0


class Checkpoint:
    """``checkpoint.pt``: the state of every trained module plus the progress, written atomically."""

    def __init__(self, path: Path, modules: dict[str, object], rank: int, world: int) -> None:
        self.path, self.modules, self.rank, self.world = path, modules, rank, world

    def load(self) -> Progress:
        """Restore the modules from the last checkpoint (if any); the progress it holds."""
        if not self.path.exists():
            return Progress()
        state = torch.load(self.path, weights_only=True)
        for name, module in self.modules.items():
            module.load_state_dict(state[name])
        return Progress(*(state[k] for k in ("step", "history", "seconds", "skipped")))

    def save(self, progress: Progress) -> None:
        if self.rank == 0:
            state = {name: m.state_dict() for name, m in self.modules.items()}
            atomic_save(state | vars(progress), self.path)
        if self.world > 1:
            dist.barrier()


class TrainLog:
    """The loss curve and speed, averaged over windows of ``log_every`` steps, and the progress bar."""

    def __init__(self, cfg: TrainConfig, progress: Progress, rank: int, desc: str) -> None:
        self.cfg, self.progress = cfg, progress
        self.bar = tqdm(
            total=cfg.steps,
            initial=progress.step,
            desc=desc,
            disable=rank != 0,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        self.loss, self.n, self.tick = 0.0, 0, time.perf_counter()

    def step(self, loss: float, lr: float) -> None:
        """Count one finished step (``progress.step`` already advanced)."""
        self.loss, self.n = self.loss + loss, self.n + 1
        step = self.progress.step
        if step % self.cfg.log_every == 0 or step == self.cfg.steps:
            now = time.perf_counter()
            self.progress.seconds += now - self.tick
            rate = self.n * self.cfg.batch_size / (now - self.tick)
            mean = self.loss / self.n
            self.progress.history.append(
                {"step": step, "loss": mean, "samples_per_s": rate, "lr": lr}
            )
            self.bar.set_postfix(loss=f"{mean:.3f}", samples_s=f"{rate:.0f}", refresh=False)
            self.loss, self.n, self.tick = 0.0, 0, now
        self.bar.update(1)

    def summary(self, world: int) -> dict:
        self.bar.close()
        p = self.progress
        timed = [h for h in p.history if h["samples_per_s"] > 0]
        return {
            "steps": p.step,
            "finished": p.step >= self.cfg.steps,
            "final_loss": p.history[-1]["loss"] if p.history else None,
            "samples_per_s": sum(h["samples_per_s"] for h in timed) / len(timed) if timed else None,
            "train_seconds": p.seconds,
            "skipped_samples": p.skipped,  # unreadable samples dropped from batches (skip_bad: true)
            "world_size": world,
            "history": p.history,
        }


def train_step(
    net: nn.Module,
    model: nn.Module,
    batch: dict,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    extra: nn.Module | None,
    cfg: TrainConfig,
    world: int,
    precision: MixedPrecision,
) -> float:
    """One optimisation step on one batch (embedded in ``cfg.accumulate`` parts); the loss value."""
    optimizer.zero_grad(set_to_none=True)
    if cfg.accumulate > 1:
        value = accumulated_backward(net, batch, objective, cfg.accumulate, precision)
    else:
        with precision.autocast():  # the losses themselves run in fp32 (losses.fp32)
            value = objective(net, batch)
        precision.backward(value)
    if extra is not None and world > 1:  # DDP averages the model's gradients, not these
        for p in extra.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= world

    def clip() -> None:
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)

    precision.step(optimizer, clip)
    with torch.no_grad():  # as in CLIP: the temperature may not go below 1/100
        model.logit_scale.clamp_(0, math.log(100))
    return value.item()


def compiled(net: nn.Module, desc: str, rank: int) -> nn.Module:
    """``torch.compile(net)``, or ``net`` itself where this platform has no torch.compile."""
    try:
        return torch.compile(net)
    except Exception as err:  # e.g. a Python version dynamo does not support yet
        _eager_warning(desc, err, rank)
        return net


def _eager_warning(desc: str, err: Exception, rank: int) -> None:
    if rank == 0:
        print(
            f"{desc}: warning: torch.compile failed, training in eager mode: {first_line(err)}",
            file=sys.stderr,
            flush=True,
        )


def _chosen_precision(
    requested: str, device: torch.device, desc: str, rank: int, world: int
) -> dict:
    """:func:`resolve_precision` on rank 0, the same choice on every process."""
    chosen = [resolve_precision(requested, device, desc) if rank == 0 else None]
    if world > 1:
        dist.broadcast_object_list(chosen, src=0)
    return chosen[0]


def guarded_step(
    step: Callable[[nn.Module], float], net: nn.Module, eager: nn.Module, desc: str, rank: int
) -> tuple[float, nn.Module]:
    """``step(net)``, and the net to use from now on. Where a compiled net fails (a model or a
    platform torch.compile cannot handle, e.g. no C++ compiler) the step is redone in eager mode
    from the same random state, with one warning line, and eager mode is kept."""
    if net is eager:
        return step(net), net
    rng = torch.get_rng_state()
    try:
        return step(net), net
    except Exception as err:
        _eager_warning(desc, err, rank)
        torch.set_rng_state(rng)
        return step(eager), eager


def train(
    model: nn.Module,
    batches: Callable[[int], Iterator[dict]],
    cfg: TrainConfig,
    out_dir: Path,
    *,
    objective: Objective = clip_objective,
    extra: nn.Module | None = None,
    rank: int = 0,
    world: int = 1,
    desc: str = "train",
    stop_after: int | None = None,
) -> dict:
    """Train ``model`` in place with checkpoints in ``out_dir``; resumes from the last one.

    Args:
        model: a CLIP model (returns image embeddings, text embeddings, scale).
        batches: ``batches(start_step)`` yields this rank's batches from that step on.
        cfg: optimisation settings.
        out_dir: holds ``checkpoint.pt`` (resumable state) and ``train.json`` (curve, speed).
        objective: an :class:`Objective`: ``embed(net, batch)`` and ``loss(out, batch)``; ``net``
            is the model (DDP-wrapped under torchrun). The default is the CLIP loss.
        extra: a module with more trainable state (a loss's learnable scale, pruning masks),
            optimised and checkpointed with the model at a constant learning rate (no warm-up or
            decay); its ``param_groups(lr)`` is used when it has one, otherwise its parameters
            train at ``cfg.lr`` without weight decay.
        stop_after: raise :class:`Interrupted` after this many steps of this call (unless
            training is finished then), as if killed there: a rerun resumes from the last
            checkpoint.

    Returns:
        The training summary also written to ``train.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    eager = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    net = compiled(eager, desc, rank) if cfg.compile else eager
    chosen = _chosen_precision(cfg.precision, model.logit_scale.device, desc, rank, world)
    precision = MixedPrecision(chosen["chosen"], model.logit_scale.device, desc)
    optimizer, schedule = optimizer_for(model, extra, cfg)
    modules = {"model": model, "optimizer": optimizer, "schedule": schedule}
    if extra is not None:
        modules["extra"] = extra
    checkpoint = Checkpoint(out_dir / "checkpoint.pt", modules, rank, world)
    progress = checkpoint.load()
    if progress.step and rank == 0:
        print(f"{desc}: resuming from the checkpoint at step {progress.step}", flush=True)
    model.train()
    if extra is not None:
        extra.train()
    log, stream, start = TrainLog(cfg, progress, rank, desc), batches(progress.step), progress.step
    while progress.step < cfg.steps:
        batch = next(stream)
        progress.skipped += batch.get("skipped", 0)
        if len(batch["image"]) < 2:  # every sample (but one) was unreadable and skipped
            if world > 1:  # the other processes are already waiting in this step's all-gather
                raise RuntimeError(
                    f"rank {rank}: a batch with fewer than 2 readable samples; fix or drop the bad data"
                )
            continue

        def step(n: nn.Module, batch: dict = batch) -> float:
            return train_step(n, model, batch, objective, optimizer, extra, cfg, world, precision)

        loss, net = guarded_step(step, net, eager, desc, rank)
        schedule.step()
        progress.step += 1
        log.step(loss, schedule.get_last_lr()[0])
        if progress.step % cfg.checkpoint_every == 0 or progress.step == cfg.steps:
            checkpoint.save(progress)
        if (
            stop_after is not None
            and stop_after <= progress.step - start
            and progress.step < cfg.steps
        ):
            log.bar.close()
            raise Interrupted(f"{desc}: stopped after {stop_after} steps")
    summary = {**log.summary(world), "precision": chosen["chosen"], "precision_choice": chosen}
    if rank == 0:
        write_json(out_dir / "train.json", summary)
    return summary
