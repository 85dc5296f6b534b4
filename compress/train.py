"""The one training loop: AdamW, warm-up + cosine, clipping, resumable checkpoints, DDP-ready."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from compress.data.negatives import swap_word
from compress.distill.losses import clip_loss, clip_loss_with_negatives
from compress.errors import UserError, first_line
from compress.io import atomic_save, write_json
from compress.precision import resolve_precision
from compress.recipe import TrainConfig
from compress.tokenizer import Tokenizer


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


class Objective:
    """What a step minimises, in two halves so that a batch can be embedded a part at a time:
    ``embed(net, batch)`` gives the model's (image, text, scale) for (part of) a batch and
    ``loss(out, batch)`` the loss of the whole batch's embeddings. Calling it does both.
    This one is pretraining's: the contrastive loss of the model's own embeddings."""

    def embed(self, net: nn.Module, batch: dict) -> tuple[torch.Tensor, ...]:
        return net(batch["image"], batch["text"])

    def loss(self, out: tuple[torch.Tensor, ...], batch: dict) -> torch.Tensor:
        return clip_loss(*out)

    def __call__(self, net: nn.Module, batch: dict) -> torch.Tensor:
        return self.loss(self.embed(net, batch), batch)


clip_objective = Objective()


class HardNegatives(Objective):
    """Pretraining's CLIP loss with one hard negative caption per image: its caption with one
    word swapped for another of the same set (:func:`compress.data.negatives.swap_word`), drawn
    from (``seed``, the sample's index), so that gradient caching, which embeds a part twice,
    and a resumed run see the same negatives. A caption without a listed word is its own
    negative: its row is then the CLIP loss with the caption counted twice. ``embed`` returns
    the text embeddings as (B, 2, D), each caption's beside its negative's, so that the parts of
    a batch split and join as rows."""

    def __init__(self, word_sets: Sequence[Sequence[str]], context_length: int, seed: int) -> None:
        self.word_sets, self.seed = word_sets, seed
        self.tokenize = Tokenizer(context_length)

    def embed(self, net: nn.Module, batch: dict) -> tuple[torch.Tensor, ...]:
        negatives = [
            swap_word(caption, self.word_sets, np.random.default_rng([self.seed, int(index)]))
            for caption, index in zip(batch["caption"], batch["index"], strict=True)
        ]
        n = len(batch["image"])
        tokens = torch.cat([batch["text"], self.tokenize(negatives)])
        image, text, scale = net(batch["image"], tokens)
        return image, torch.stack([text[:n], text[n:]], dim=1), scale

    def loss(self, out: tuple[torch.Tensor, ...], batch: dict) -> torch.Tensor:
        image, text, scale = out
        return clip_loss_with_negatives(image, text[:, 0], text[:, 1], scale)


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


class MixedPrecision:
    """The forward pass under autocast (bf16 or fp16) and, for fp16, loss scaling; fp32 changes
    nothing. Weights, optimizer state and checkpoints stay fp32 whatever the precision."""

    DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, precision: str, device: torch.device, desc: str) -> None:
        if precision == "fp16" and device.type != "cuda":
            raise UserError(
                f"{desc}: precision fp16 needs a CUDA GPU and this model trains on the "
                f"{device.type}; use bf16 (or fp32)"
            )
        self.precision, self.device = precision, device
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def autocast(self) -> torch.autocast:
        dtype = self.DTYPES[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.precision != "fp32")

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer, clip: Callable[[], None]) -> None:
        """Clip the (unscaled) gradients, then step; fp16 skips a step whose gradients overflowed."""
        if self.scaler is None:
            clip()
            optimizer.step()
            return
        self.scaler.unscale_(optimizer)
        clip()
        self.scaler.step(optimizer)
        self.scaler.update()


def split_batch(batch: dict, parts: int) -> list[dict]:
    """A batch as ``parts`` consecutive micro-batches (tensors and lists split, counts kept once)."""
    n = len(batch["image"])
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    pieces = []
    for i, (start, stop) in enumerate(itertools.pairwise(bounds)):
        piece = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor | list):
                piece[key] = value[start:stop]
            else:
                piece[key] = value if i == 0 else type(value)()
        pieces.append(piece)
    return pieces


def accumulated_backward(
    net: nn.Module, batch: dict, objective: Objective, parts: int, precision: MixedPrecision
) -> torch.Tensor:
    """Backward of the whole batch's loss while holding one micro-batch's activations at a time.

    Gradient caching (Gao et al. 2021): embed every part without a graph, take the loss of the
    whole batch on those embeddings (so every logit matrix spans the whole batch, negatives
    included) and its gradient with respect to them, then re-embed each part with a graph and
    backpropagate that gradient. The random state is replayed, so a part embeds the same both
    times; the gradient is the full batch's up to float rounding. Under DDP only the last part
    synchronises.
    """
    pieces = split_batch(batch, min(parts, len(batch["image"])))
    states, outs = [], []
    cuda = torch.cuda.is_available()
    with torch.no_grad(), precision.autocast():
        for piece in pieces:
            states.append((torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else None))
            outs.append(objective.embed(net, piece))
    image = torch.cat([o[0] for o in outs]).float().requires_grad_()
    text = torch.cat([o[1] for o in outs]).float().requires_grad_()
    scale = outs[0][2].detach().float().requires_grad_()
    with precision.autocast():
        value = objective.loss((image, text, scale), batch)
    precision.backward(value)
    sizes = [len(piece["image"]) for piece in pieces]
    grads = list(zip(image.grad.split(sizes), text.grad.split(sizes), strict=True))
    for i, (piece, state, (d_image, d_text)) in enumerate(zip(pieces, states, grads, strict=True)):
        last = i == len(pieces) - 1
        torch.set_rng_state(state[0])
        if cuda:
            torch.cuda.set_rng_state_all(state[1])
        sync = contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()
        with sync:
            with precision.autocast():
                out = objective.embed(net, piece)
            surrogate = (out[0].float() * d_image).sum() + (out[1].float() * d_text).sum()
            if last:  # the scale is shared by every part: its gradient flows once
                surrogate = surrogate + (out[2].float() * scale.grad).sum()
            surrogate.backward()
    return value


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
