"""Replayable image augmentations for reinforced training (MobileCLIP, Vasu et al. 2024).

MobileCLIP's DataCompDR stores, per image, K random augmentations as their *parameters*; training
replays one of them and looks up the teacher embeddings computed on exactly those pixels. So every
random transform here has two halves: `sample(img, rng) -> (img, params)` draws and applies, and
`apply(img, params) -> img` replays, with the same PIL calls, so replay is bit-exact.

The sampling rules follow torchvision's documented `RandomResizedCrop` and `RandAugment` (PIL
path), written with PIL + numpy because torchvision does not import here (docs/library-traps.md).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

Params = list[Any]  # JSON-native: ints, floats and nested lists, never tuples

OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)  # DataCompDR's op order: a stored op_index points into this tuple


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """An int or (height, width) → (height, width), as torchvision reads `size`."""
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return int(h), int(w)


def _fill(img: Image.Image) -> tuple[int, ...]:
    """Black in the image's own band count: torchvision fills uncovered pixels with 0."""
    return (0,) * len(img.getbands())


class RandomResizedCrop:
    """Crop a random box of random area and aspect ratio, then resize it (bicubic) to `size`.

    Params are `[i, j, h, w]`: top, left, height, width of the box in source pixels. Sampling
    follows torchvision's documented rule: up to 10 tries of area ~ U(scale) · source area and
    aspect ~ exp(U(log ratio)); the first box that fits is placed uniformly; if none fits, the
    largest centred box whose aspect is clamped into `ratio`.

    Example:
        >>> crop = RandomResizedCrop(16)
        >>> img, box = crop.sample(Image.new("RGB", (48, 40)), np.random.default_rng(0))
        >>> img.size, len(box)
        ((16, 16), 4)
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be 0 < min <= max, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be 0 < min <= max, got {ratio}")
        self.size = _size_hw(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def box(self, width: int, height: int, rng: np.random.Generator) -> Params:
        """Draw `[i, j, h, w]` for a `width` × `height` source image."""
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(log_lo, log_hi))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                i = int(rng.integers(0, height - h + 1))
                j = int(rng.integers(0, width - w + 1))
                return [i, j, h, w]
        return self.fallback_box(width, height)

    def fallback_box(self, width: int, height: int) -> Params:
        """The centred box used when 10 tries fail: the whole image, aspect clamped into `ratio`."""
        aspect = width / height
        if aspect < self.ratio[0]:  # too tall: keep the width
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:  # too wide: keep the height
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        return [(height - h) // 2, (width - w) // 2, h, w]

    def sample(self, img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
        """Draw a box for `img` and apply it."""
        box = self.box(*img.size, rng)
        return self.apply(img, box), box

    def apply(self, img: Image.Image, params: Params) -> Image.Image:
        """Crop `[i, j, h, w]` out of `img` and resize it to `size` (bicubic)."""
        i, j, h, w = (int(p) for p in params)
        width, height = img.size
        if h < 1 or w < 1 or i < 0 or j < 0 or i + h > height or j + w > width:
            raise ValueError(
                f"crop box [i, j, h, w]={params} does not fit a {width}x{height} image"
            )
        out_h, out_w = self.size
        # Crop then resize, as torchvision's resized_crop does on PIL images.
        return img.crop((j, i, j + w, i + h)).resize((out_w, out_h), Image.BICUBIC)


class RandomHorizontalFlip:
    """Mirror left-right with probability `p`; the param is 1 (flipped) or 0."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def sample(self, img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
        """Draw the coin and apply it."""
        flip = int(rng.random() < self.p)
        return self.apply(img, flip), flip

    def apply(self, img: Image.Image, params: int) -> Image.Image:
        """Flip when `params` is truthy."""
        return img.transpose(Image.FLIP_LEFT_RIGHT) if params else img


def _linspace32(start: float, end: float, bins: int) -> list[float]:
    """torchvision's magnitude bins are float32 `torch.linspace`; same values, as Python floats.

    Matching float32 keeps freshly sampled magnitudes identical to the ones in Apple's shards.
    """
    return torch.linspace(start, end, bins, dtype=torch.float32).tolist()


