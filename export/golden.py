"""``golden.json``: what an app's glue must reproduce, written into every export folder.

Shipped CLIP apps rarely fail in the model; they fail in the code around it: a tokenizer that
differs from training, bilinear resizing where the model saw bicubic, a wrong mean or std, a
missing L2 normalisation. Each costs accuracy silently. The golden files pin that glue down: a
set of captions with their token ids, a test picture with the exact pixels and tensor the
model's preprocessing makes of it, and the PyTorch embeddings and zero-shot ranking for both.
The apps' core libraries (``android_demo/core``, ``ios_demo/EdgeClipCore``) test against them,
and an app can rerun them through the shipped models on the phone.

Files, beside the export's ``image/`` and ``text/`` folders:

- ``golden.png``: the test picture, larger than the model's input and not square, so the resize
  downsamples (antialiasing matters) and the centre crop cuts the long side.
- ``golden_input.png``: the S×S RGB pixels after resizing and cropping, before scaling and
  mean/std: what the app's preprocessing must produce, pixel for pixel.
- ``golden.json``: see :func:`write_golden`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from compress.data import scenes
from compress.data.transforms import ImageTransform
from compress.io import sha256_file, write_json
from compress.tokenizer import Tokenizer

GOLDEN_VERSION = 1
GOLDEN_NAME = "golden.json"
IMAGE_NAME = "golden.png"
INPUT_NAME = "golden_input.png"

# Each caption exercises a step of the tokenizer an app reimplements: open_clip's cleaning (ftfy's
# quote, ligature, width and control-character fixes, NFC, HTML entities, whitespace, full
# Unicode lowercasing), its pre-token pattern (contractions, letters, single digits, punctuation
# runs, the special-token names), byte-level BPE of every script, empty input and truncation.
EDGE_CAPTIONS = (
    "a red circle left of a small blue square",
    "A LARGE Red Circle!!!",
    "it's the dog's ball, isn't it? they'll see; we'd've known...",
    "\u201ccurly quotes\u201d, \u2018single ones\u2019 \u2014 and an ellipsis\u2026",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 vs cafe\u0301 (decomposed)",
    "Stra\u00dfe, \u0130stanbul, \u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3",
    "\u65e5\u672c\u8a9e\u306e\u30ad\u30e3\u30d7\u30b7\u30e7\u30f3\u3068\u6f22\u5b57",
    "\u0635\u0648\u0631\u0629 \u0642\u0637\u0629 \u0639\u0644\u0649 \u0627\u0644\u0637\u0627\u0648\u0644\u0629",
    "\u0444\u043e\u0442\u043e \u043a\u043e\u0448\u043a\u0438 \u0438 \u0441\u043e\u0431\u0430\u043a\u0438",
    "emoji \U0001f408\u200d\u2b1b and \U0001f44d\U0001f3fd and \u2764\ufe0f",
    "fish &amp; chips &lt;3 &#39;quoted&#39; &#x263A; &amp;amp; &nbsp;nbsp",
    "\ufb01ne \ufb02ow \ufb00",
    "\uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48\u3000\uff34\uff25\uff38\uff34\uff11\uff12\uff13",
    "  tabs\tand\nnew\r\nlines \u00a0 nbsp  ",
    "",
    "   ",
    "!!!???...",
    "0123456789 3.14159 1,000,000",
    "<start_of_text> literal special-token names <end_of_text>",
    "a photo of a " + " and ".join(f"{c} {s}" for c in scenes.COLOURS for s in scenes.SHAPES),
)
# Zero-shot labels and templates of the golden ranking: scenes classes, so the demo's models
# rank the test picture's own class (a red circle) first.
LABELS = ("red circle", "blue square", "green triangle", "yellow star", "purple diamond")
TEMPLATES = ("a {}.", "a picture of a {}.")
TEST_SCENE = ("zs_colour_shape", 0)  # a red circle


def golden_picture(image_size: int, seed: int = 0) -> Image.Image:
    """The golden test picture for a model of ``image_size`` inputs.

    A scenes picture drawn at about 1.6× the input size, widened to about 1.4:1 by a band of
    seeded noise: the resize downsamples, the crop cuts the long side, and the noise makes a
    wrong filter or a missing antialias show in the pixels.
    """
    side = int(1.6 * image_size) + 3
    scene, _ = scenes.make_scene(*TEST_SCENE, seed=seed)
    drawn = scenes.render(scene, side)
    band = np.random.default_rng(seed).integers(0, 256, size=(side, int(0.4 * side) + 1, 3))
    return Image.fromarray(np.concatenate([drawn, band.astype(np.uint8)], axis=1), "RGB")


def pixels_sha256(pixels: np.ndarray) -> str:
    """SHA-256 of uint8 (S, S, 3) pixels as HWC bytes: how ``golden.json`` names the crop."""
    return hashlib.sha256(np.ascontiguousarray(pixels, np.uint8).tobytes()).hexdigest()


def prompts(labels: Sequence[str] = LABELS, templates: Sequence[str] = TEMPLATES) -> list[str]:
    """Every zero-shot prompt, class by class, template by template."""
    return [t.format(label) for label in labels for t in templates]


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def zero_shot_scores(
    image_embedding: np.ndarray,
    prompt_embeddings: np.ndarray,
    n_labels: int,
    logit_scale: float,
) -> np.ndarray:
    """Scores of one image against each class, as an app computes them (in float64).

    ``prompt_embeddings`` (n_labels · n_templates, D) in :func:`prompts` order; each class
    embedding is the L2-normalised mean of its L2-normalised prompt embeddings.
    """
    emb = _l2(np.asarray(prompt_embeddings, np.float64))  # (labels · templates, D)
    classes = _l2(emb.reshape(n_labels, -1, emb.shape[-1]).mean(axis=1))  # (labels, D)
    return logit_scale * classes @ _l2(np.asarray(image_embedding, np.float64))


def write_golden(
    folder: str | os.PathLike,
    *,
    model_name: str,
    reference_name: str,
    embed_image: Callable[[np.ndarray], np.ndarray],
    embed_text: Callable[[np.ndarray], np.ndarray],
    transform: ImageTransform,
    tokenizer: Tokenizer,
    logit_scale: float,
) -> Path:
    """Write ``golden.json``, ``golden.png`` and ``golden_input.png`` into an export folder.

    ``golden.json`` holds: ``image`` (the picture's file, sha256 and size); ``preprocessed``
    (the cropped pixels' file, the input ``shape``, ``pixels_sha256`` of those uint8 pixels as
    HWC bytes, ``tensor_sha256`` of the normalised float32 NCHW tensor's little-endian bytes,
    and its per-channel ``mean``, ``std``, ``min``, ``max``); ``image_embedding``; ``captions``
    (``text``, the context-length ``ids`` and the ``embedding`` of every edge-case caption and
    every zero-shot prompt); ``zero_shot`` (``labels``, ``templates``, ``logit_scale``, the
    class ``scores`` and their ``ranking``, best first).

    Args:
        folder: the export folder (beside its ``image/`` and ``text/`` tower folders).
        model_name, reference_name: what the embeddings come from, for people reading the file.
        embed_image, embed_text: the reference towers: (N, 3, S, S) float32 images or (N, C)
            int64 token ids → (N, D) L2-normalised embeddings.
        transform: the image tower's preprocessing.
        tokenizer: the text tower's tokenizer (its shipped vocabulary, its context length).
        logit_scale: the model's s in logits = s · image_emb · text_embᵀ.
    """
    folder = Path(folder)
    picture = golden_picture(transform.image_size)
    picture.save(folder / IMAGE_NAME)
    pixels = transform.pixels(Image.open(folder / IMAGE_NAME))  # read back: what apps decode
    Image.fromarray(pixels, "RGB").save(folder / INPUT_NAME)
    tensor = transform.normalize(pixels).numpy()[None]  # (1, 3, S, S)

    texts = [*EDGE_CAPTIONS, *prompts()]
    ids = tokenizer(texts).numpy()
    text_emb = np.asarray(embed_text(ids), np.float32)
    image_emb = np.asarray(embed_image(tensor), np.float32)[0]
    scores = zero_shot_scores(image_emb, text_emb[len(EDGE_CAPTIONS) :], len(LABELS), logit_scale)
    channels = tensor[0].reshape(3, -1).astype(np.float64)

    golden: dict[str, Any] = {
        "golden_version": GOLDEN_VERSION,
        "model": model_name,
        "reference": reference_name,
        "image": {
            "file": IMAGE_NAME,
            "sha256": sha256_file(folder / IMAGE_NAME),
            "width": picture.width,
            "height": picture.height,
        },
        "preprocessed": {
            "file": INPUT_NAME,
            "shape": list(tensor.shape),
            "pixels_sha256": pixels_sha256(pixels),
            "tensor_sha256": hashlib.sha256(tensor.astype("<f4").tobytes()).hexdigest(),
            "mean": channels.mean(axis=1).tolist(),
            "std": channels.std(axis=1).tolist(),
            "min": channels.min(axis=1).tolist(),
            "max": channels.max(axis=1).tolist(),
        },
        "image_embedding": image_emb.tolist(),
        "captions": [
            {"text": text, "ids": row.tolist(), "embedding": emb.tolist()}
            for text, row, emb in zip(texts, ids, text_emb, strict=True)
        ],
        "zero_shot": {
            "labels": list(LABELS),
            "templates": list(TEMPLATES),
            "logit_scale": float(logit_scale),
            "scores": scores.tolist(),
            # best first; a stable sort so tied scores keep label order, as the apps do
            "ranking": np.argsort(-scores, kind="stable").tolist(),
        },
    }
    path = folder / GOLDEN_NAME
    write_json(path, golden, allow_nan=False)
    return path
