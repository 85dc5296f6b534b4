"""The recipe's sections: frozen config objects whose checks use the words the user typed.

Each check here looks at the recipe alone; inputs outside it (files, open_clip tags) are checked
by the stage that reads them, before anything runs (``Stage.check``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

from compress.data.scenes import SPLITS as SCENES_SPLITS
from compress.errors import UserError
from export.profile.adb import AdbOptions
from export.verify import PARITY, Thresholds


class RecipeError(UserError):
    """Bad recipe input; the message is one line naming the file, the key path and what was expected."""


class FieldError(ValueError):
    """Raised by a config's checks; the loader adds the file, the full key path and the line."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise FieldError(key, message)


# ---------------------------------------------------------------------------------------------
# Config objects. Field names are the recipe's keys; checks use the words the user typed.


@dataclass(frozen=True)
class AttentionConfig:
    """One tower's attention variant (docs/design.md, "Methods")."""

    kind: Literal["softmax", "clipped", "gated"] = "softmax"
    gamma: float | None = None  # clipped: lower stretch, ≤ 0 (or give alpha)
    zeta: float = 1.0  # clipped: upper stretch, ≥ 1
    alpha: float | None = None  # clipped: γ = −α/T for sequence length T
    gate: Literal["token", "head", "pooled"] = "token"  # gated: conditional per token, or per head
    gate_init: float = 0.5  # gated: initial gate value p; bias starts at logit(p)

    def __post_init__(self) -> None:
        if self.kind != "clipped":
            require(
                self.gamma is None and self.alpha is None,
                "gamma",
                f"only applies to kind: clipped, not {self.kind}",
            )
        else:
            require(
                (self.gamma is None) != (self.alpha is None),
                "gamma",
                "give exactly one of gamma or alpha",
            )
            require(
                self.gamma is None or self.gamma <= 0, "gamma", f"must be <= 0, got {self.gamma}"
            )
            require(
                self.alpha is None or self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}"
            )
            require(self.zeta >= 1, "zeta", f"must be >= 1, got {self.zeta}")
        require(0 < self.gate_init < 1, "gate_init", f"must be in (0, 1), got {self.gate_init}")

    def spec(self) -> dict:
        """The options the attention builder takes for this kind."""
        if self.kind == "clipped":
            return {"kind": "clipped", "gamma": self.gamma, "zeta": self.zeta, "alpha": self.alpha}
        if self.kind == "gated":
            return {"kind": "gated", "gate": self.gate, "gate_init": self.gate_init}
        return {"kind": "softmax"}


@dataclass(frozen=True)
class TowerAttention:
    image: AttentionConfig = field(default_factory=AttentionConfig)
    text: AttentionConfig = field(default_factory=AttentionConfig)


