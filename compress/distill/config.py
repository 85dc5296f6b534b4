"""What a distillation needs to know: the student (or students, progressively), how it
inherits from its parent, its loss, and the shared training options (docs/design.md, "Methods")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from compress.errors import require
from compress.models.attention import TowerAttention
from compress.models.build import require_model_name
from compress.models.given import TeacherConfig
from compress.train import TrainConfig


@dataclass(frozen=True)
class LossConfig:
    """The distillation loss: α·L_affinity + (1 − α)·L_base, or a base loss alone (clip,
    sigmoid), where L_base is the CLIP loss or SigLIP's sigmoid loss (docs/design.md)."""

    # reinforced: MobileCLIP's loss on the reinforce stage's stored teacher embeddings (alpha = λ)
    kind: Literal["affinity", "clip", "sigmoid", "reinforced"] = "affinity"
    alpha: float = 1.0  # weight of affinity mimicking (λ of the reinforced loss); TinyCLIP uses 1
    # the (1 − α) term of affinity and reinforced: sigmoid gives the student a learned logit bias
    base: Literal["clip", "sigmoid"] = "clip"
    student_scale: float | None = None  # fixed logit scale for the student; null: its own, learned
    # fixed, learned, or null: each teacher's own
    teacher_scale: float | Literal["learnable"] | None = None

    def __post_init__(self) -> None:
        require(0 <= self.alpha <= 1, "alpha", f"must be in [0, 1], got {self.alpha}")
        for name in ("student_scale", "teacher_scale"):
            value = getattr(self, name)
            ok = value is None or isinstance(value, str) or value > 0
            require(ok, name, f"must be > 0, got {value}")
        require(
            self.base == "clip" or self.kind in ("affinity", "reinforced"),
            "base",
            f"mixes into kind affinity or reinforced; kind {self.kind} is a loss of its own "
            f"(kind: sigmoid for the sigmoid loss alone)",
        )

    @property
    def sigmoid(self) -> bool:
        """Whether the student trains a sigmoid loss, and so needs a logit bias."""
        return self.kind == "sigmoid" or self.base == "sigmoid"


@dataclass(frozen=True)
class InheritConfig:
    """How a student starts from its teacher (TinyCLIP weight inheritance).

    ``none``: random init; ``leading``: teacher layers every k-th (or listed) and the leading
    slice of every width; ``importance``: the heads, neurons and channels that score highest on
    a calibration batch; ``auto``: learned L0 masks pruned to a ``sparsity`` target.
    ``towers`` names the towers that inherit; a tower left out keeps its random initialisation
    (a text tower whose teacher reads another tokenizer, an image tower of another patch size).
    """

    method: Literal["none", "leading", "importance", "auto"] = "leading"
    towers: tuple[Literal["image", "text"], ...] = ("image", "text")
    image_layers: tuple[int, ...] | None = None  # teacher blocks the student's blocks take
    text_layers: tuple[int, ...] | None = None
    score: Literal["magnitude", "taylor"] = "magnitude"  # importance: how units are scored
    calibration: int = 256  # importance: samples in the calibration batch
    sparsity: float = 0.5  # auto: fraction of the parameters to remove
    ramp: float = 0.5  # auto: fraction of the steps over which the sparsity target ramps up

    def __post_init__(self) -> None:
        require(
            len(self.towers) > 0 and len(set(self.towers)) == len(self.towers),
            "towers",
            f"expected image, text or both, each once, got {list(self.towers)} "
            "(method: none inherits nothing)",
        )
        require(self.calibration >= 2, "calibration", f"must be >= 2, got {self.calibration}")
        require(0 < self.sparsity < 1, "sparsity", f"must be in (0, 1), got {self.sparsity}")
        require(0 < self.ramp <= 1, "ramp", f"must be in (0, 1], got {self.ramp}")


@dataclass(frozen=True)
class DistillStep:
    """One step of a progressive distillation: a student, how it inherits, how long it trains."""

    # registry name; null with inherit.method auto: the previous model pruned
    model: str | None = None
    inherit: InheritConfig = field(default_factory=InheritConfig)
    steps: int = 1000

    def __post_init__(self) -> None:
        _check_student(self.model, self.inherit)
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")


def _check_student(model: str | None, inherit: InheritConfig) -> None:
    if model is None:
        require(
            inherit.method == "auto",
            "model",
            "missing; only inherit.method: auto can do without (it prunes the previous model)",
        )
    else:
        require_model_name(model)


@dataclass(frozen=True, kw_only=True)
class DistillConfig(TrainConfig):
    """Distil the run's model (pretrained or given) into a student, with an online teacher.

    ``model``, ``inherit`` and ``steps`` describe one student; ``stages`` instead lists several,
    each inheriting from the one before (progressive distillation, e.g. 75% → 50% → 25%).
    The other training fields apply to every stage.
    """

    model: str | None = None  # the student
    attention: TowerAttention = field(default_factory=TowerAttention)
    loss: LossConfig = field(default_factory=LossConfig)
    inherit: InheritConfig = field(default_factory=InheritConfig)
    ensemble: tuple[TeacherConfig, ...] = ()  # more teachers, averaged with the run's model
    stages: tuple[DistillStep, ...] = ()

    def __post_init__(self) -> None:
        if not self.stages:
            _check_student(self.model, self.inherit)
        super().__post_init__()

    def plan(self) -> tuple[DistillStep, ...]:
        """The students to train, in order."""
        return self.stages or (DistillStep(self.model, self.inherit, self.steps),)
