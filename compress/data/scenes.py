"""Scenes: a procedural, seeded image–caption dataset with zero-shot tasks (docs/design.md).

This module makes scenes, renders them and captions them; :mod:`compress.data.scenes_files`
writes them to disk in the formats real data uses."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

VERSION = 2

SHAPES = ("circle", "square", "triangle", "cross", "star", "diamond")
PLURALS = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "cross": "crosses",
    "star": "stars",
    "diamond": "diamonds",
}
# Base RGB per colour name. The closest pair (orange, yellow) is ~85 apart; with at most
# COLOUR_JITTER per channel (≤ 21 in RGB distance) every jittered colour stays nearest its name.
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 175, 60),
    "blue": (45, 95, 235),
    "yellow": (240, 215, 45),
    "purple": (150, 60, 205),
    "orange": (245, 135, 25),
}
COLOUR_JITTER = 12
SIZES = ("small", "large")
# Half-extent of an object as a fraction of the image side; the ±SCALE_JITTER range of the two
# sizes stays far apart (small ≤ 0.128, large ≥ 0.188) so "small" and "large" never blur.
RADIUS = {"small": 0.12, "large": 0.2}
SCALE_JITTER = 0.06
COUNTS = ("one", "two", "three")

ZEROSHOT_TASKS = ("zs_shape", "zs_colour", "zs_colour_shape", "zs_count")
SPLITS = ("train", "val", "retrieval", *ZEROSHOT_TASKS)
WDS_SPLITS = ("train", "val")
CLASSES = {
    "zs_shape": list(SHAPES),
    "zs_colour": list(COLOURS),
    "zs_colour_shape": [f"{c} {s}" for c in COLOURS for s in SHAPES],
    "zs_count": list(COUNTS),
}

_MARGIN = 0.02  # keep objects this far from the border
_GAP = 0.03  # minimum empty band between two objects, so relations are unambiguous
_MIN_DX = 0.08  # minimum horizontal distance between centres in three-object scenes
_SUPERSAMPLE = 4  # anti-aliasing factor for the cached shape masks


@dataclass(frozen=True)
class Object:
    """One object of a scene, in resolution-independent coordinates.

    Attributes:
        shape: one of SHAPES.
        colour: one of COLOURS (the name; `rgb` is the jittered value actually drawn).
        size: one of SIZES.
        x: centre, as a fraction of the image width (0 = left).
        y: centre, as a fraction of the image height (0 = top).
        scale: multiplies the size's nominal radius (small jitter).
        rgb: the drawn colour.
    """

    shape: str
    colour: str
    size: str
    x: float
    y: float
    scale: float
    rgb: tuple[int, int, int]

    @property
    def radius(self) -> float:
        """Half-extent as a fraction of the image side."""
        return RADIUS[self.size] * self.scale

    @property
    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A background and one to three objects, in the order they were sampled."""

    objects: tuple[Object, ...]
    background: tuple[int, int, int]
    gradient: float  # brightness change from top to bottom, in 0–255 units


# ---------------------------------------------------------------------------------------------
# Sampling


def _fits(
    x: float, y: float, r: float, placed: list[tuple[float, float, float]], min_dx: float
) -> bool:
    # Boxes must be separated by a gap along at least one axis: then every pair has a clear
    # left/right or above/below relation. `min_dx` keeps a left-to-right order visible.
    return all(
        abs(x - px) >= min_dx and (abs(x - px) >= r + pr + _GAP or abs(y - py) >= r + pr + _GAP)
        for px, py, pr in placed
    )


def _place(rng: np.random.Generator, radii: list[float]) -> list[tuple[float, float]] | None:
    """Random non-overlapping centres for objects of the given radii, or None if they do not fit."""
    # Three objects are captioned left to right, so their centres must differ visibly in x.
    min_dx = _MIN_DX if len(radii) == 3 else 0.0
    for _ in range(10):
        placed: list[tuple[float, float, float]] = []
        for r in radii:
            lo, hi = r + _MARGIN, 1.0 - r - _MARGIN
            for _ in range(50):
                x, y = rng.uniform(lo, hi, size=2)
                if _fits(x, y, r, placed, min_dx):
                    placed.append((float(x), float(y), r))
                    break
            else:
                break
        if len(placed) == len(radii):
            return [(x, y) for x, y, _ in placed]
    return None