@dataclass(frozen=True)
class ScenesConfig:
    """Sizes of the embedded scenes dataset's splits."""

    image_size: int = 64
    train: int = 20000
    val: int = 1000
    retrieval: int = 1000  # larger = harder retrieval (more distractors)
    zeroshot: int = 720  # images per zero-shot task
    shard_size: int = 2000

    def __post_init__(self) -> None:
        require(
            16 <= self.image_size <= 512,
            "image_size",
            f"must be in [16, 512], got {self.image_size}",
        )
        for key in ("train", "val", "retrieval", "zeroshot", "shard_size"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class DataConfig:
    """Training data: the embedded scenes dataset, or a CSV file / webdataset shards of your own."""

    # "scenes", a CSV path (filepath,caption) or a shard pattern (x-{000..009}.tar), local or
    # any URL: https://…/x-{000..009}.tar, pipe:aws s3 cp s3://b/x-{000..009}.tar -
    train: str = "scenes"
    format: Literal["csv", "wds"] = "wds"  # scenes only: which written copy training reads
    skip_bad: bool = False  # true: skip (and count) malformed samples instead of stopping
    # true: keep decoded training samples in memory after their first read (uint8 pixels and
    # token ids, ~S*S*3 bytes a sample), so later epochs skip reading and decoding
    cache: bool = field(default=False, metadata={"hash": False})
    image_key: str = "filepath"  # CSV column names
    caption_key: str = "caption"
    scenes: ScenesConfig = field(default_factory=ScenesConfig)

    def __post_init__(self) -> None:
        from compress.data.shards import is_url

        ok = self.train == "scenes" or self.train.endswith((".csv", ".tar")) or is_url(self.train)
        require(
            ok,
            "train",
            f"expected 'scenes', a .csv file, a .tar shard pattern or a URL, got {self.train!r}",
        )


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


def _check_registry_model(model: str, alternatives: str = "") -> None:
    from compress.models import model_names

    require(
        model in model_names(),
        "model",
        f"unknown model {model!r}; expected {alternatives}one of: {', '.join(model_names())}",
    )


@dataclass(frozen=True)
class HardNegativesConfig:
    """One more caption per image in the contrastive loss: the image's own with one word swapped
    for another of the same set (NegCLIP), e.g. ``swap: [[circle, square, star]]``."""

    swap: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        require(len(self.swap) > 0, "swap", "expected at least one set of words")
        seen: set[str] = set()
        for i, words in enumerate(self.swap):
            key = f"swap[{i}]"
            require(
                len(set(words)) >= 2,
                key,
                f"expected two different words or more, got {list(words)}",
            )
            for word in words:
                require(bool(word) and " " not in word, key, f"expected single words, got {word!r}")
                require(word not in seen, key, f"{word!r} is in two sets")
                seen.add(word)


@dataclass(frozen=True, kw_only=True)
class PretrainConfig(TrainConfig):
    """Train a registry model from scratch with the contrastive loss."""

    model: str
    attention: TowerAttention = field(default_factory=TowerAttention)
    hard_negatives: HardNegativesConfig | None = None

    def __post_init__(self) -> None:
        _check_registry_model(self.model)
        super().__post_init__()


@dataclass(frozen=True)
class TeacherConfig:
    """A given, not trained, model: ``openclip:<arch>``, ``mobileclip:<name>`` (Apple's
    ml-mobileclip layout) or a registry name, and its weights.

    ``checkpoint`` is a local file (an open_clip checkpoint for ``openclip:`` models, Apple's
    ``mobileclip_<name>.pt`` for ``mobileclip:`` ones, an edgeclip model file otherwise);
    ``pretrained`` is an open_clip tag, downloaded by open_clip. With neither, the weights are a
    random initialisation (useful only to try the path).
    """

    model: str
    checkpoint: str | None = None
    pretrained: str | None = None

    def __post_init__(self) -> None:
        require(
            self.checkpoint is None or self.pretrained is None,
            "pretrained",
            "give either checkpoint or pretrained, not both",
        )
        if self.model.startswith("mobileclip:"):
            from compress.models.apple import NAMES, PREFIX

            require(
                self.model[len(PREFIX) :] in NAMES,
                "model",
                f"unknown Apple MobileCLIP {self.model!r}; expected one of: "
                + ", ".join(PREFIX + name for name in NAMES),
            )
            require(
                self.pretrained is None,
                "pretrained",
                "Apple's MobileCLIP files have no tags; give checkpoint: mobileclip_<name>.pt",
            )
        elif not self.model.startswith("openclip:"):
            _check_registry_model(self.model, "'openclip:<arch>', 'mobileclip:<name>' or ")
            require(
                self.pretrained is None,
                "pretrained",
                "pretrained tags name open_clip weights; use model: openclip:<arch>",
            )


@dataclass(frozen=True)
class LossConfig:
    """The distillation loss: α·L_affinity + (1 − α)·L_clip, or plain CLIP (docs/design.md)."""

    # reinforced: MobileCLIP's loss on the reinforce stage's stored teacher embeddings (alpha = λ)
    kind: Literal["affinity", "clip", "reinforced"] = "affinity"
    alpha: float = 1.0  # weight of affinity mimicking (λ of the reinforced loss); TinyCLIP uses 1
    student_scale: float | None = None  # fixed logit scale for the student; null: its own, learned
    # fixed, learned, or null: each teacher's own
    teacher_scale: float | Literal["learnable"] | None = None

    def __post_init__(self) -> None:
        require(0 <= self.alpha <= 1, "alpha", f"must be in [0, 1], got {self.alpha}")
        for name in ("student_scale", "teacher_scale"):
            value = getattr(self, name)
            ok = value is None or isinstance(value, str) or value > 0
            require(ok, name, f"must be > 0, got {value}")


@dataclass(frozen=True)
class InheritConfig:
    """How a student starts from its teacher (TinyCLIP weight inheritance).

    ``none``: random init; ``leading``: teacher layers every k-th (or listed) and the leading
    slice of every width; ``importance``: the heads, neurons and channels that score highest on
    a calibration batch; ``auto``: learned L0 masks pruned to a ``sparsity`` target.
    """

    method: Literal["none", "leading", "importance", "auto"] = "leading"
    image_layers: tuple[int, ...] | None = None  # teacher blocks the student's blocks take
    text_layers: tuple[int, ...] | None = None
    score: Literal["magnitude", "taylor"] = "magnitude"  # importance: how units are scored
    calibration: int = 256  # importance: samples in the calibration batch
    sparsity: float = 0.5  # auto: fraction of the parameters to remove
    ramp: float = 0.5  # auto: fraction of the steps over which the sparsity target ramps up

    def __post_init__(self) -> None:
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
        _check_registry_model(model)


@dataclass(frozen=True)
class CocaModel:
    """The open_clip CoCa that the ``coca`` captioner samples captions from, and its weights."""

    model: str = "coca_ViT-L-14"  # an open_clip CoCa architecture
    pretrained: str | None = "mscoco_finetuned_laion2b_s13b_b90k"  # open_clip downloads the tag
    checkpoint: str | None = None  # a local state dict, used instead of the tag


@dataclass(frozen=True)
class ReinforceConfig:
    """MobileCLIP's dataset reinforcement: per training image, K stored augmentations with the
    teachers' embeddings of each, N synthetic captions and the embeddings of every caption."""

    k: int = 5  # augmentations stored per image
    n: int = 3  # synthetic captions per image
    captioner: str = "existing"  # registry compress.data.captioners: existing, coca
    # captioner coca: an open_clip CoCa and its weights (a tag, or a local checkpoint)
    coca: CocaModel = field(default_factory=CocaModel)
    ensemble: tuple[TeacherConfig, ...] = ()  # more teachers beside the run's model
    samples_per_shard: int = 2000
    batch_size: int = field(default=64, metadata={"hash": False})  # samples per teacher call
    fp16: bool = True  # embeddings stored in fp16 (half the bytes)
    limit: int | None = None  # reinforce only the first N training samples
    # The stored augmentations: random-resized crop (area fraction) → optional flip → RandAugment
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = False
    rand_augment: bool = True

    def __post_init__(self) -> None:
        from compress.data.captioners import captioners

        require(self.k >= 1, "k", f"must be >= 1, got {self.k}")
        require(self.n >= 1, "n", f"must be >= 1, got {self.n}")
        require(
            self.captioner in captioners,
            "captioner",
            f"expected one of: {', '.join(captioners.names())}, got {self.captioner!r}",
        )
        require(self.samples_per_shard >= 1, "samples_per_shard", "must be >= 1")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.limit is None or self.limit >= 1, "limit", f"must be >= 1, got {self.limit}")
        low, high = self.crop_scale
        require(
            0 < low <= high <= 1, "crop_scale", f"expected 0 < min <= max <= 1, got {[low, high]}"
        )


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


