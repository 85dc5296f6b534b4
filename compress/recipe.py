"""Recipes: YAML → frozen, validated config objects, one per stage, with `a.b=c` overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class RecipeError(ValueError):
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
    """One tower's attention variant (DESIGN §3)."""

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

    train: str = (
        "scenes"  # "scenes", a CSV path (filepath,caption) or a shard pattern (x-{000..009}.tar)
    )
    format: Literal["csv", "wds"] = "wds"  # scenes only: which written copy training reads
    skip_bad: bool = False  # true: skip (and count) malformed samples instead of stopping
    image_key: str = "filepath"  # CSV column names
    caption_key: str = "caption"
    scenes: ScenesConfig = field(default_factory=ScenesConfig)

    def __post_init__(self) -> None:
        ok = self.train == "scenes" or self.train.endswith((".csv", ".tar"))
        require(
            ok,
            "train",
            f"expected 'scenes', a .csv file or a .tar shard pattern, got {self.train!r}",
        )


@dataclass(frozen=True)
class TrainConfig:
    """A training stage: model, optimisation and checkpointing."""

    model: str
    attention: TowerAttention = field(default_factory=TowerAttention)
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

    def __post_init__(self) -> None:
        self._check_model()
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

    def _check_model(self) -> None:
        from compress.models import model_names

        require(
            self.model in model_names(),
            "model",
            f"unknown model {self.model!r}; expected one of: {', '.join(model_names())}",
        )


@dataclass(frozen=True)
class TeacherConfig:
    """A given, not trained, model: ``openclip:<arch>`` or a registry name, and its weights.

    ``checkpoint`` is a local file (an open_clip checkpoint for ``openclip:`` models, an edgeclip
    model file otherwise); ``pretrained`` is an open_clip tag, downloaded by open_clip. With
    neither, the weights are a random initialisation (useful only to try the path).
    """

    model: str
    checkpoint: str | None = None
    pretrained: str | None = None

    def __post_init__(self) -> None:
        from compress.models import model_names
        from compress.models.loaders import parse_name

        require(
            self.checkpoint is None or self.pretrained is None,
            "pretrained",
            "give either checkpoint or pretrained, not both",
        )
        if self.checkpoint is not None:
            require(Path(self.checkpoint).is_file(), "checkpoint", f"no such file: {self.checkpoint}")
        arch = parse_name(self.model)
        if arch is None:
            require(
                self.model in model_names(),
                "model",
                f"unknown model {self.model!r}; expected 'openclip:<arch>' or one of: "
                + ", ".join(model_names()),
            )
            require(
                self.pretrained is None,
                "pretrained",
                "pretrained tags name open_clip weights; use model: openclip:<arch>",
            )
            return
        from compress.compat import open_clip
        from compress.models.loaders import supported_architectures

        supported = supported_architectures()
        require(
            arch in supported,
            "model",
            f"open_clip architecture {arch!r} is not supported; supported: {', '.join(supported)}",
        )
        if self.pretrained is not None:
            tags = open_clip().list_pretrained_tags_by_model(arch)
            require(
                self.pretrained in tags,
                "pretrained",
                f"open_clip has no tag {self.pretrained!r} for {arch}; tags: {', '.join(tags) or 'none'}",
            )


@dataclass(frozen=True)
class LossConfig:
    """The distillation loss (DESIGN §3): α·L_affinity + (1 − α)·L_clip, or plain CLIP."""

    kind: Literal["affinity", "clip"] = "affinity"
    alpha: float = 1.0  # weight of affinity mimicking; TinyCLIP uses 1
    student_scale: float | None = None  # fixed logit scale for the student; null: its own, learned
    teacher_scale: float | Literal["learnable"] | None = None  # fixed, learned, or null: each teacher's own

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

    model: str | None = None  # registry name; null with inherit.method auto: the previous model pruned
    inherit: InheritConfig = field(default_factory=InheritConfig)
    steps: int = 1000

    def __post_init__(self) -> None:
        _check_student(self.model, self.inherit)
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")


