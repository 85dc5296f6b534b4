"""One distilled student: inherit from the parent, train against online teachers, (auto) prune.

The student is built from the recipe, initialised from the previous model (the run's teacher
for the first stage) by weight inheritance, trained with the shared training loop against the
frozen teachers (run under no_grad every step); ``inherit.method: auto`` learns L0 masks during
training and prunes the student at its end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from compress.distill.config import DistillConfig, DistillStep
from compress.distill.inherit import InheritError, inherit
from compress.distill.losses import SIGMOID_INIT, ReinforcedKD, losses
from compress.distill.teacher_inputs import TeacherInputs
from compress.errors import UserError
from compress.models import CLIP, ModelRecord, count_params
from compress.objectives import Objective
from compress.train import train


class Trained(NamedTuple):
    """A model and its record."""

    model: CLIP
    record: ModelRecord


def freeze(model: CLIP) -> CLIP:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


class DistillObjective(Objective):
    """The student's embeddings against the teachers' (computed under no_grad on the whole
    batch), plus the pruning penalty when masks are learned. ``bias``: the trained model's logit
    bias, which a sigmoid base loss needs; ``embed`` then returns it last, the parameter itself,
    as :class:`compress.objectives.Sigmoid` does."""

    def __init__(
        self,
        loss: nn.Module,
        teachers: Sequence[CLIP],
        student: CLIP,
        penalty=None,
        bias: nn.Parameter | None = None,
    ) -> None:
        self.criterion, self.teachers, self.penalty, self.bias = loss, teachers, penalty, bias
        self.inputs = [TeacherInputs(t, student) for t in teachers]

    def embed(self, net: nn.Module, batch: dict) -> tuple[torch.Tensor, ...]:
        out = net(batch["image"], batch["text"])
        return out if self.bias is None else (*out, self.bias)

    def loss(self, out: tuple[torch.Tensor, ...], batch: dict) -> torch.Tensor:
        with torch.no_grad():
            targets = [
                t(*adapt(batch)) for t, adapt in zip(self.teachers, self.inputs, strict=True)
            ]
        value = self.criterion(out, targets)
        return value + self.penalty() if self.penalty is not None else value


class ReinforcedObjective(Objective):
    """Training on a reinforced dataset (:class:`compress.data.replay.ReplayDataset`): the
    student embeds the replayed image and both captions; MobileCLIP's loss compares them with
    the stored teacher embeddings. No teacher model exists on this path.

    ``embed`` returns the two captions' embeddings side by side, (B, 2·D), so that every row
    stays one sample of the batch (the training loop splits batches by rows), and the logit
    bias last where one is given (a sigmoid base loss), as :class:`DistillObjective` does.
    """

    def __init__(self, loss: nn.Module, penalty=None, bias: nn.Parameter | None = None) -> None:
        self.criterion, self.penalty, self.bias = loss, penalty, bias

    def embed(self, net: nn.Module, batch: dict) -> tuple[torch.Tensor, ...]:
        image, text, scale = net(batch["image"], torch.cat([batch["text"], batch["syn_text"]]))
        real, synthetic = text.chunk(2)
        out = image, torch.cat([real, synthetic], dim=1), scale
        return out if self.bias is None else (*out, self.bias)

    def loss(self, out: tuple[torch.Tensor, ...], batch: dict) -> torch.Tensor:
        image, texts, scale, *bias = out
        real, synthetic = texts.chunk(2, dim=1)
        value = self.criterion(
            image,
            real,
            synthetic,
            scale,
            batch["teacher_image"],
            batch["teacher_real"],
            batch["teacher_syn"],
            *bias,
        )
        return value + self.penalty() if self.penalty is not None else value


def build_student(step: DistillStep, cfg: DistillConfig, parent: ModelRecord) -> Trained:
    """The stage's student, randomly initialised (auto: the parent's own architecture)."""
    if step.model is None:  # auto inheritance prunes the parent itself
        record = parent
    else:
        attention = {"image": cfg.attention.image.spec(), "text": cfg.attention.text.spec()}
        record = ModelRecord.named(step.model, attention)
    if cfg.loss.sigmoid:  # a learned logit bias; the architecture's own logit settings win
        record = replace(record, config={**SIGMOID_INIT, **record.config})
    record = record.derive(
        provenance={"stage": "distill", "parent": parent.name, "inherit": step.inherit.method}
    )
    return Trained(record.build(), record)


class Extras(nn.Module):
    """Trainable state besides the student: the loss's (learnable teacher scale) and the masks'
    (with the step count their sparsity target ramps by, kept in checkpoints for resuming)."""

    def __init__(self, loss: nn.Module, masks: nn.Module | None) -> None:
        super().__init__()
        self.loss, self.masks = loss, masks
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def penalty(self) -> torch.Tensor:
        value, _ = self.masks.penalty(int(self.step))
        self.step += 1
        return value

    def param_groups(self, lr: float) -> list[dict]:
        groups = [{"params": [p for p in self.loss.parameters()], "weight_decay": 0.0}]
        if self.masks is not None:
            groups += self.masks.param_groups(lr)
        return [g for g in groups if g["params"]]


def run_stage(
    index: int,
    step: DistillStep,
    cfg: DistillConfig,
    parent: Trained,
    teachers: Sequence[CLIP],
    batches: Callable[[int, int], object],
    out: Path,
    *,
    rank: int,
    world: int,
    stop_after: int | None = None,
    stored: tuple[Sequence[int], Sequence[float]] | None = None,
) -> tuple[Trained, dict]:
    """Inherit, train and (auto) prune one student; returns it and the stage's summary.
    ``stored``: the reinforced dataset's teacher dims and logit scales, when the batches carry
    the teachers' embeddings (``loss.kind: reinforced``) instead of ``teachers`` running."""
    torch.manual_seed(index)
    student = build_student(step, cfg, parent.record)
    method = step.inherit.method
    report: dict = {"method": method}
    if method != "none":
        calibration = (
            next(iter(batches(0, step.inherit.calibration))) if method == "importance" else None
        )
        try:
            report = inherit(
                parent.model,
                student.model,
                method="importance" if method == "importance" else "leading",
                towers=step.inherit.towers,
                image_layers=step.inherit.image_layers,
                text_layers=step.inherit.text_layers,
                calibration=calibration,
                score=step.inherit.score,
            )
        except InheritError as err:
            raise UserError(f"distill stage {index} ({step.model}): {err}") from None
    masks = None
    if method == "auto":
        from compress.distill.prune import AutoInheritance

        ramp = max(1, round(step.inherit.ramp * step.steps))
        try:
            masks = AutoInheritance(student.model, step.inherit.sparsity, ramp)
        except ValueError as err:  # e.g. a MobileCLIP-style tower: masks cover transformers only
            raise UserError(f"distill stage {index}: inherit.method auto: {err}") from None
        masks.attach(student.model)
    if stored is not None:
        loss = ReinforcedKD(cfg.loss.alpha, *stored, base=cfg.loss.base)
    else:
        loss = losses.get(cfg.loss.kind)(**loss_options(cfg))
    extras = Extras(loss, masks)
    penalty = extras.penalty if masks is not None else None
    bias = student.model.logit_bias if cfg.loss.sigmoid else None
    objective = (
        ReinforcedObjective(loss, penalty, bias)
        if stored is not None
        else DistillObjective(loss, teachers, student.model, penalty, bias)
    )
    step_cfg = replace(cfg, steps=step.steps)
    summary = train(
        student.model,
        lambda start: batches(start, cfg.batch_size),
        step_cfg,
        out,
        objective=objective,
        extra=extras,
        rank=rank,
        world=world,
        desc=f"distill {index}",
        stop_after=stop_after,
    )
    keys = ("steps", "final_loss", "samples_per_s", "train_seconds", "history")
    result = {"inherit": report, "train": {k: summary[k] for k in keys}}
    if masks is not None:
        student.model.eval()
        pruned, config, pruning = masks.prune(student.model, student.record.attention)
        masks.detach()
        student = Trained(
            pruned, student.record.derive(name=f"{parent.record.name}-pruned", config=config)
        )
        result["pruning"] = pruning
    result["parameters"] = count_params(student.model)
    return student, result


def loss_options(cfg: DistillConfig) -> dict:
    """The loss builder's arguments from the recipe's loss section."""
    if cfg.loss.kind in ("clip", "sigmoid"):
        return {}
    return {
        "alpha": cfg.loss.alpha,
        "student_scale": cfg.loss.student_scale,
        "teacher_scale": cfg.loss.teacher_scale,
        "base": cfg.loss.base,
    }