def _jittered_rgb(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    return tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))


def _background(rng: np.random.Generator) -> tuple[tuple[int, int, int], float]:
    # Dark, slightly tinted backgrounds keep every object colour far from the background.
    value = int(rng.integers(12, 70))
    tint = rng.integers(-10, 11, size=3)
    rgb = tuple(int(v) for v in np.clip(value + tint, 0, 255))
    return rgb, float(rng.uniform(-12.0, 12.0))


def _scene(
    rng: np.random.Generator, specs: list[tuple[str, str, str]], *, shrink: bool = False
) -> Scene:
    """Place objects given as (shape, colour, size); drop trailing ones that do not fit.

    With `shrink`, large objects that do not fit are made small instead of dropped (the object
    count is the point of the scene).
    """
    scales = [float(rng.uniform(1 - SCALE_JITTER, 1 + SCALE_JITTER)) for _ in specs]
    rgbs = [_jittered_rgb(rng, colour) for _, colour, _ in specs]
    background, gradient = _background(rng)
    while True:
        radii = [RADIUS[size] * s for (_, _, size), s in zip(specs, scales, strict=True)]
        centres = _place(rng, radii)
        if centres is not None:
            break
        if shrink and any(size == "large" for _, _, size in specs):
            specs = [(shape, colour, "small") for shape, colour, _ in specs]
        else:
            specs, scales, rgbs = specs[:-1], scales[:-1], rgbs[:-1]
    objects = tuple(
        Object(shape, colour, size, x, y, scale, rgb)
        for (shape, colour, size), (x, y), scale, rgb in zip(
            specs, centres, scales, rgbs, strict=True
        )
    )
    return Scene(objects, background, gradient)


def _random_spec(rng: np.random.Generator) -> tuple[str, str, str]:
    return (
        SHAPES[rng.integers(len(SHAPES))],
        list(COLOURS)[rng.integers(len(COLOURS))],
        SIZES[rng.integers(len(SIZES))],
    )


def sample_scene(rng: np.random.Generator, min_objects: int = 1, max_objects: int = 3) -> Scene:
    """Sample a random scene of `min_objects`..`max_objects` non-overlapping objects.

    Example:
        >>> scene = sample_scene(np.random.default_rng(0))
        >>> 1 <= len(scene.objects) <= 3
        True
    """
    if not 1 <= min_objects <= max_objects <= 3:
        raise ValueError(
            f"need 1 <= min_objects <= max_objects <= 3, got {min_objects}, {max_objects}"
        )
    n = int(rng.integers(min_objects, max_objects + 1))
    return _scene(rng, [_random_spec(rng) for _ in range(n)])


def _split_rng(split: str, index: int, seed: int) -> np.random.Generator:
    # One independent stream per (seed, split, sample): a split's content never depends on
    # which other splits, or how many samples, were generated.
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def make_scene(split: str, index: int, seed: int) -> tuple[Scene, str | None]:
    """The scene of sample `index` of `split`, and its class label for zero-shot splits.

    Zero-shot splits cycle through their classes (sample i has class i mod #classes), so any
    prefix whose length is a multiple of the class count is exactly balanced.

    Example:
        >>> scene, label = make_scene("zs_shape", 0, seed=0)
        >>> label, scene.objects[0].shape
        ('circle', 'circle')
    """
    if split not in SPLITS:
        raise ValueError(f"unknown scenes split {split!r}; expected one of: {', '.join(SPLITS)}")
    rng = _split_rng(split, index, seed)
    if split in ("train", "val", "retrieval"):
        return sample_scene(rng), None
    label = CLASSES[split][index % len(CLASSES[split])]
    shape, colour, size = _random_spec(rng)
    if split == "zs_shape":
        return _scene(rng, [(label, colour, size)]), label
    if split == "zs_colour":
        return _scene(rng, [(shape, label, size)]), label
    if split == "zs_colour_shape":
        colour, shape = label.split(" ")
        return _scene(rng, [(shape, colour, size)]), label
    count = COUNTS.index(label) + 1
    return _scene(rng, [(shape, colour, size)] * count, shrink=True), label