def op_magnitude(
    op_index: int, bin_index: int, num_bins: int, width: int, height: int
) -> tuple[float, bool]:
    """The unsigned magnitude of op `op_index` at bin `bin_index`, and whether its sign is random.

    Follows torchvision's RandAugment table: shear 0..0.3, translate 0..150/331 of the image side,
    rotate 0..30 degrees, enhance 0..0.9 (factor 1 ± m), posterize 8..4 bits, solarize 255..0.
    """
    name = OPS[op_index]
    if name in ("ShearX", "ShearY"):
        return _linspace32(0.0, 0.3, num_bins)[bin_index], True
    if name == "TranslateX":
        return _linspace32(0.0, 150.0 / 331.0 * width, num_bins)[bin_index], True
    if name == "TranslateY":
        return _linspace32(0.0, 150.0 / 331.0 * height, num_bins)[bin_index], True
    if name == "Rotate":
        return _linspace32(0.0, 30.0, num_bins)[bin_index], True
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        return _linspace32(0.0, 0.9, num_bins)[bin_index], True
    if name == "Posterize":
        # 8 bits at bin 0 down to 4 at the last bin; Python's round() is half-to-even like torch's.
        return float(8 - round(bin_index / ((num_bins - 1) / 4))), False
    if name == "Solarize":
        return _linspace32(255.0, 0.0, num_bins)[bin_index], False
    return 0.0, False  # Identity, AutoContrast, Equalize take no magnitude


def apply_op(img: Image.Image, op_index: int, magnitude: float) -> Image.Image:
    """Apply RandAugment op `op_index` with its signed `magnitude`, as torchvision does on PIL.

    Geometric ops sample nearest-neighbour and fill uncovered pixels with 0. The affine
    coefficients map an output pixel (x, y) to the input pixel PIL reads.
    """
    if not 0 <= op_index < len(OPS):
        raise ValueError(f"RandAugment op_index must be in [0, {len(OPS)}), got {op_index}")
    name = OPS[op_index]
    m = float(magnitude)
    if name == "Identity":
        return img
    if name in ("ShearX", "ShearY", "TranslateX", "TranslateY"):
        coeffs = {
            "ShearX": (1.0, m, 0.0, 0.0, 1.0, 0.0),  # x_in = x + m·y, about the top-left corner
            "ShearY": (1.0, 0.0, 0.0, m, 1.0, 0.0),  # y_in = m·x + y
            "TranslateX": (1.0, 0.0, -float(int(m)), 0.0, 1.0, 0.0),  # whole pixels, truncated
            "TranslateY": (1.0, 0.0, 0.0, 0.0, 1.0, -float(int(m))),
        }[name]
        return img.transform(img.size, Image.AFFINE, coeffs, Image.NEAREST, fillcolor=_fill(img))
    if name == "Rotate":
        # Counter-clockwise about the image centre, same size: PIL's own affine rotate.
        return img.rotate(m, Image.NEAREST, fillcolor=_fill(img))
    if name == "Brightness":
        return ImageEnhance.Brightness(img).enhance(1.0 + m)
    if name == "Color":
        return ImageEnhance.Color(img).enhance(1.0 + m)
    if name == "Contrast":
        return ImageEnhance.Contrast(img).enhance(1.0 + m)
    if name == "Sharpness":
        return ImageEnhance.Sharpness(img).enhance(1.0 + m)
    if name == "Posterize":
        return ImageOps.posterize(img, int(m))
    if name == "Solarize":
        return ImageOps.solarize(img, m)
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    return ImageOps.equalize(img)


