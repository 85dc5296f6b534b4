"""The INT8 scheme (W8A8) and quantization-aware training's options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from compress.distill.config import LossConfig
from compress.errors import require
from compress.train import TrainConfig


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
    # layers left in float, as "<tower>.<module path>" (`edgeclip eval --sensitivity` names them,
    # e.g. image.blocks.3.mlp.fc2): PTQ, QAT and every target's int8 artifact skip them
    float_layers: tuple[str, ...] = ()
    # an accuracy budget: keep the fewest, most sensitive layers in float (added to float_layers)
    # until the INT8 simulation's mean zero-shot top-1 is within this of the float model's
    # (0.005: half a point); null: quantize every layer but float_layers
    max_drop: float | None = None

    def __post_init__(self) -> None:
        require(
            50 < self.percentile < 100,
            "percentile",
            f"must be in (50, 100), got {self.percentile}",
        )
        require(self.samples >= 1, "samples", f"must be >= 1, got {self.samples}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(
            self.max_drop is None or 0 <= self.max_drop < 1,
            "max_drop",
            f"must be in [0, 1) (a fraction: 0.005 is half a point), got {self.max_drop}",
        )
        for name in self.float_layers:
            require(
                name.split(".", 1)[0] in ("image", "text") and "." in name,
                "float_layers",
                f"{name!r}: expected <tower>.<module path>, the tower image or text",
            )


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