@dataclass(frozen=True)
class EvalConfig:
    """Zero-shot classification and retrieval; tasks are CSV paths, or the embedded scenes
    dataset's split names."""

    zeroshot: tuple[str, ...] = ()  # filepath,label CSVs (or scenes zs_* splits)
    retrieval: tuple[str, ...] = ()  # filepath,caption CSVs (or the scenes retrieval split)
    templates: tuple[str, ...] = ("a {}.", "a picture of a {}.")  # class → prompts, averaged
    label_key: str = "label"  # CSV column holding the class name
    batch_size: int = 256
    # ∞-norm and kurtosis of every block and FFN output of the final model (and the teacher):
    # outliers.json and outliers.png in the eval folder, a table in the report
    outliers: bool = True
    outlier_samples: int = 256  # held-out samples the statistics average over: more = steadier

    def __post_init__(self) -> None:
        for field_name in ("zeroshot", "retrieval"):
            for i, task in enumerate(getattr(self, field_name)):
                ok = task.endswith(".csv") or task in SCENES_SPLITS
                require(
                    ok,
                    f"{field_name}[{i}]",
                    f"expected a .csv path or a scenes split ({', '.join(SCENES_SPLITS)}), got {task!r}",
                )
        require(
            bool(self.zeroshot or self.retrieval),
            "zeroshot",
            "name at least one zeroshot or retrieval task (a .csv path or a scenes split)",
        )
        for i, t in enumerate(self.templates):
            require(
                "{}" in t, f"templates[{i}]", f"must contain '{{}}' for the class name, got {t!r}"
            )
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(
            self.outlier_samples >= 1,
            "outlier_samples",
            f"must be >= 1, got {self.outlier_samples}",
        )

    def tasks(self) -> tuple[str, ...]:
        return (*self.zeroshot, *self.retrieval)