# ---------------------------------------------------------------------------------------------
# Rendering


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Outline of a shape in unit coordinates (x right, y down, extent [-1, 1])."""
    if shape == "square":
        s = 0.88  # about the area of the unit circle; half-side 1 would look much bigger
        return [(-s, -s), (s, -s), (s, s), (-s, s)]
    if shape == "diamond":
        return [(0.0, -1.0), (0.85, 0.0), (0.0, 1.0), (-0.85, 0.0)]
    if shape == "triangle":
        return [(0.0, -1.0), (0.97, 0.8), (-0.97, 0.8)]
    if shape == "cross":
        w = 0.32
        return [
            (-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w),
            (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w),
        ]  # fmt: skip
    if shape == "star":
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return [
            (float(r * np.cos(a)), float(r * np.sin(a))) for r, a in zip(radii, angles, strict=True)
        ]
    raise ValueError(f"unknown shape {shape!r}")


@functools.cache
def _mask(shape: str, r: int) -> np.ndarray:
    """Anti-aliased coverage of a shape of pixel radius r: float32 (2r+1, 2r+1) in [0, 1]."""
    side = (2 * r + 1) * _SUPERSAMPLE
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    c, scale = side / 2, r * _SUPERSAMPLE
    if shape == "circle":
        draw.ellipse([c - scale, c - scale, c + scale, c + scale], fill=255)
    else:
        draw.polygon([(c + u * scale, c + v * scale) for u, v in _unit_polygon(shape)], fill=255)
    hi = np.asarray(canvas, dtype=np.float32).reshape(
        2 * r + 1, _SUPERSAMPLE, 2 * r + 1, _SUPERSAMPLE
    )
    mask = hi.mean(axis=(1, 3)) / 255.0  # (2r+1, 2r+1)
    mask.flags.writeable = False
    return mask


@functools.lru_cache(maxsize=8)
def _ramp(image_size: int) -> np.ndarray:
    ramp = (np.arange(image_size, dtype=np.float32) / max(image_size - 1, 1) - 0.5)[:, None, None]
    ramp.flags.writeable = False
    return ramp  # (H, 1, 1)


def render(scene: Scene, image_size: int = 64) -> np.ndarray:
    """Draw a scene: uint8 (H, W, 3) with H = W = image_size.

    Object interiors carry their exact `rgb`; only edge pixels are blended (anti-aliasing).
    """
    s = image_size
    img = np.empty((s, s, 3), dtype=np.float32)
    img[:] = np.asarray(scene.background, dtype=np.float32) + scene.gradient * _ramp(s)
    for obj in scene.objects:
        r = max(1, round(obj.radius * s))
        cx, cy = round(obj.x * (s - 1)), round(obj.y * (s - 1))
        mask = _mask(obj.shape, r)
        # Clip the mask's box to the image (objects are placed inside, but rounding may touch).
        x0, y0 = max(cx - r, 0), max(cy - r, 0)
        x1, y1 = min(cx + r + 1, s), min(cy + r + 1, s)
        alpha = mask[y0 - (cy - r) : y1 - (cy - r), x0 - (cx - r) : x1 - (cx - r), None]
        region = img[y0:y1, x0:x1]
        region += alpha * (np.asarray(obj.rgb, dtype=np.float32) - region)
    np.clip(img + 0.5, 0, 255, out=img)
    return img.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Captions


def _relation(a: Object, b: Object) -> str:
    """Where `a` is relative to `b`: the axis along which the two are separated the most."""
    gap_x = abs(a.x - b.x) - (a.radius + b.radius)
    gap_y = abs(a.y - b.y) - (a.radius + b.radius)
    if gap_x >= gap_y:
        return "left of" if a.x < b.x else "right of"
    return "above" if a.y < b.y else "below"


_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_LONG = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}


def _identical(scene: Scene) -> bool:
    first = scene.objects[0]
    return all(
        (o.shape, o.colour, o.size) == (first.shape, first.colour, first.size)
        for o in scene.objects
    )


def _left_to_right(scene: Scene) -> list[Object]:
    return sorted(scene.objects, key=lambda o: (o.x, o.y))


def caption(scene: Scene) -> str:
    """The canonical caption of a scene.

    One object: "a large red circle". Two: "<first> <relation> <second>" in sampled order, the
    relation (left of / right of / above / below) read from the positions. Three: listed left to
    right, "a small red circle, a large blue square and a small green star". Copies of one
    object: "two small red circles".

    Example:
        >>> caption(make_scene("zs_colour_shape", 0, seed=0)[0]).endswith("red circle")
        True
    """
    objs = scene.objects
    if len(objs) > 1 and _identical(scene):
        o = objs[0]
        return f"{COUNTS[len(objs) - 1]} {o.size} {o.colour} {PLURALS[o.shape]}"
    if len(objs) == 1:
        return objs[0].phrase
    if len(objs) == 2:
        a, b = objs
        return f"{a.phrase} {_relation(a, b)} {b.phrase}"
    a, b, c = (o.phrase for o in _left_to_right(scene))
    return f"{a}, {b} and {c}"


def paraphrases(scene: Scene) -> list[str]:
    """Alternative true captions of a scene (other templates and word orders)."""
    objs = scene.objects
    if len(objs) > 1 and _identical(scene):
        o, count = objs[0], COUNTS[len(objs) - 1]
        many = f"{count} {o.size} {o.colour} {PLURALS[o.shape]}"
        out = [
            f"there are {many}",
            f"a picture of {many}",
            f"{count} {o.colour} {PLURALS[o.shape]}",
        ]
    elif len(objs) == 1:
        o = objs[0]
        out = [
            f"there is {o.phrase}",
            f"a picture of {o.phrase}",
            f"a {o.size} {o.shape} in {o.colour}",
            f"a {o.colour} {o.shape}",
        ]
    elif len(objs) == 2:
        a, b = objs
        rel = _relation(a, b)
        out = [
            f"{b.phrase} {_LONG[_INVERSE[rel]]} {a.phrase}",
            f"{a.phrase} {_LONG[rel]} {b.phrase}",
            f"there is {a.phrase} {rel} {b.phrase}",
            f"{a.phrase} and {b.phrase}",
        ]
    else:
        a, b, c = (o.phrase for o in _left_to_right(scene))
        out = [
            f"from left to right, {a}, {b} and {c}",
            f"from right to left, {c}, {b} and {a}",
            f"three objects: {a}, {b} and {c}",
        ]
    canonical = caption(scene)
    return [p for p in dict.fromkeys(out) if p != canonical]


# ---------------------------------------------------------------------------------------------
# Splits and files


def sample_key(split: str, index: int) -> str:
    return f"{split}-{index:06d}"


def iter_split(
    split: str, n: int, seed: int, image_size: int = 64
) -> Iterator[tuple[str, np.ndarray, str, str | None]]:
    """Generate a split in memory: (key, uint8 (H, W, 3) image, caption, label or None).

    Example:
        >>> key, image, text, label = next(iter_split("train", 1, seed=0))
        >>> key, image.shape
        ('train-000000', (64, 64, 3))
    """
    for i in range(n):
        scene, label = make_scene(split, i, seed)
        yield sample_key(split, i), render(scene, image_size), caption(scene), label
