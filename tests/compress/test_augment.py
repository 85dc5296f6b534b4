"""Replayable augmentations: every op, the crop and the pipeline replay bit-exactly from params."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from compress.data.augment import (
    OPS,
    Augmentation,
    RandAugment,
    RandomHorizontalFlip,
    RandomResizedCrop,
    apply_op,
    from_param_aug,
    op_magnitude,
    to_param_aug,
)

WIDTH, HEIGHT = 48, 40


@pytest.fixture(scope="module")
def image() -> Image.Image:
    """A 48x40 RGB image with gradients and shapes, so every op visibly changes it."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    pixels = np.stack([x * 5, y * 6, (x + y) * 3], axis=-1).astype(np.uint8)  # (H, W, 3)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    draw.rectangle((5, 4, 20, 18), fill=(250, 30, 30))
    draw.ellipse((24, 16, 44, 36), fill=(20, 220, 90))
    draw.line((0, 39, 47, 0), fill=(255, 255, 255), width=2)
    return img


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8)


def replay_json(params):
    """Params as training sees them: through the stored JSON text and back."""
    return from_param_aug(to_param_aug([params]))[0]


MAGNITUDES = {  # per op: signed magnitudes to replay, negatives where the sign is random
    "Identity": [0.0],
    "ShearX": [0.09, -0.3, 0.3],
    "ShearY": [0.09, -0.3],
    "TranslateX": [6.52, -21.75, 0.4],
    "TranslateY": [5.4, -18.1],
    "Rotate": [9.0, -12.0, 30.0],
    "Brightness": [0.27, -0.9],
    "Color": [0.27, -0.9],
    "Contrast": [0.27, -0.5],
    "Sharpness": [0.9, -0.27],
    "Posterize": [7.0, 4.0],
    "Solarize": [178.5, 128.0, 0.0],
    "AutoContrast": [0.0],
    "Equalize": [0.0],
}


