"""The distill stage: students trained against online teachers, one or several stages in a row.

Each stage builds its student, initialises it from the previous model (the run's teacher for the
first stage) by weight inheritance, trains it with the shared training loop against the frozen
teachers (run under no_grad every step), and writes ``stage<i>/model.pt``. ``inherit.method:
auto`` learns L0 masks during the stage and prunes the student at its end. A finished stage is
skipped on a rerun, so a killed run resumes inside the stage it was in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import UserError
from compress.inherit import InheritError, inherit
from compress.losses import losses
from compress.models import build_from_config, count_params, load_model, model_config, save_model
from compress.models.clip import CLIP
from compress.recipe import DistillConfig, DistillStep
from compress.tokenizer import Tokenizer


@dataclass
class Trained:
    """A model with what it takes to rebuild it."""

    model: CLIP
    config: dict
    attention: dict  # {"image_attention": spec, "text_attention": spec}


def freeze(model: CLIP) -> CLIP:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


class TeacherInputs:
    """Turns a student's batch into a teacher's inputs when their preprocessing differs:
    images are un-normalised, resized (bicubic, antialiased) and re-normalised; captions are
    re-tokenised for the teacher's context length."""

    def __init__(self, teacher: CLIP, student: CLIP) -> None:
        self.size = teacher.visual.image_size
        same_image = self.size == student.visual.image_size and teacher.preprocess == student.preprocess
        self.source = None if same_image else self._stats(student)
        self.target = self._stats(teacher)
        same_text = (teacher.text.context_length, teacher.text.eot_id) == (
            student.text.context_length, student.text.eot_id,
        )  # fmt: skip
        self.tokenize = None if same_text else Tokenizer(teacher.text.context_length)

    @staticmethod
    def _stats(model: CLIP) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = (torch.tensor(model.preprocess[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
        return mean, std

    def __call__(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        images, tokens = batch["image"], batch["text"]
        if self.source is not None:
            pixels = images * self.source[1] + self.source[0]
            if pixels.shape[-1] != self.size:
                pixels = F.interpolate(pixels, size=(self.size, self.size), mode="bicubic", antialias=True)
            images = (pixels.clamp(0, 1) - self.target[0]) / self.target[1]
        if self.tokenize is not None:
            tokens = self.tokenize(batch["caption"])
        return images, tokens


def objective(loss: nn.Module, teachers: Sequence[CLIP], student: CLIP, penalty=None):
    """The per-step loss: the student's embeddings against the teachers' (computed under no_grad),
    plus the pruning penalty when masks are learned."""
    inputs = [TeacherInputs(t, student) for t in teachers]

    def step_loss(net: nn.Module, batch: dict) -> torch.Tensor:
        out = net(batch["image"], batch["text"])
        with torch.no_grad():
            targets = [t(*adapt(batch)) for t, adapt in zip(teachers, inputs, strict=True)]
        value = loss(out, targets)
        return value + penalty() if penalty is not None else value

    return step_loss


def build_student(step: DistillStep, cfg: DistillConfig, parent: Trained) -> Trained:
    """The stage's student, randomly initialised (auto: the parent's own architecture)."""
    attention = {
        "image_attention": cfg.attention.image.spec(),
        "text_attention": cfg.attention.text.spec(),
    }
    if step.model is None:  # auto inheritance prunes the parent itself
        config, attention = parent.config, parent.attention
    else:
        config = {**model_config(step.model), "name": step.model}
    return Trained(build_from_config(config, **attention), config, attention)


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
) -> tuple[Trained, dict]:
    """Inherit, train and (auto) prune one student; returns it and the stage's summary."""
    from compress.train import train  # looked up per call: tests stand in a killed trainer

    torch.manual_seed(index)
    student = build_student(step, cfg, parent)
    method = step.inherit.method
    report: dict = {"method": method}
    if method != "none":
        calibration = next(iter(batches(0, step.inherit.calibration))) if method == "importance" else None
        try:
            report = inherit(
                parent.model, student.model,
                method="importance" if method == "importance" else "leading",
                image_layers=step.inherit.image_layers, text_layers=step.inherit.text_layers,
                calibration=calibration, score=step.inherit.score,
            )  # fmt: skip
        except InheritError as err:
            raise UserError(f"distill stage {index} ({step.model}): {err}") from None
    masks = None
    if method == "auto":
        from compress.prune import AutoInheritance

        ramp = max(1, round(step.inherit.ramp * step.steps))
        try:
            masks = AutoInheritance(student.model, step.inherit.sparsity, ramp)
        except ValueError as err:  # e.g. a MobileCLIP-style tower: masks cover transformers only
            raise UserError(f"distill stage {index}: inherit.method auto: {err}") from None
        masks.attach(student.model)
    loss = losses.get(cfg.loss.kind)(**loss_options(cfg))
    extras = Extras(loss, masks)
    penalty = extras.penalty if masks is not None else None
    step_cfg = replace(cfg, steps=step.steps)
    summary = train(
        student.model, lambda start: batches(start, cfg.batch_size), step_cfg, out,
        objective=objective(loss, teachers, student.model, penalty), extra=extras,
        rank=rank, world=world, desc=f"distill {index}",
    )  # fmt: skip
    keys = ("steps", "final_loss", "samples_per_s", "train_seconds", "history")
    result = {"inherit": report, "train": {k: summary[k] for k in keys}}
    if masks is not None:
        student.model.eval()
        pruned, config, pruning = masks.prune(student.model)
        masks.detach()
        student = Trained(pruned, {**config, "name": f"{parent.config.get('name', 'model')}-pruned"}, student.attention)
        result["pruning"] = pruning
    result["parameters"] = count_params(student.model)
    return student, result


def loss_options(cfg: DistillConfig) -> dict:
    """The loss builder's arguments from the recipe's loss section."""
    if cfg.loss.kind == "clip":
        return {}
    return {"alpha": cfg.loss.alpha, "student_scale": cfg.loss.student_scale, "teacher_scale": cfg.loss.teacher_scale}


def save(trained: Trained, path: Path) -> None:
    save_model(trained.model, path, trained.config, **trained.attention)


def load(path: Path) -> Trained:
    model, arch = load_model(path)
    return Trained(model, arch["config"], {k: arch[k] for k in ("image_attention", "text_attention")})
