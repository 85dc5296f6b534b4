"""Training samples from a reinforced dataset: a stored augmentation replayed, a caption picked,
and the teachers' stored embeddings of exactly those — no teacher runs.

The dataset is map-style over every (sample, augmentation, synthetic caption) combination, so
the run's seeded global order (:class:`compress.data.batches.GlobalOrderSampler`) draws them
without any randomness of its own: a resumed or multi-process run sees what one process would.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from compress.data.augment import Augmentation
from compress.data.datasets import DataError
from compress.data.reinforced import ReinforcedShards
from compress.data.transforms import ImageTransform
from compress.errors import UserError
from compress.tokenizer import Tokenizer


class ReplayDataset(Dataset):
    """A reinforced shard set as training items for one student: ours (its ``index.json``), or
    shards without an index such as Apple's DataCompDR as published (a pattern, glob or list,
    with ``images`` where they keep only ``url.txt``; then ``teachers`` gives the ensemble's
    ``(dim, logit scale)`` per member and ``image_size`` the size the augmentations were
    stored at — DataCompDR: crop + RandAugment at 224; K and N come from the samples).

    Item ``v`` is sample ``v // (K·N)``, its stored augmentation ``(v // N) % K`` and its
    synthetic caption ``v % N``: ``image`` (the augmentation replayed at the size it was stored
    at, then resized to the student's and normalised), ``text`` and ``syn_text`` (the real and
    the synthetic caption's token ids), and the stored ``teacher_image``, ``teacher_real`` and
    ``teacher_syn`` embeddings (float32). Samples are held in memory as stored (image file
    bytes, fp16 embeddings); with ``cache`` each image is also kept decoded once first read
    (uint8 pixels), so later augmentations skip decoding.

    A stored augmentation that cannot be replayed (out-of-range parameters, e.g. posterize with
    0 bits) raises a one-line :class:`DataError` naming the shard, the sample and the
    augmentation; with ``skip_bad`` the item is None instead (``collate`` drops and counts it).
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str | os.PathLike],
        transform: ImageTransform,
        tokenize: Tokenizer,
        cache: bool = False,
        *,
        skip_bad: bool = False,
        images: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        teachers: Sequence[tuple[int, float]] | None = None,
        image_size: int | None = None,
    ) -> None:
        shards = ReinforcedShards(source, images, decode_images=False)
        self.samples = [
            (
                s["image"],
                s["caption"],
                s["syn_text"],
                s["param_aug"],
                s["image_emb"].astype(np.float16),  # as stored: half the memory
                s["text_emb"].astype(np.float16),
                (s["shard"], s["key"]),  # where it came from, for errors
            )
            for s in sorted(shards, key=lambda s: s["key"])  # the same order from any world size
        ]
        if shards.index is not None:
            settings = shards.index
        elif teachers is None or image_size is None or not self.samples:
            raise UserError(
                f"{source}: shards without an index need teachers=[(dim, scale), …] and "
                "image_size, and at least one sample"
            )
        else:
            _, _, syn_text, param_aug, *_ = self.samples[0]
            settings = {
                "k": len(param_aug),
                "n": len(syn_text),
                "dims": [int(d) for d, _ in teachers],
                "scales": [float(s) for _, s in teachers],
                "augmentation": {"size": image_size},
            }
        self.k, self.n = settings["k"], settings["n"]
        if self.n < 1:
            raise ValueError(f"{source}: training needs synthetic captions (n = {self.n})")
        self.dims, self.scales = settings["dims"], settings["scales"]
        self.augmentation = Augmentation.from_settings(settings["augmentation"])
        self.transform, self.tokenize, self.skip_bad = transform, tokenize, skip_bad
        self.decoded: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples) * self.k * self.n

    def _source(self, i: int, image_bytes: bytes) -> Image.Image:
        pixels = self.decoded.get(i) if self.decoded is not None else None
        if pixels is None:
            pixels = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"))
            if self.decoded is not None:
                self.decoded[i] = pixels
        return Image.fromarray(pixels)

    def __getitem__(self, v: int) -> dict[str, Any] | None:
        i, a, j = v // (self.k * self.n), (v // self.n) % self.k, v % self.n
        image_bytes, caption, syn_text, param_aug, image_emb, text_emb, (shard, key) = self.samples[
            i
        ]
        source = self._source(i, image_bytes)
        try:
            pixels = self.augmentation.reapply(source, param_aug[a])
        except (ValueError, TypeError, IndexError, ZeroDivisionError) as err:
            if self.skip_bad:
                return None
            raise DataError(
                f"{shard}: sample '{key}': stored augmentation {a} cannot be replayed "
                f"({type(err).__name__}: {err}); data.skip_bad: true skips such samples"
            ) from None
        size = self.transform.image_size
        if pixels.size != (size, size):
            pixels = pixels.resize((size, size), Image.BICUBIC)
        tokens = self.tokenize([caption, syn_text[j]])
        return {
            "image": self.transform.normalize(np.asarray(pixels)),
            "text": tokens[0],
            "syn_text": tokens[1],
            "caption": caption,
            "index": v,
            "teacher_image": torch.from_numpy(np.asarray(image_emb[a], dtype=np.float32)),
            "teacher_real": torch.from_numpy(np.asarray(text_emb[0], dtype=np.float32)),
            "teacher_syn": torch.from_numpy(np.asarray(text_emb[1 + j], dtype=np.float32)),
        }