@pytest.mark.parametrize("op_index", range(len(OPS)), ids=OPS)
def test_each_op_replays_bit_exactly(image, op_index):
    for m in MAGNITUDES[OPS[op_index]]:
        first = pixels(apply_op(image, op_index, m))
        ((op, stored),) = replay_json([[op_index, m]])
        again = pixels(apply_op(image, op, stored))
        assert first.shape == (HEIGHT, WIDTH, 3)
        np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("op_index", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
def test_ops_with_magnitude_change_pixels(image, op_index):
    """Guards against an op silently turning into identity."""
    m = max(MAGNITUDES[OPS[op_index]], key=abs)
    assert not np.array_equal(pixels(apply_op(image, op_index, m)), pixels(image))


def test_geometric_ops_fill_black_and_sign_matters(image):
    right = pixels(apply_op(image, OPS.index("TranslateX"), 6.9))  # truncates to 6 px
    assert (right[:, :6] == 0).all() and not (right[:, 6] == 0).all()
    left = pixels(apply_op(image, OPS.index("TranslateX"), -6.9))
    assert (left[:, -6:] == 0).all()
    np.testing.assert_array_equal(right[:, 6:], pixels(image)[:, :-6])
    sub_pixel = apply_op(image, OPS.index("TranslateX"), 0.4)  # int(0.4) == 0: no shift
    np.testing.assert_array_equal(pixels(sub_pixel), pixels(image))


def test_magnitude_table_at_bin_9_of_31():
    def mag(name):
        return op_magnitude(OPS.index(name), 9, 31, WIDTH, HEIGHT)

    assert mag("ShearX") == (pytest.approx(0.09), True)
    assert mag("TranslateX") == (pytest.approx(150 / 331 * WIDTH * 0.3, rel=1e-6), True)
    assert mag("TranslateY") == (pytest.approx(150 / 331 * HEIGHT * 0.3, rel=1e-6), True)
    assert mag("Rotate") == (pytest.approx(9.0), True)
    assert mag("Brightness") == (pytest.approx(0.27), True)
    assert mag("Posterize") == (7.0, False)
    assert mag("Solarize") == (pytest.approx(178.5), False)
    assert mag("Equalize") == (0.0, False)
    posterize = [op_magnitude(10, b, 31, WIDTH, HEIGHT)[0] for b in range(31)]
    assert posterize[0] == 8.0 and posterize[-1] == 4.0


def test_crop_replays_and_stays_inside(image):
    crop = RandomResizedCrop(24)
    for seed in range(20):
        out, box = crop.sample(image, np.random.default_rng(seed))
        i, j, h, w = box
        assert all(isinstance(v, int) for v in box)
        assert i >= 0 and j >= 0 and i + h <= HEIGHT and j + w <= WIDTH and h > 0 and w > 0
        assert out.size == (24, 24)
        np.testing.assert_array_equal(pixels(crop.apply(image, replay_json(box))), pixels(out))


def test_crop_fallback_centres_a_clamped_box():
    # 200x10: every candidate box is taller than 10 px, so all 10 tries fail.
    wide = Image.fromarray(np.tile(np.arange(200, dtype=np.uint8)[None, :, None], (10, 1, 3)))
    crop = RandomResizedCrop((8, 12))
    out, box = crop.sample(wide, np.random.default_rng(0))
    assert box == [0, (200 - 13) // 2, 10, 13]  # h = 10, w = round(10 * 4/3)
    assert out.size == (12, 8)
    np.testing.assert_array_equal(pixels(crop.apply(wide, box)), pixels(out))
    tall = RandomResizedCrop(8).fallback_box(10, 200)
    assert tall == [(200 - 13) // 2, 0, 13, 10]
    assert RandomResizedCrop(8).fallback_box(40, 36) == [0, 0, 36, 40]


def test_crop_rejects_box_outside_image(image):
    with pytest.raises(ValueError, match="does not fit"):
        RandomResizedCrop(8).apply(image, [30, 0, 20, 10])


def test_flip_replays(image):
    flip = RandomHorizontalFlip(p=1.0)
    out, p = flip.sample(image, np.random.default_rng(0))
    assert p == 1
    np.testing.assert_array_equal(pixels(out), pixels(image)[:, ::-1])
    assert RandomHorizontalFlip(p=0.0).sample(image, np.random.default_rng(0))[1] == 0


def test_rand_augment_records_signed_magnitudes(image):
    ra = RandAugment()
    signs = set()
    for seed in range(20):
        out, ops = ra.sample(image, np.random.default_rng(seed))
        assert len(ops) == 2
        for op_index, m in ops:
            assert 0 <= op_index < len(OPS)
            signs.add(np.sign(m))
        np.testing.assert_array_equal(pixels(ra.apply(image, replay_json(ops))), pixels(out))
    assert {-1.0, 1.0} <= signs


@pytest.mark.parametrize("flip", [False, True])
def test_pipeline_replays_bit_exactly_across_seeds(image, flip):
    aug = Augmentation(32, flip=flip)
    stored = []
    outputs = []
    for seed in range(20):
        out, params = aug.sample(image, np.random.default_rng(seed))
        assert out.size == (32, 32) and out.mode == "RGB"
        assert len(params) == (3 if flip else 2)
        stored.append(params)
        outputs.append(pixels(out))
    decoded = from_param_aug(to_param_aug(stored))
    for params, expected in zip(decoded, outputs, strict=True):
        np.testing.assert_array_equal(pixels(aug.reapply(image, params)), expected)


def test_pipeline_is_deterministic_under_a_seed(image):
    aug = Augmentation(32)
    a_img, a_params = aug.sample(image, np.random.default_rng(123))
    b_img, b_params = aug.sample(image, np.random.default_rng(123))
    assert a_params == b_params
    np.testing.assert_array_equal(pixels(a_img), pixels(b_img))
    rng = np.random.default_rng(123)
    draws = [aug.sample(image, rng)[1] for _ in range(5)]
    assert len({json.dumps(p) for p in draws}) > 1  # one generator, K different augmentations


def test_datacompdr_layout_entry_reapplies(image):
    aug = Augmentation(24)
    entry = [[10, 5, 30, 28], [[5, -12.0], [11, 128.0]]]
    out = aug.reapply(image, entry)
    assert out.size == (24, 24)
    _, params = aug.sample(image, np.random.default_rng(0))
    assert len(params[0]) == 4 and len(params[1]) == 2 and all(len(op) == 2 for op in params[1])


def test_reapply_rejects_wrong_entry_count(image):
    with pytest.raises(ValueError, match="needs 3"):
        Augmentation(24, flip=True).reapply(image, [[10, 5, 30, 28], [[5, -12.0], [11, 128.0]]])


def test_param_aug_round_trip_string_list_and_record():
    k_params = [
        [[10, 5, 30, 28], [[5, -12.0], [11, 128.0]]],
        [[0, 0, 40, 48], [[0, 0.0], [3, -6.525679588317871]]],
    ]
    text = to_param_aug(k_params)
    assert isinstance(text, str)
    assert from_param_aug(text) == k_params
    assert from_param_aug(text.encode()) == k_params
    assert from_param_aug(k_params) == k_params
    record = json.loads(json.dumps({"param_aug": text}))  # as a .paug.json file holds it
    assert from_param_aug(record) == k_params
    with pytest.raises(ValueError, match="list"):
        from_param_aug('{"a": 1}')