class RandAugment:
    """Apply `num_ops` ops drawn uniformly (with replacement) from `OPS` at one fixed magnitude bin.

    Params are `[[op_index, magnitude], ...]` with the *signed* magnitude actually applied, so a
    replay needs neither the bin nor the image size the table was built for.

    Example:
        >>> ra = RandAugment(num_ops=2, magnitude=9)
        >>> img, ops = ra.sample(Image.new("RGB", (32, 32), (90, 40, 200)), np.random.default_rng(0))
        >>> len(ops), all(len(op) == 2 for op in ops)
        (2, True)
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31) -> None:
        if num_ops < 1:
            raise ValueError(f"num_ops must be >= 1, got {num_ops}")
        if num_magnitude_bins < 2:
            raise ValueError(f"num_magnitude_bins must be >= 2, got {num_magnitude_bins}")
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"magnitude must be in [0, {num_magnitude_bins}), got {magnitude}")
        self.num_ops = int(num_ops)
        self.magnitude = int(magnitude)
        self.num_magnitude_bins = int(num_magnitude_bins)

    def sample(self, img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
        """Draw `num_ops` (op, signed magnitude) pairs, applying each to the previous result."""
        params = []
        for _ in range(self.num_ops):
            op_index = int(rng.integers(len(OPS)))
            # The table is built from the current image size (translate is relative to it).
            m, signed = op_magnitude(op_index, self.magnitude, self.num_magnitude_bins, *img.size)
            if signed and rng.integers(2):
                m = -m
            img = apply_op(img, op_index, m)
            params.append([op_index, m])
        return img, params

    def apply(self, img: Image.Image, params: Params) -> Image.Image:
        """Replay stored `[[op_index, magnitude], ...]` in order."""
        for op_index, m in params:
            img = apply_op(img, int(op_index), m)
        return img


class Augmentation:
    """The training augmentation: random-resized-crop → optional flip → optional RandAugment.

    `sample` returns the augmented RGB image and its params, one entry per random transform in
    pipeline order; with the defaults (no flip) that is DataCompDR-12M's layout
    `[[i, j, h, w], [[op, mag], [op, mag]]]`. `reapply` turns the same params back into the same
    pixels, bit for bit.

    Example:
        >>> aug = Augmentation(16)
        >>> img = Image.new("RGB", (48, 40), (10, 120, 200))
        >>> out, params = aug.sample(img, np.random.default_rng(0))
        >>> np.array_equal(np.asarray(aug.reapply(img, params)), np.asarray(out))
        True
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = False,  # DataCompDR-12M stores no flip entry; True adds one after the crop
        rand_augment: bool = True,
        num_ops: int = 2,
        magnitude: int = 9,
        num_magnitude_bins: int = 31,
    ) -> None:
        self.transforms: list[RandomResizedCrop | RandomHorizontalFlip | RandAugment] = [
            RandomResizedCrop(size, scale, ratio)
        ]
        if flip:
            self.transforms.append(RandomHorizontalFlip())
        if rand_augment:
            self.transforms.append(RandAugment(num_ops, magnitude, num_magnitude_bins))

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Augmentation:
        """The augmentation a reinforced index's ``augmentation`` settings describe: ``size``,
        and ``scale``, ``flip``, ``rand_augment`` (the defaults where one is missing)."""
        return cls(
            settings["size"],
            tuple(settings.get("scale", (0.08, 1.0))),
            flip=settings.get("flip", False),
            rand_augment=settings.get("rand_augment", True),
        )

    def sample(self, img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
        """Augment `img` with fresh randomness from `rng`; returns (RGB image, params)."""
        img = img.convert("RGB")
        params = []
        for transform in self.transforms:
            img, p = transform.sample(img, rng)
            params.append(p)
        return img, params

    def reapply(self, img: Image.Image, params: Params) -> Image.Image:
        """Replay one stored augmentation (e.g. an entry of a decoded `param_aug`) on `img`."""
        if len(params) != len(self.transforms):
            names = [type(t).__name__ for t in self.transforms]
            raise ValueError(
                f"augmentation params have {len(params)} entries but the pipeline {names} "
                f"needs {len(self.transforms)}"
            )
        img = img.convert("RGB")
        for transform, p in zip(self.transforms, params, strict=True):
            img = transform.apply(img, p)
        return img


def to_param_aug(augmentations: list[Params]) -> str:
    """K augmentations' params → the JSON text stored as `{"param_aug": "<JSON text>"}`."""
    return json.dumps(augmentations)


def from_param_aug(value: str | bytes | list | dict) -> list[Params]:
    """Decode a `param_aug` value: the JSON text Apple stores, an already-decoded list, or the
    whole `{"param_aug": ...}` record.
    """
    if isinstance(value, dict):
        if "param_aug" not in value:
            raise ValueError(f"param_aug record has no 'param_aug' key: keys {sorted(value)}")
        value = value["param_aug"]
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    if not isinstance(value, list):
        raise ValueError(f"param_aug must decode to a list, got {type(value).__name__}")
    return value


def seed_of(seed: int, key: str) -> np.random.Generator:
    """The generator of one sample: the run's seed and the sample's key, nothing else."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))
