"""Reinforcing a dataset (MobileCLIP's multi-modal reinforcement): the teachers' knowledge
computed once per image and stored with it, so students later train without any teacher.

Per sample: K random augmentations (their parameters, :mod:`compress.data.augment`), the teacher
ensemble's embeddings of each augmented image, N synthetic captions from a captioner, and the
ensemble's embeddings of the real and every synthetic caption — written in DataCompDR's record
layout (:mod:`compress.data.reinforced`). Each sample's randomness comes from the run's seed and
the sample's key alone, so a resumed or re-sharded run writes exactly the same samples.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from compress.data.augment import Augmentation, seed_of
from compress.data.captioners import Captioner
from compress.data.reinforced import ReinforcedWriter
from compress.models.clip import CLIP


@dataclass
class Sample:
    """One source sample: its key (increasing), image, caption and any synthetic captions.

    ``encoded`` is the file ``image`` was decoded from, as (extension, bytes): it is stored as
    it is (no re-encoding, no loss); without it the image is stored as a JPEG.
    """

    key: str
    image: Image.Image
    caption: str
    syn_text: list[str] | None = None
    uid: str | None = None
    encoded: tuple[str, bytes] | None = None


def _stored(sample: Sample) -> tuple[str, bytes, Image.Image]:
    """The image file a sample is stored as, and the image training will decode from it."""
    if sample.encoded is not None:
        return (*sample.encoded, sample.image.convert("RGB"))
    data = _jpeg(sample.image)
    return "jpg", data, Image.open(io.BytesIO(data)).convert("RGB")


@torch.no_grad()
def image_embeddings(teachers: Sequence[CLIP], images: list[Image.Image]) -> np.ndarray:
    """The ensemble's L2-normalised embeddings of ``images``, concatenated over teachers: each
    teacher sees the pixels at its own size (bicubic, antialiased) and normalisation."""
    pixels = torch.from_numpy(np.stack([np.asarray(i.convert("RGB")) for i in images]))
    pixels = pixels.permute(0, 3, 1, 2).float() / 255
    out = []
    for teacher in teachers:
        size = teacher.visual.image_size
        x = pixels
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
        mean, std = (torch.tensor(teacher.preprocess[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
        out.append(F.normalize(teacher.encode_image((x - mean) / std), dim=-1))
    return torch.cat(out, dim=-1).numpy()


@torch.no_grad()
def text_embeddings(teachers: Sequence[CLIP], captions: list[str]) -> np.ndarray:
    """The ensemble's L2-normalised embeddings of ``captions``, concatenated over teachers."""
    out = []
    for teacher in teachers:
        tokens = teacher.text.trim(teacher.tokenize(captions))
        out.append(F.normalize(teacher.encode_text(tokens), dim=-1))
    return torch.cat(out, dim=-1).numpy()


class CaptionMemo:
    """The ensemble's embeddings of captions seen before, so each distinct caption runs through
    the teachers once: synthetic captions repeat across images (on the demo's scenes, 160k
    captions hold 85k distinct ones). Teachers run in eval mode, so a caption's embedding does
    not depend on the batch it came in. Holds at most ``limit`` captions (then starts afresh)."""

    def __init__(self, teachers: Sequence[CLIP], limit: int = 1 << 18) -> None:
        self.teachers, self.limit = teachers, limit
        self.known: dict[str, np.ndarray] = {}

    def __call__(self, captions: list[str]) -> np.ndarray:
        new = list(dict.fromkeys(c for c in captions if c not in self.known))
        if len(self.known) + len(new) > self.limit:
            self.known.clear()
            new = list(dict.fromkeys(captions))
        if new:
            self.known.update(zip(new, text_embeddings(self.teachers, new), strict=True))
        return np.stack([self.known[c] for c in captions])


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _chunks(items: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    chunk: list[Sample] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def reinforce(
    samples: Iterable[Sample],
    teachers: Sequence[CLIP],
    augmentation: Augmentation,
    captioner: Captioner,
    writer: ReinforcedWriter,
    *,
    k: int,
    n: int,
    seed: int,
    done: Callable[[str], bool] = lambda key: False,
    batch_size: int = 32,
) -> int:
    """Reinforce ``samples`` into ``writer``, ``batch_size`` samples per teacher call (their
    K·B images and (1+N)·B captions at once); skips the keys ``done`` says were written before
    (a resumed run). Returns how many samples it wrote."""
    written, embed_text = 0, CaptionMemo(teachers)
    for chunk in _chunks((s for s in samples if not done(s.key)), batch_size):
        files = [_stored(s) for s in chunk]
        stored = [image for _, _, image in files]  # what training decodes
        augmented, params = [], []
        for sample, image in zip(chunk, stored, strict=True):
            rng = seed_of(seed, sample.key)
            for _ in range(k):
                pixels, p = augmentation.sample(image, rng)
                augmented.append(pixels)
                params.append(p)
        synthetic = captioner(stored, [s.caption for s in chunk], [s.syn_text for s in chunk], n)
        captions = [c for s, syn in zip(chunk, synthetic, strict=True) for c in (s.caption, *syn)]
        image_emb = image_embeddings(teachers, augmented)
        text_emb = embed_text(captions)
        for i, sample in enumerate(chunk):
            writer.add(
                sample.key,
                uid=sample.uid or sample.key,
                caption=sample.caption,
                syn_text=synthetic[i],
                param_aug=params[i * k : (i + 1) * k],
                image_emb=image_emb[i * k : (i + 1) * k],
                text_emb=text_emb[i * (1 + n) : (i + 1) * (1 + n)],
                image=files[i][1],
                image_ext=files[i][0],
            )
        written += len(chunk)
    return written