def _check_student(model: str | None, inherit: InheritConfig) -> None:
    from compress.models import model_names

    if model is None:
        require(
            inherit.method == "auto",
            "model",
            "missing; only inherit.method: auto can do without (it prunes the previous model)",
        )
    else:
        require(
            model in model_names(),
            "model",
            f"unknown model {model!r}; expected one of: {', '.join(model_names())}",
        )


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    """Distil the run's model (pretrained or given) into a student, with an online teacher.

    ``model``, ``inherit`` and ``steps`` describe one student; ``stages`` instead lists several,
    each inheriting from the one before (progressive distillation, e.g. 75% → 50% → 25%).
    The other training fields apply to every stage.
    """

    model: str | None = None  # the student
    loss: LossConfig = field(default_factory=LossConfig)
    inherit: InheritConfig = field(default_factory=InheritConfig)
    ensemble: tuple[TeacherConfig, ...] = ()  # more teachers, averaged with the run's model
    stages: tuple[DistillStep, ...] = ()

    def __post_init__(self) -> None:
        if not self.stages:
            _check_student(self.model, self.inherit)
        super().__post_init__()

    def _check_model(self) -> None:  # the student may be null; checked in __post_init__
        pass

    def plan(self) -> tuple[DistillStep, ...]:
        """The students to train, in order."""
        return self.stages or (DistillStep(self.model, self.inherit, self.steps),)


@dataclass(frozen=True)
class EvalConfig:
    """Zero-shot classification and retrieval; tasks are scenes split names or CSV paths."""

    zeroshot: tuple[str, ...] = ("zs_shape", "zs_colour", "zs_colour_shape", "zs_count")
    retrieval: tuple[str, ...] = ("retrieval",)
    templates: tuple[str, ...] = (
        "a {}.",
        "a picture of a {}.",
    )  # class name → prompt; embeddings averaged
    label_key: str = "label"  # CSV column holding the class name
    batch_size: int = 256

    def __post_init__(self) -> None:
        from compress.data.scenes import SPLITS

        for field_name in ("zeroshot", "retrieval"):
            for i, task in enumerate(getattr(self, field_name)):
                ok = task.endswith(".csv") or task in SPLITS
                require(
                    ok,
                    f"{field_name}[{i}]",
                    f"expected a scenes split ({', '.join(SPLITS)}) or a .csv path, got {task!r}",
                )
        for i, t in enumerate(self.templates):
            require(
                "{}" in t, f"templates[{i}]", f"must contain '{{}}' for the class name, got {t!r}"
            )
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class ExportConfig:
    formats: tuple[Literal["onnx"], ...] = ("onnx",)
    batch_size: int = 1  # fixed input batch of the exported towers
    samples: int = 64  # images and captions the parity check runs
    tolerance: float = 1e-4  # max-abs difference allowed vs PyTorch

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.samples >= 1, "samples", f"must be >= 1, got {self.samples}")
        require(self.tolerance > 0, "tolerance", f"must be > 0, got {self.tolerance}")


@dataclass(frozen=True)
class Recipe:
    """A whole run. Stages run in order; a stage whose section is absent is skipped."""

    name: str
    seed: int = 0
    runs_dir: str = "runs"  # run folder = <runs_dir>/<name>, relative to the working directory
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: TrainConfig | None = None
    teacher: TeacherConfig | None = None
    distill: DistillConfig | None = None
    eval: EvalConfig | None = None
    export: ExportConfig | None = None

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
            self.distill is None or self.pretrain is not None or self.teacher is not None,
            "distill",
            "needs a teacher: add a pretrain section (train one) or a teacher section (load one)",
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def section_hash(self, *sections: str) -> str:
        """A short hash of the named sections (plus the seed): what a stage's output depends on."""
        everything = self.to_dict()
        chosen = {"seed": self.seed, **{s: everything[s] for s in sections}}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Loading: YAML text → nested dicts (with line numbers) → overrides → typed, checked objects.


def _describe(value: Any) -> str:
    return (
        f"{type(value).__name__} {value!r}"
        if not isinstance(value, dict | list)
        else type(value).__name__
    )


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {
        type(None): "null",
        float: "a number",
        int: "an integer",
        bool: "true or false",
        str: "a string",
    }.get(tp, str(tp))


