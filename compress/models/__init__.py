"""CLIP models: named architectures, their builder, and the record saved with their weights."""

from compress.models.build import (
    build_from_config,
    build_model,
    count_params,
    image_normalization,
    model_config,
    model_names,
    tower_params,
)
from compress.models.clip import CLIP
from compress.models.mobile import is_reparameterized, reparameterize
from compress.models.record import ModelRecord, load_model, read_record, save_model

__all__ = [
    "CLIP",
    "ModelRecord",
    "build_from_config",
    "build_model",
    "count_params",
    "image_normalization",
    "is_reparameterized",
    "load_model",
    "model_config",
    "model_names",
    "read_record",
    "reparameterize",
    "save_model",
    "tower_params",
]