@dataclass(frozen=True)
class ExportConfig:
    """Exported artifacts, ``<target>-<precision>`` each, and the parity they must keep with
    PyTorch (each precision's own by default: :data:`export.verify.PARITY`)."""

    # onnx, executorch, coreml (registry export.exporters) × fp32, fp16: e.g. [onnx-fp16]
    targets: tuple[str, ...] = ("onnx-fp32",)
    batch_size: int = 1  # fixed input batch of the exported towers
    samples: int = 64  # held-out images and captions the parity check runs
    tolerance: float | None = None  # max-abs difference of the embeddings vs PyTorch
    min_cosine: float | None = None  # smallest per-row cosine vs PyTorch
    min_agreement: float | None = None  # fraction of images with the same best text as PyTorch
    # how far an int8 artifact's mean zero-shot top-1 (through its runtime) may fall below the
    # INT8 simulation it was lowered from
    max_int8_drop: float = 0.01

    def __post_init__(self) -> None:
        from export import exporters

        require(len(self.targets) > 0, "targets", "must list at least one <target>-<precision>")
        for i, artifact in enumerate(self.targets):
            name, _, precision = artifact.rpartition("-")
            require(
                name in exporters,
                f"targets[{i}]",
                f"expected <target>-<precision> with a target among {', '.join(exporters.names())}"
                f", got {artifact!r}",
            )
            precisions = exporters.get(name).precisions
            require(
                precision in precisions,
                f"targets[{i}]",
                f"the {name} target exports {', '.join(precisions)}, not {precision!r}",
            )
        duplicates = sorted({t for t in self.targets if self.targets.count(t) > 1})
        require(not duplicates, "targets", f"lists {', '.join(duplicates)} twice")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.samples >= 1, "samples", f"must be >= 1, got {self.samples}")
        require(
            self.tolerance is None or self.tolerance > 0,
            "tolerance",
            f"must be > 0, got {self.tolerance}",
        )
        require(
            self.min_cosine is None or 0 < self.min_cosine <= 1,
            "min_cosine",
            f"must be in (0, 1], got {self.min_cosine}",
        )
        require(
            self.min_agreement is None or 0 <= self.min_agreement <= 1,
            "min_agreement",
            f"must be in [0, 1], got {self.min_agreement}",
        )
        require(
            0 <= self.max_int8_drop <= 1,
            "max_int8_drop",
            f"must be in [0, 1], got {self.max_int8_drop}",
        )

    def artifacts(self) -> list[tuple[str, str]]:
        """(target, precision) of each listed artifact, in order."""
        return [tuple(t.rsplit("-", 1)) for t in self.targets]

    def thresholds(self, precision: str) -> Thresholds:
        """The precision's parity, with the recipe's overrides."""
        base = PARITY[precision]
        return Thresholds(
            min_cosine=base.min_cosine if self.min_cosine is None else self.min_cosine,
            max_abs=base.max_abs if self.tolerance is None else self.tolerance,
            min_zero_shot_agreement=(
                base.min_zero_shot_agreement if self.min_agreement is None else self.min_agreement
            ),
        )


@dataclass(frozen=True)
class QuantConfig:
    """W8A8: int8 weights (symmetric, per output channel) and int8 activations (per tensor),
    one scheme for every target; the calibration sets the activation ranges of post-training
    quantization (QAT learns them)."""

    calibration: Literal["minmax", "percentile"] = "minmax"
    percentile: float = 99.99  # percentile calibration: the range covers this share of values
    samples: int = 512  # calibration images and captions (training data, never evaluation data)
    batch_size: int = 64  # calibration batch
    embeddings: bool = True  # the token table too, weight-only (8 bits per row)

    def __post_init__(self) -> None:
        require(
            50 < self.percentile < 100,
            "percentile",
            f"must be in (50, 100), got {self.percentile}",
        )
        require(self.samples >= 1, "samples", f"must be >= 1, got {self.samples}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True, kw_only=True)
class QatConfig(TrainConfig):
    """Quantization-aware training of the final model: fake-quant fine-tuning with the
    training loop, distilling from the model's own fp32 copy, then conversion to int8."""

    steps: int = 200
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup: int = 20
    loss: LossConfig = field(default_factory=LossConfig)
    # the fake-quant graphs compute in fp32 (their observers and rounding take float32 only)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        default="fp32", metadata={"hash": False}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.precision == "fp32",
            "precision",
            f"quantization-aware training runs in fp32 (fake quantization needs float32), "
            f"got {self.precision!r}",
        )


