"""Training samples from a reinforced dataset: a stored augmentation replayed, a caption picked,
and the teachers' stored embeddings of exactly those — no teacher runs.

The dataset is map-style over every (sample, augmentation, synthetic caption) combination, so
the run's seeded global order (:class:`compress.data.batches.GlobalOrderSampler`) draws them
without any randomness of its own: a resumed or multi-process run sees what one process would.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from compress.data.augment import Augmentation
from compress.data.reinforced import ReinforcedShards
from compress.data.transforms import ImageTransform
from compress.tokenizer import Tokenizer


class ReplayDataset(Dataset):
    """A reinforced shard set (its ``index.json``) as training items for one student.

    Item ``v`` is sample ``v // (K·N)``, its stored augmentation ``(v // N) % K`` and its
    synthetic caption ``v % N``: ``image`` (the augmentation replayed at the size it was stored
    at, then resized to the student's and normalised), ``text`` and ``syn_text`` (the real and
    the synthetic caption's token ids), and the stored ``teacher_image``, ``teacher_real`` and
    ``teacher_syn`` embeddings (float32). Samples are held in memory as stored (JPEG bytes,
    fp16 embeddings); with ``cache`` each image is also kept decoded once first read (uint8
    pixels: about 4× the JPEG bytes of a small image), so later augmentations skip decoding.
    """

    def __init__(
        self,
        index: str | os.PathLike,
        transform: ImageTransform,
        tokenize: Tokenizer,
        cache: bool = False,
    ) -> None:
        shards = ReinforcedShards(index, decode_images=False)
        settings = shards.index
        self.k, self.n = settings["k"], settings["n"]
        if self.n < 1:
            raise ValueError(f"{index}: training needs synthetic captions (n = {self.n})")
        self.dims, self.scales = settings["dims"], settings["scales"]
        aug = settings["augmentation"]
        self.augmentation = Augmentation(
            aug["size"],
            tuple(aug.get("scale", (0.08, 1.0))),
            flip=aug.get("flip", False),
            rand_augment=aug.get("rand_augment", True),
        )
        self.transform, self.tokenize = transform, tokenize
        self.decoded: dict[int, np.ndarray] | None = {} if cache else None
        self.samples = [
            (
                s["image"],
                s["caption"],
                s["syn_text"],
                s["param_aug"],
                s["image_emb"].astype(np.float16),  # as stored: half the memory
                s["text_emb"].astype(np.float16),
            )
            for s in sorted(shards, key=lambda s: s["key"])  # the same order from any world size
        ]

    def __len__(self) -> int:
        return len(self.samples) * self.k * self.n

    def _source(self, i: int, image_bytes: bytes) -> Image.Image:
        pixels = self.decoded.get(i) if self.decoded is not None else None
        if pixels is None:
            pixels = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"))
            if self.decoded is not None:
                self.decoded[i] = pixels
        return Image.fromarray(pixels)

    def __getitem__(self, v: int) -> dict[str, Any]:
        i, a, j = v // (self.k * self.n), (v // self.n) % self.k, v % self.n
        image_bytes, caption, syn_text, param_aug, image_emb, text_emb = self.samples[i]
        source = self._source(i, image_bytes)
        pixels = self.augmentation.reapply(source, param_aug[a])
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
