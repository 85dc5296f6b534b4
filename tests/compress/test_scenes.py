"""Tests for the procedural scenes dataset: determinism, captions vs pixels, files on disk."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tarfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from compress.data import scenes, scenes_files
from compress.data.scenes import (
    CLASSES,
    COLOURS,
    SHAPES,
    caption,
    iter_split,
    make_scene,
    paraphrases,
    render,
    sample_scene,
)
from compress.data.scenes_files import write_scenes

SIZE = 64


def _colour_mask(image: np.ndarray, colour: str) -> np.ndarray:
    """Pixels within the jitter range of a named colour (object interiors)."""
    diff = image.astype(int) - np.array(COLOURS[colour])
    return (np.abs(diff) <= scenes.COLOUR_JITTER + 1).all(axis=-1)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_identical_images_and_captions():
    a = list(iter_split("train", 20, seed=3, image_size=SIZE))
    b = list(iter_split("train", 20, seed=3, image_size=SIZE))
    for (ka, ia, ca, la), (kb, ib, cb, lb) in zip(a, b, strict=True):
        assert (ka, ca, la) == (kb, cb, lb)
        assert ia.tobytes() == ib.tobytes()
    other = list(iter_split("train", 20, seed=4, image_size=SIZE))
    assert [c for _, _, c, _ in a] != [c for _, _, c, _ in other]


def test_splits_draw_from_different_streams():
    train = [img.tobytes() for _, img, _, _ in iter_split("train", 10, seed=0, image_size=SIZE)]
    val = [img.tobytes() for _, img, _, _ in iter_split("val", 10, seed=0, image_size=SIZE)]
    retrieval = [img.tobytes() for _, img, _, _ in iter_split("retrieval", 10, seed=0)]
    assert not set(train) & set(val)
    assert not set(train) & set(retrieval)
    assert not set(val) & set(retrieval)


def test_split_does_not_depend_on_other_splits_or_its_length(tmp_path):
    alone = write_scenes(tmp_path / "a", seed=1, image_size=32, sizes={"val": 6})
    both = write_scenes(tmp_path / "b", seed=1, image_size=32, sizes={"train": 9, "val": 6})
    assert alone["shards"]["val"][0]["sha256"] == both["shards"]["val"][0]["sha256"]
    assert (tmp_path / "a/val.csv").read_bytes() == (tmp_path / "b/val.csv").read_bytes()
    for i in range(6):
        rel = f"images/val/val-{i:06d}.png"
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    # A longer split starts with the shorter one.
    short = [c for _, _, c, _ in iter_split("retrieval", 5, seed=1)]
    long = [c for _, _, c, _ in iter_split("retrieval", 12, seed=1)]
    assert long[:5] == short


def test_render_is_uint8_hwc_at_any_size():
    scene, _ = make_scene("train", 0, seed=0)
    for size in (32, 64, 96):
        img = render(scene, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8


# ---------------------------------------------------------------------------------------------
# Captions agree with pixels


@pytest.mark.parametrize("index", range(36))
def test_single_object_colour_size_and_caption(index):
    scene, label = make_scene("zs_colour_shape", index, seed=0)
    colour, shape = label.split()
    (obj,) = scene.objects
    assert (obj.colour, obj.shape) == (colour, shape)
    assert caption(scene) == f"a {obj.size} {colour} {shape}"
    img = render(scene, SIZE)
    mask = _colour_mask(img, colour)
    # Every other colour is absent, so the colour name is unambiguous.
    for other in COLOURS:
        if other != colour:
            assert not _colour_mask(img, other).any(), (other, label)
    ys, xs = np.nonzero(mask)
    extent = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    assert (extent >= 18) if obj.size == "large" else (8 <= extent <= 16), (extent, obj.size)
    cx, cy = _centroid(mask)
    assert abs(cx - obj.x * (SIZE - 1)) < 3 and abs(cy - obj.y * (SIZE - 1)) < 4


def test_shapes_are_distinguishable_when_small():
    r = round(scenes.RADIUS["small"] * SIZE)
    masks = {s: scenes._mask(s, r) > 0.5 for s in SHAPES}
    for a in SHAPES:
        for b in SHAPES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                # Circle vs square is the closest pair (same area, differ at the corners).
                assert iou < 0.9, (a, b, iou)


_TWO = re.compile(
    r"a (small|large) (\w+) (\w+) (left of|right of|above|below) a (small|large) (\w+) (\w+)"
)


def test_two_object_relation_matches_pixels():
    checked = 0
    for i in range(300):
        scene, _ = make_scene("train", i, seed=5)
        text = caption(scene)
        m = _TWO.fullmatch(text)
        if m is None or m.group(2) == m.group(6):
            continue
        img = render(scene, SIZE)
        (ax, ay), (bx, by) = (
            _centroid(_colour_mask(img, m.group(2))),
            _centroid(_colour_mask(img, m.group(6))),
        )
        relation = m.group(4)
        ok = {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[relation]
        assert ok, (i, text)
        checked += 1
    assert checked > 50


def test_three_objects_are_listed_left_to_right():
    checked = 0
    for i in range(300):
        scene, _ = make_scene("train", i, seed=6)
        colours = [o.colour for o in scene.objects]
        if len(colours) != 3 or len(set(colours)) != 3:
            continue
        text = caption(scene)
        listed = re.findall(r"(?:small|large) (\w+) \w+", text)
        assert sorted(listed) == sorted(colours)
        img = render(scene, SIZE)
        xs = [_centroid(_colour_mask(img, c))[0] for c in listed]
        assert xs == sorted(xs), (i, text)
        checked += 1
    assert checked > 30


def test_counts_and_paraphrases():
    scene, label = make_scene("zs_count", 2, seed=0)
    assert label == "three" and len(scene.objects) == 3
    o = scene.objects[0]
    assert caption(scene) == f"three {o.size} {o.colour} {scenes.PLURALS[o.shape]}"
    for i in range(40):
        scene = sample_scene(np.random.default_rng(i))
        alts = paraphrases(scene)
        assert alts and caption(scene) not in alts and len(set(alts)) == len(alts)
    two = next(
        s for s in (make_scene("train", i, 0)[0] for i in range(50)) if _TWO.fullmatch(caption(s))
    )
    a, b = two.objects
    inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    rel = _TWO.fullmatch(caption(two)).group(4)
    assert any(
        p.startswith(b.phrase) and inverse[rel] in p and p.endswith(a.phrase)
        for p in paraphrases(two)
    )


def test_sample_scene_respects_object_bounds():
    rng = np.random.default_rng(0)
    counts = Counter(len(sample_scene(rng, 2, 3).objects) for _ in range(200))
    assert set(counts) == {2, 3}
    with pytest.raises(ValueError):
        sample_scene(rng, 0, 3)


# ---------------------------------------------------------------------------------------------
# Zero-shot tasks


@pytest.mark.parametrize("split", ["zs_shape", "zs_colour", "zs_colour_shape", "zs_count"])
def test_zero_shot_classes_are_balanced_and_true(split):
    classes = CLASSES[split]
    n = 2 * len(classes)
    labels = []
    for i in range(n):
        scene, label = make_scene(split, i, seed=2)
        labels.append(label)
        if split == "zs_shape":
            assert scene.objects[0].shape == label
        elif split == "zs_colour":
            assert scene.objects[0].colour == label
        elif split == "zs_colour_shape":
            assert f"{scene.objects[0].colour} {scene.objects[0].shape}" == label
        else:
            assert len(scene.objects) == scenes.COUNTS.index(label) + 1
    assert Counter(labels) == dict.fromkeys(classes, 2)


# ---------------------------------------------------------------------------------------------
# Files on disk


def test_write_scenes_layout(tmp_path):
    out = tmp_path / "scenes"
    sizes = {"train": 7, "val": 3, "zs_colour": 6}
    index = write_scenes(out, seed=0, image_size=32, sizes=sizes, shard_size=3)
    assert json.loads((out / "scenes.json").read_text()) == index
    assert index["sizes"] == sizes and index["classes"] == {"zs_colour": list(COLOURS)}
    assert [s["count"] for s in index["shards"]["train"]] == [3, 3, 1]
    assert not list(tmp_path.glob(".scenes*")), "temporary folders left behind"

    with open(out / "train.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filepath", "caption"] and len(rows) == 8
    with open(out / "zs_colour.csv", newline="") as f:
        zs = list(csv.DictReader(f))
    assert [r["label"] for r in zs] == list(COLOURS)
    expected = list(iter_split("train", 7, seed=0, image_size=32))
    for (key, img, text, _), (path, written) in zip(expected, rows[1:], strict=True):
        assert path == f"images/train/{key}.png" and written == text
        assert np.array_equal(np.asarray(Image.open(out / path)), img)  # PNG is lossless

    members = []
    for shard in index["shards"]["train"]:
        data = (out / shard["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for info in tar:
                members.append((info.name, tar.extractfile(info).read()))
    assert [n for n, _ in members[:4]] == [
        "train-000000.png",
        "train-000000.txt",
        "train-000000.syn.json",
        "train-000000.json",
    ]
    assert len(members) == 4 * 7
    for (png_name, png), (_, txt), (_, syn), (_, meta) in zip(
        members[0::4], members[1::4], members[2::4], members[3::4], strict=True
    ):
        meta, syn = json.loads(meta), json.loads(syn)
        assert png_name == f"{meta['uid']}.png"
        assert meta["sha256"] == hashlib.sha256(png).hexdigest()
        assert txt.decode() not in syn["syn_text"] and syn["syn_text"]


def test_write_scenes_reuses_matching_output_and_replaces_stale(tmp_path):
    out = tmp_path / "scenes"
    write_scenes(out, seed=0, image_size=32, sizes={"val": 4})
    marker = out / "images/val/val-000000.png"
    stamp = marker.stat().st_mtime_ns
    write_scenes(out, seed=0, image_size=32, sizes={"val": 4})
    assert marker.stat().st_mtime_ns == stamp  # not regenerated
    index = write_scenes(out, seed=1, image_size=32, sizes={"val": 5})
    assert index["seed"] == 1 and len(list((out / "images/val").iterdir())) == 5
    assert not list(tmp_path.glob(".scenes*"))


def test_write_scenes_refuses_foreign_folder_and_bad_args(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_scenes(tmp_path / "mine", seed=0, image_size=32, sizes={"val": 2})
    assert (tmp_path / "mine/notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="nope"):
        write_scenes(tmp_path / "x", seed=0, image_size=32, sizes={"nope": 2})


@pytest.mark.slow
def test_rendering_in_worker_processes_writes_the_same_bytes(tmp_path, monkeypatch):
    sizes = {"train": 3000, "val": 1000}  # enough samples for two rendering processes
    parallel = write_scenes(tmp_path / "p", seed=3, image_size=16, sizes=sizes, shard_size=1000)
    monkeypatch.setattr(scenes_files, "_pool", lambda samples: scenes_files._InProcess())
    serial = write_scenes(tmp_path / "s", seed=3, image_size=16, sizes=sizes, shard_size=1000)
    assert parallel["shards"] == serial["shards"]  # names, counts and sha256 of every shard
    for name in ("train.csv", "val.csv"):
        assert (tmp_path / "p" / name).read_bytes() == (tmp_path / "s" / name).read_bytes()
