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
from compress.distill.config import DistillConfig, DistillStep, InheritConfig, LossConfig
from compress.errors import FieldError, UserError, require
from compress.models.attention import AttentionConfig, TowerAttention
from compress.models.build import require_model_name
from compress.models.given import TeacherConfig
from compress.quant.config import QatConfig, QuantConfig
from compress.train import TrainConfig
from export.profile.adb import AdbOptions
from export.profile.ssh import SshOptions
from export.verify import Thresholds, parity_thresholds

# The algorithms' own configs (training, distillation, quantization, attention, given models,
# devices) live beside them; the recipe assembles them with the sections below.
__all__ = [
    "AttentionConfig",
    "DistillConfig",
    "DistillStep",
    "InheritConfig",
    "LossConfig",
    "QatConfig",
    "QuantConfig",
    "TeacherConfig",
    "TowerAttention",
    "TrainConfig",
]


class RecipeError(UserError):
    """Bad recipe input; the message is one line naming the file, the key path and what was expected."""


# ---------------------------------------------------------------------------------------------
# The run's own sections. Field names are the recipe's keys; checks use the words the user typed.


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


@dataclass(frozen=True)
class PretrainLoss:
    """What pretraining minimises: ``clip`` (the softmax contrastive loss) or ``sigmoid`` (the
    pairwise sigmoid loss, with a learned logit bias beside the scale, starting at SigLIP's
    s = 10, b = −10)."""

    kind: Literal["clip", "sigmoid"] = "clip"


@dataclass(frozen=True, kw_only=True)
class PretrainConfig(TrainConfig):
    """Train a registry model from scratch with the contrastive (or the sigmoid) loss."""

    model: str
    attention: TowerAttention = field(default_factory=TowerAttention)
    loss: PretrainLoss = field(default_factory=PretrainLoss)
    hard_negatives: HardNegativesConfig | None = None

    def __post_init__(self) -> None:
        require_model_name(self.model)
        require(
            self.hard_negatives is None or self.loss.kind == "clip",
            "hard_negatives",
            f"apply to loss kind clip only, not {self.loss.kind}",
        )
        super().__post_init__()


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
    """Exported artifacts, ``<target>-<precision>`` each (or ``<target>-<image>+<text>``, a
    precision per tower), and the parity they must keep with PyTorch (each precision's own by
    default: :data:`export.verify.PARITY`)."""

    # onnx, executorch, coreml (registry export.exporters) × fp32, fp16, int8, w8, w4: e.g.
    # [onnx-fp16]; one precision per tower as <image>+<text>: e.g. [executorch-int8+w4]
    targets: tuple[str, ...] = ("onnx-fp32",)
    batch_size: int = 1  # fixed input batch of the exported towers
    samples: int = 64  # held-out images and captions the parity check runs
    tolerance: float | None = None  # max-abs difference of the embeddings vs PyTorch
    min_cosine: float | None = None  # smallest per-row cosine vs PyTorch
    min_agreement: float | None = None  # fraction of images with the same best text as PyTorch
    # how far an artifact's mean zero-shot top-1 (through its runtime) may fall below the
    # simulation it was lowered from: with an int8 tower, the INT8 simulation's; with a w8/w4
    # tower (and no int8 one), the weight-only simulation's
    max_int8_drop: float = 0.01
    max_weight_only_drop: float = 0.01

    def __post_init__(self) -> None:
        from export import exporters

        require(len(self.targets) > 0, "targets", "must list at least one <target>-<precision>")
        for i, artifact in enumerate(self.targets):
            name, _, precision = artifact.rpartition("-")
            require(
                name in exporters,
                f"targets[{i}]",
                f"expected <target>-<precision> or <target>-<image precision>+<text precision> "
                f"with a target among {', '.join(exporters.names())}, got {artifact!r}",
            )
            precisions = exporters.get(name).precisions
            towers = precision.split("+")
            require(
                len(towers) <= 2,
                f"targets[{i}]",
                f"expected one precision, or two as <image precision>+<text precision>, got "
                f"{artifact!r}",
            )
            for tower, got in zip(
                ("image", "text") if len(towers) == 2 else ("",), towers, strict=True
            ):
                require(
                    got in precisions,
                    f"targets[{i}]",
                    f"the {name} target exports {', '.join(precisions)}, not {got!r}"
                    + (f" (the {tower} tower's, in {artifact!r})" if tower else ""),
                )
            require(
                len(towers) == 1 or towers[0] != towers[1],
                f"targets[{i}]",
                f"both towers at {towers[0]}: write {name}-{towers[0]}, got {artifact!r}",
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
        require(
            0 <= self.max_weight_only_drop <= 1,
            "max_weight_only_drop",
            f"must be in [0, 1], got {self.max_weight_only_drop}",
        )

    def artifacts(self) -> list[tuple[str, str]]:
        """(target, precision) of each listed artifact, in order; a precision per tower is
        ``"<image>+<text>"`` (:func:`export.verify.tower_precisions` splits it)."""
        return [tuple(t.rsplit("-", 1)) for t in self.targets]

    def thresholds(self, precision: str) -> dict[str, Thresholds]:
        """Each tower's parity at the artifact's precision, with the recipe's overrides."""
        return {
            tower: Thresholds(
                min_cosine=base.min_cosine if self.min_cosine is None else self.min_cosine,
                max_abs=base.max_abs if self.tolerance is None else self.tolerance,
                min_zero_shot_agreement=(
                    base.min_zero_shot_agreement
                    if self.min_agreement is None
                    else self.min_agreement
                ),
            )
            for tower, base in parity_thresholds(precision).items()
        }


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
        require(
            self.quant is None
            or self.quant.max_drop is None
            or (self.eval is not None and bool(self.eval.zeroshot)),
            "quant.max_drop",
            "is measured on the zero-shot tasks: add an eval section with zeroshot tasks",
        )
        self._check_text_inheritance()
        require(
            self.export is None
            or self.distill is not None
            or self.teacher is None
            or self.teacher.tokenizer is None,
            "export",
            "the run's model is its teacher, which reads text by its own tokenizer "
            "(teacher.tokenizer); exports ship CLIP's BPE tokenizer: add a distill section",
        )

    def _check_text_inheritance(self) -> None:
        """The first student's text tower cannot inherit from a teacher with its own tokenizer
        (registry students read CLIP's BPE): said at validation, not after reinforcing. The
        distill stage checks it again on the models (``InheritError``), for teachers whose
        tokenizer only their model file names."""
        if self.distill is None or self.teacher is None or self.teacher.tokenizer is None:
            return
        first = self.distill.plan()[0]
        if first.model is None or first.inherit.method == "none":
            return  # auto pruning of the teacher itself keeps its tokenizer
        key = (
            "distill.stages[0].inherit.towers" if self.distill.stages else "distill.inherit.towers"
        )
        require(
            "text" not in first.inherit.towers,
            key,
            f"the teacher reads text by its own tokenizer (teacher.tokenizer), the student "
            f"{first.model} by CLIP's BPE: its text tower cannot inherit; expected [image]",
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
