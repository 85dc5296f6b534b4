"""Quantization-aware training: fake-quant fine-tuning of a float model, then conversion.

The model's towers become PT2E graphs with fake-quantizers (:func:`compress.quant.ptq.prepare`
with ``qat=True``, the W8A8 scheme of :class:`compress.quant.config.QuantConfig`); the shared training
loop (:func:`compress.train.train`: checkpoints, resume, DDP) fine-tunes them against the float
model's own embeddings with a distillation loss, so the INT8 model learns to keep what the float
one computes; :func:`compress.quant.ptq.convert` then gives the INT8 graphs the exporters lower.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from compress.distill.losses import losses
from compress.distill.student import DistillObjective, Extras, freeze, loss_options
from compress.errors import UserError, first_line
from compress.io import atomic_save
from compress.models import CLIP, ModelRecord
from compress.models.record import ModelFileError
from compress.quant.config import QatConfig, QuantConfig
from compress.quant.ptq import QuantizedCLIP, prepare
from compress.train import train


def train_qat(
    model: CLIP,
    quant: QuantConfig,
    cfg: QatConfig,
    batches: Callable[[int], object],
    out_dir: Path,
    *,
    rank: int = 0,
    world: int = 1,
    stop_after: int | None = None,
) -> tuple[QuantizedCLIP, dict]:
    """Fine-tune ``model`` with fake quantization; the trained fake-quant model and the summary.

    ``batches(start_step)`` yields this rank's batches from that step on; checkpoints go to
    ``out_dir`` and a rerun resumes from the last one.
    """
    if cfg.loss.sigmoid and model.logit_bias is None:
        raise UserError(
            "qat.loss: a sigmoid loss needs a model with a logit bias (one trained with a "
            "sigmoid loss); this one has none: use base clip"
        )
    reference = freeze(copy.deepcopy(model))  # the float model the INT8 one learns to match
    quantized = prepare(model, quant, qat=True)
    loss = losses.get(cfg.loss.kind)(**loss_options(cfg))
    summary = train(
        quantized,
        batches,
        dataclasses.replace(cfg, compile=False),  # the fake-quant graphs run eagerly
        out_dir,
        objective=DistillObjective(
            loss, [reference], model, bias=quantized.logit_bias if cfg.loss.sigmoid else None
        ),
        extra=Extras(loss, None),
        rank=rank,
        world=world,
        desc="qat",
        stop_after=stop_after,
    )
    return quantized.eval(), summary


def quantized_record(record: ModelRecord, quant: QuantConfig, method: str) -> ModelRecord:
    """The record of ``record``'s model quantized with ``quant`` by ``method`` (qat or ptq)."""
    provenance = {**record.provenance, "stage": method, "parent": record.name}
    quantization = {"method": method, "scheme": dataclasses.asdict(quant)}
    return record.derive(precision="int8", quantization=quantization, provenance=provenance)


def save_quantized(model: QuantizedCLIP, record: ModelRecord, path: Path) -> None:
    """Write a fake-quant model (its graphs' weights and quantizer state) and its record, atomically."""
    atomic_save({"record": record.to_dict(), "state_dict": model.state_dict()}, path)


def load_quantized(path: str | Path) -> tuple[QuantizedCLIP, ModelRecord]:
    """Rebuild a model written by :func:`save_quantized`: the same graphs, prepared again from
    the record's architecture, with the saved weights and quantizer state; in eval mode."""
    path = Path(path)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        record = ModelRecord.from_dict(state)
    except Exception as err:  # a missing, foreign or damaged file
        raise ModelFileError(f"{path}: not an edgeclip model file ({first_line(err)})") from None
    if record.quantization is None:
        raise ModelFileError(f"{path}: a float model, not an INT8 one")
    quant = QuantConfig(**record.quantization["scheme"])
    model = prepare(record.build(), quant, qat=record.quantization["method"] == "qat")
    try:
        model.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError) as err:
        raise ModelFileError(f"{path}: not an edgeclip INT8 model ({first_line(err)})") from None
    return model.eval(), record