@dataclass(frozen=True)
class SshOptions:
    """How to reach a Linux board over SSH (``ssh://user@board[:port]``)."""

    key: str | None = None  # private key file (ssh -i); None: ssh's own keys and agent
    python: str = "python3"  # the board's Python, with numpy and onnxruntime
    known_hosts: str | None = (
        None  # the board's host key is checked here (None: ~/.ssh/known_hosts)
    )
    timeout: float = 600.0  # seconds for one tower
    engine: Literal["auto", "onnxruntime", "trtexec"] = "auto"  # auto: onnxruntime, else trtexec


@dataclass(frozen=True)
class ProfileConfig:
    """Latency of every exported artifact (and the final model in torch eager) on each device."""

    devices: tuple[str, ...] = ("host",)  # host, ssh://user@board[:port], adb[:serial], apple
    runs: int = 50  # timed runs per tower, after the warm-up
    warmup: int = 5
    threads: int | None = None  # None: each runtime's default
    ops: bool = True  # per-operator breakdown (one more, separately timed pass)
    pytorch: bool = True  # also time the final model in torch eager (host only)
    ssh: SshOptions = field(default_factory=SshOptions)
    adb: AdbOptions = field(default_factory=AdbOptions)

    def __post_init__(self) -> None:
        from export.profile.devices import parse_address

        require(len(self.devices) > 0, "devices", "must list at least one device")
        for i, device in enumerate(self.devices):
            try:
                parse_address(device)
            except UserError as err:
                raise FieldError(f"devices[{i}]", str(err)) from None
        require(self.runs >= 1, "runs", f"must be >= 1, got {self.runs}")
        require(self.warmup >= 0, "warmup", f"must be >= 0, got {self.warmup}")
        require(
            self.threads is None or self.threads >= 1,
            "threads",
            f"must be >= 1, got {self.threads}",
        )

    def options(self, kind: str) -> dict:
        """The options of one kind of device, as the device takes them."""
        section = getattr(self, kind, None)
        return dataclasses.asdict(section) if section is not None else {}


@dataclass(frozen=True)
class Recipe:
    """A whole run. Stages run in order; a stage whose section is absent is skipped."""

    name: str
    seed: int = 0
    runs_dir: str = "runs"  # run folder = <runs_dir>/<name>, relative to the working directory
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig | None = None
    teacher: TeacherConfig | None = None
    reinforce: ReinforceConfig | None = None  # needs a model: pretrain or teacher
    distill: DistillConfig | None = None
    eval: EvalConfig | None = None
    quant: QuantConfig | None = None  # W8A8 settings of INT8 exports, the simulation and QAT
    qat: QatConfig | None = None
    export: ExportConfig | None = None
    profile: ProfileConfig | None = None

    def __post_init__(self) -> None:
        ok = self.name and all(c.isalnum() or c in "-_." for c in self.name)
        require(
            bool(ok),
            "name",
            f"must be a non-empty folder name (letters, digits, - _ .), got {self.name!r}",
        )
        require(
            self.pretrain is None or self.teacher is None,
            "teacher",
            "give either pretrain (train a model) or teacher (load one), not both",
        )
        require(
            self.qat is None or self.pretrain is not None or self.teacher is not None,
            "qat",
            "needs a model: add a pretrain, teacher or distill section",
        )
        require(
            self.reinforce is None or self.pretrain is not None or self.teacher is not None,
            "reinforce",
            "needs a teacher: add a pretrain section (train one) or a teacher section (load one)",
        )
        require(
            self.distill is None
            or self.distill.loss.kind != "reinforced"
            or self.reinforce is not None,
            "distill.loss.kind",
            "reinforced needs a reinforce section (the stored teacher knowledge it trains from)",
        )
        require(
            self.distill is None or self.pretrain is not None or self.teacher is not None,
            "distill",
            "needs a teacher: add a pretrain section (train one) or a teacher section (load one)",
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def error(self, path: str, message: str) -> RecipeError:
        """A one-line error about key ``path`` that names the recipe file and line, for checks
        made after loading (e.g. a named file that does not exist)."""
        where = getattr(self, "_where", None)
        return where.error(path, message) if where else RecipeError(f"{path}: {message}")

    def section_hash(self, *sections: str) -> str:
        """A short hash of the named sections (plus the seed): what a stage's output depends on.
        Fields marked ``metadata={"hash": False}`` (how to compute, not what) are left out."""
        chosen = {"seed": self.seed, **{s: _what(getattr(self, s)) for s in sections}}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _what(value):
    """A section as plain data without its how-not-what fields."""
    if dataclasses.is_dataclass(value):
        return {
            f.name: _what(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata.get("hash", True)
        }
    if isinstance(value, tuple | list):
        return [_what(v) for v in value]
    return value
