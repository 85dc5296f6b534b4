"""Held-out images and captions for checks that need real inputs (export parity, outlier statistics)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from compress.data.datasets import CsvDataset
from compress.data.scenes import iter_split
from compress.data.transforms import image_transform

if TYPE_CHECKING:
    from compress.models import ModelRecord


def heldout_samples(
    record: ModelRecord, n: int, csv: Path | None = None, seed: int = 0, split: str = "retrieval"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and captions no training step saw, for parity checks: the first ``n`` rows of a
    captioned CSV, else a scenes split rendered in memory (no files needed): the retrieval
    split, or ``split`` (``"train"`` for calibration data that no evaluation uses)."""
    transform = image_transform(record.image_size, **record.normalization)
    if csv is not None:
        data = CsvDataset(csv, transform)
        items = [data[i] for i in range(min(n, len(data)))]
        images, captions = [i["image"] for i in items], [i["caption"] for i in items]
    else:
        rows = list(iter_split(split, n, seed))
        images = [transform(Image.fromarray(image)) for _, image, _, _ in rows]
        captions = [caption for _, _, caption, _ in rows]
    return torch.stack(images), record.tokenizer()(captions)