class _Loader:
    def __init__(self, source: str, lines: dict[str, int], overridden: set[str]) -> None:
        self.source, self.lines, self.overridden = source, lines, overridden

    def error(self, path: str, message: str) -> RecipeError:
        where = self.source
        if any(path == o or path.startswith((o + ".", o + "[")) for o in self.overridden):
            return RecipeError(f"{where} (command-line override): {path}: {message}")
        line = self.lines.get(path)
        if line is None and path:  # an unknown or missing key: point at its parent mapping
            line = self.lines.get(path.rsplit(".", 1)[0] if "." in path else "")
        if line is not None:
            where += f":{line}"
        return RecipeError(f"{where}: {path}: {message}" if path else f"{where}: {message}")

    def convert(self, tp: Any, value: Any, path: str) -> Any:
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, path)
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            for arg in args:
                if arg is not type(None):
                    try:
                        return self.convert(arg, value, path)
                    except RecipeError:
                        if len(args) > 2:
                            continue
                        raise
        if origin is Literal:
            if value in typing.get_args(tp):
                return value
            raise self.error(path, f"expected {_type_name(tp)}, got {value!r}")
        if origin is tuple:
            if not isinstance(value, list | tuple):
                raise self.error(path, f"expected a list, got {_describe(value)}")
            args = typing.get_args(tp)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(self.convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
            if len(value) != len(args):
                raise self.error(path, f"expected a list of {len(args)} items, got {len(value)}")
            return tuple(
                self.convert(a, v, f"{path}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if tp is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if tp in (bool, str) and isinstance(value, tp):
            return value
        if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise self.error(path, f"expected {_type_name(tp)}, got {_describe(value)}")

    def build(self, cls: type, data: Any, path: str) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error(path, f"expected a mapping, got {_describe(data)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        prefix = f"{path}." if path else ""
        for key in data:
            if key not in fields:
                raise self.error(
                    f"{prefix}{key}", f"unknown key; expected one of: {', '.join(fields)}"
                )
        kwargs = {}
        for name, f in fields.items():
            if name in data:
                kwargs[name] = self.convert(hints[name], data[name], f"{prefix}{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise self.error(f"{prefix}{name}", f"missing; expected {_type_name(hints[name])}")
        try:
            return cls(**kwargs)
        except FieldError as err:
            raise self.error(f"{prefix}{err.key}", str(err)) from None


def _line_numbers(
    node: yaml.Node, path: str = "", out: dict[str, int] | None = None
) -> dict[str, int]:
    """Map every key path ("pretrain.lr", "eval.templates[0]") to its 1-based line in the file."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = f"{path}.{key.value}" if path else str(key.value)
            out[sub] = key.start_mark.line + 1
            _line_numbers(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _line_numbers(value, f"{path}[{i}]", out)
    return out


def _apply_override(data: dict, override: str, source: str) -> None:
    if "=" not in override:
        raise RecipeError(f"{source}: override {override!r}: expected key.path=value")
    key, text = override.split("=", 1)
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise RecipeError(f"{source}: override {override!r}: {part} is not a mapping")
    node[parts[-1]] = value


def parse_recipe(text: str, source: str = "<recipe>", overrides: list[str] = ()) -> Recipe:
    """Parse recipe text; errors name ``source``, the key path and the line."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"{where}: YAML syntax error: {problem}") from None
    lines = _line_numbers(root) if root is not None else {}
    if data is None:
        data = {}
    overridden = {o.split("=", 1)[0].strip() for o in overrides}
    loader = _Loader(source, lines, overridden)
    if not isinstance(data, dict):
        raise loader.error(
            "", f"expected a mapping of sections at the top level, got {_describe(data)}"
        )
    for override in overrides:
        _apply_override(data, override, source)
    return loader.build(Recipe, data, "")


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Load and validate a recipe file.

    Example:
        >>> recipe = load_recipe("recipes/demo.yaml", ["pretrain.steps=10"])  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"{path}: cannot be read: {err}") from None
    return parse_recipe(text, str(path), overrides)
