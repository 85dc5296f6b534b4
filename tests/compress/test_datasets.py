"""Tests for the CSV / webdataset readers, the image transform and malformed-data errors."""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress.data.datasets import CsvDataset, DataError, collate
from compress.data.scenes_files import write_scenes
from compress.data.shards import WdsDataset, expand_shards, iter_tar_samples
from compress.data.transforms import image_transform
from compress.models.clip import OPENAI_MEAN, OPENAI_STD

SIZE = 32
TRANSFORM = image_transform(SIZE, OPENAI_MEAN, OPENAI_STD)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "scenes"
    write_scenes(
        out, seed=0, image_size=SIZE, sizes={"train": 25, "val": 6, "zs_shape": 12}, shard_size=10
    )
    return out


@pytest.fixture
def copy(data, tmp_path) -> Path:
    """A private copy of the dataset that a test may damage."""
    dst = tmp_path / "scenes"
    shutil.copytree(data, dst)
    return dst


def _tokenize(text: str) -> torch.Tensor:
    # Shaped like open_clip's tokenizer output for one string: (1, context).
    ids = [min(len(w), 99) for w in text.split()][:8]
    return torch.tensor([ids + [0] * (8 - len(ids))])


def _png(colour=(200, 30, 30), size=(SIZE, SIZE)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _assert_one_line(err: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


# ---------------------------------------------------------------------------------------------
# Transform


def test_transform_normalises_and_resizes():
    value = np.array([200, 100, 50])
    out = TRANSFORM(Image.new("RGB", (SIZE, SIZE), tuple(value)))
    assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32
    expected = (value / 255 - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)
    assert torch.allclose(out[:, 5, 7], torch.tensor(expected, dtype=torch.float32), atol=1e-6)
    # Non-square and non-RGB input: shorter side to SIZE, centre crop keeps the middle.
    wide = Image.new("L", (4 * SIZE, 2 * SIZE), 0)
    wide.paste(255, (SIZE + SIZE // 2, 0, 2 * SIZE + SIZE // 2, 2 * SIZE))  # middle quarter white
    out = TRANSFORM(wide)
    assert out.shape == (3, SIZE, SIZE)
    white = (1 - OPENAI_MEAN[0]) / OPENAI_STD[0]
    assert out[0, SIZE // 2, SIZE // 2] == pytest.approx(white, abs=1e-5)
    assert out[0, SIZE // 2, 0] < 0 and out[0, SIZE // 2, -1] < 0  # black beyond the middle
    # Same-size images are not resampled: pixel values survive exactly.
    noise = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    back = TRANSFORM(Image.fromarray(noise)) * torch.tensor(OPENAI_STD)[:, None, None]
    back = (back + torch.tensor(OPENAI_MEAN)[:, None, None]) * 255
    assert torch.allclose(back.permute(1, 2, 0), torch.from_numpy(noise).float(), atol=1e-3)


def test_transform_pickles_and_has_repr():
    clone = pickle.loads(pickle.dumps(TRANSFORM))
    img = Image.new("RGB", (40, 50), (1, 2, 3))
    assert torch.equal(clone(img), TRANSFORM(img))
    assert "image_size=32" in repr(TRANSFORM)


# ---------------------------------------------------------------------------------------------
# Readers agree


def test_csv_and_webdataset_give_the_same_samples(data):
    csv_ds = CsvDataset(data / "train.csv", TRANSFORM, _tokenize)
    wds_ds = WdsDataset(str(data / "wds/train-{000000..000002}.tar"), TRANSFORM, _tokenize)
    from_csv = [csv_ds[i] for i in range(len(csv_ds))]
    from_wds = list(wds_ds)
    assert len(from_csv) == len(from_wds) == 25
    for a, b in zip(from_csv, from_wds, strict=True):
        assert a["caption"] == b["caption"] and a["index"] == b["index"]
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["text"], b["text"]) and a["text"].shape == (8,)
    batch = collate(from_wds[:4])
    assert batch["image"].shape == (4, 3, SIZE, SIZE) and batch["text"].shape == (4, 8)
    assert batch["index"].tolist() == [0, 1, 2, 3] and batch["skipped"] == 0
    assert len(set(csv_ds.captions)) > 10


def test_csv_labels_and_accessors(data):
    ds = CsvDataset(data / "zs_shape.csv", TRANSFORM, label_key="label")
    assert len(ds) == 12 and ds.labels[:3] == ["circle", "square", "triangle"]
    item = ds[4]
    assert item["label"] == "star" and item["text"] == item["caption"] == ds.captions[4]
    assert item["caption"].endswith(" star")
    batch = collate([ds[0], ds[1]])
    assert batch["label"] == ["circle", "square"] and batch["text"] == ds.captions[:2]
    with pytest.raises(DataError, match="label_key"):
        _ = CsvDataset(data / "zs_shape.csv", TRANSFORM).labels


def test_csv_keeps_absolute_paths(data, tmp_path):
    image = (data / "images/train/train-000003.png").resolve()
    (tmp_path / "abs.csv").write_text(f"filepath,caption\n{image},hello\n")
    item = CsvDataset(tmp_path / "abs.csv", TRANSFORM)[0]
    assert item["caption"] == "hello"
    assert torch.equal(item["image"], CsvDataset(data / "train.csv", TRANSFORM)[3]["image"])


def test_expand_shards():
    assert expand_shards("a/b-{000008..000010}.tar") == [
        "a/b-000008.tar",
        "a/b-000009.tar",
        "a/b-000010.tar",
    ]
    assert expand_shards("{x,y}-{1..2}.tar") == ["x-1.tar", "x-2.tar", "y-1.tar", "y-2.tar"]
    assert expand_shards("p.tar::q-{0..1}.tar") == ["p.tar", "q-0.tar", "q-1.tar"]
    assert expand_shards("plain.tar") == ["plain.tar"]
    with pytest.raises(DataError):
        expand_shards("b-{5..2}.tar")


def test_ranks_split_shards_and_reject_empty_rank(data):
    shards = str(data / "wds/train-{000000..000002}.tar")
    seen = [
        [s["caption"] for s in WdsDataset(shards, TRANSFORM, rank=r, world_size=2)]
        for r in range(2)
    ]
    assert len(seen[0]) == 15 and len(seen[1]) == 10  # shards 0 (10) + 2 (5), shard 1 (10)
    everything = [s["caption"] for s in WdsDataset(shards, TRANSFORM)]
    assert sorted(seen[0] + seen[1]) == sorted(everything)
    with pytest.raises(DataError, match="rank 3 of 4 gets no shard"):
        WdsDataset(shards, TRANSFORM, rank=3, world_size=4)


def test_shuffle_is_deterministic_per_epoch(data):
    shards = str(data / "wds/train-{000000..000002}.tar")
    ds = WdsDataset(shards, TRANSFORM, shuffle_buffer=8, seed=1)
    first = [s["caption"] for s in ds]
    again = [s["caption"] for s in ds]
    ds.set_epoch(1)
    second = [s["caption"] for s in ds]
    plain = [s["caption"] for s in WdsDataset(shards, TRANSFORM)]
    assert first == again
    assert first != second and first != plain
    assert sorted(first) == sorted(second) == sorted(plain)


def test_dataloader_workers_partition_shards(data):
    ds = WdsDataset(str(data / "wds/train-{000000..000002}.tar"), TRANSFORM)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    captions, indices = [], []
    for batch in loader:
        captions += batch["caption"]
        indices += batch["index"].tolist()
    assert sorted(captions) == sorted(s["caption"] for s in ds)
    assert len(set(indices)) == len(indices) == 25


# ---------------------------------------------------------------------------------------------
# Malformed CSV data


def test_missing_csv_file(tmp_path):
    with pytest.raises(DataError) as err:
        CsvDataset(tmp_path / "nope.csv", TRANSFORM)
    _assert_one_line(err, "nope.csv", "not found")


def test_missing_column(tmp_path):
    (tmp_path / "d.csv").write_text("filepath,text\na.png,hello\n")
    with pytest.raises(DataError) as err:
        CsvDataset(tmp_path / "d.csv", TRANSFORM)
    _assert_one_line(err, "d.csv:1", "'caption'", "found columns: filepath, text")


def test_bad_rows_name_file_and_line(tmp_path):
    (tmp_path / "d.csv").write_text(
        "filepath,caption\na.png,one\nb.png,two,extra\n,three\nc.png,four\n"
    )
    with pytest.raises(DataError) as err:
        CsvDataset(tmp_path / "d.csv", TRANSFORM)
    _assert_one_line(err, "d.csv:3:", "expected 2 fields, got 3")
    (tmp_path / "e.csv").write_text("filepath,caption\na.png,one\n,three\n")
    with pytest.raises(DataError) as err:
        CsvDataset(tmp_path / "e.csv", TRANSFORM)
    _assert_one_line(err, "e.csv:3:", "empty image path")
    ds = CsvDataset(tmp_path / "d.csv", TRANSFORM, skip_bad=True)
    assert ds.skipped == 2 and ds.captions == ["one", "four"]


def test_missing_image_file(copy):
    (copy / "images/train/train-000012.png").unlink()
    ds = CsvDataset(copy / "train.csv", TRANSFORM)
    ds[11]  # neighbours are fine
    with pytest.raises(DataError) as err:
        ds[12]
    _assert_one_line(err, "train.csv:14:", "'images/train/train-000012.png'", "file not found")


def test_corrupt_image_bytes(copy):
    (copy / "images/train/train-000002.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as err:
        CsvDataset(copy / "train.csv", TRANSFORM)[2]
    _assert_one_line(err, "train.csv:4:", "train-000002.png", "cannot identify image file")


def test_truncated_image_bytes(copy):
    path = copy / "images/train/train-000005.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError) as err:
        CsvDataset(copy / "train.csv", TRANSFORM)[5]
    _assert_one_line(err, "train.csv:7:", "train-000005.png", "cannot be read")


def test_skip_bad_images_are_dropped_by_collate(copy):
    (copy / "images/train/train-000001.png").unlink()
    (copy / "images/train/train-000003.png").write_bytes(b"garbage")
    ds = CsvDataset(copy / "train.csv", TRANSFORM, skip_bad=True)
    assert ds[1] is None and ds[3] is None and ds[2] is not None
    loader = torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=collate)
    batches = list(loader)
    assert sum(b["skipped"] for b in batches) == 2
    assert sum(len(b["caption"]) for b in batches) == 23
    assert batches[0]["index"].tolist() == [0, 2, 4]
    empty = collate([None, None])
    assert empty["skipped"] == 2 and len(empty["index"]) == 0


# ---------------------------------------------------------------------------------------------
# Malformed webdataset shards


def test_truncated_tar(copy):
    shard = copy / "wds/train-000001.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    ds = WdsDataset([copy / "wds/train-000000.tar", shard], TRANSFORM)
    with pytest.raises(DataError) as err:
        list(ds)
    _assert_one_line(err, "train-000001.tar", "truncated", "sample 'train-0000")
    skipping = WdsDataset([shard, copy / "wds/train-000002.tar"], TRANSFORM, skip_bad=True)
    got = list(skipping)
    assert skipping.truncated_shards == 1 and skipping.skipped == 1
    assert 0 < len(got) - 5 < 10  # the shard's samples before the cut, then all of the next
    assert [s["caption"] for s in got[-5:]] == [
        s["caption"] for s in WdsDataset(copy / "wds/train-000002.tar", TRANSFORM)
    ]


@pytest.mark.parametrize("extra", [0, 100])
def test_tar_cut_at_a_header_is_an_error(copy, extra):
    # On its own, tarfile takes a missing or cut-off header for the end of the archive.
    shard = copy / "wds/val-000000.tar"
    with tarfile.open(shard) as tar:
        offsets = [info.offset for info in tar.getmembers()]
    cut = offsets[3] + extra  # the first header of the second sample
    shard.write_bytes(shard.read_bytes()[:cut])
    with pytest.raises(DataError) as err:
        list(iter_tar_samples(shard))
    _assert_one_line(err, "val-000000.tar", "truncated", "sample 'val-000000'")


def test_corrupt_tar_header(copy):
    shard = copy / "wds/val-000000.tar"
    data = bytearray(shard.read_bytes())
    png_size = len((copy / "images/val/val-000000.png").read_bytes())
    second = 512 + -(-png_size // 512) * 512  # header of the second member (val-000000.txt)
    data[second : second + 20] = b"\xff" * 20
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        list(WdsDataset(shard, TRANSFORM))
    _assert_one_line(err, "val-000000.tar", "corrupt", "val-000000")


def test_sample_without_caption_or_image(tmp_path):
    shard = _write_tar(
        tmp_path / "s.tar",
        [
            ("a.png", _png()),
            ("a.txt", b"ok"),
            ("b.png", _png()),
            ("b.json", b"{}"),
            ("c.txt", b"lonely"),
        ],
    )
    with pytest.raises(DataError) as err:
        list(WdsDataset(shard, TRANSFORM))
    _assert_one_line(err, "s.tar", "sample 'b'", "no caption (.txt)", ".png, .json")
    ds = WdsDataset(shard, TRANSFORM, skip_bad=True)
    assert [s["caption"] for s in ds] == ["ok"] and ds.skipped == 2
    only_c = _write_tar(tmp_path / "c.tar", [("c.txt", b"lonely")])
    with pytest.raises(DataError) as err:
        list(WdsDataset(only_c, TRANSFORM))
    _assert_one_line(err, "c.tar", "sample 'c'", "no image")


def test_undecodable_image_in_tar(tmp_path):
    shard = _write_tar(
        tmp_path / "s.tar",
        [
            ("x/k1.png", b"not a png"),
            ("x/k1.txt", b"bad"),
            ("x/k2.jpg", _png()),
            ("x/k2.txt", b"good"),
        ],
    )
    with pytest.raises(DataError) as err:
        list(WdsDataset(shard, TRANSFORM))
    _assert_one_line(err, "s.tar", "sample 'x/k1'", "cannot identify image file")
    ds = WdsDataset(shard, TRANSFORM, skip_bad=True)
    assert [s["caption"] for s in ds] == ["good"] and ds.skipped == 1


def test_keys_end_at_the_first_dot(tmp_path):
    shard = _write_tar(
        tmp_path / "s.tar",
        [("k.seg.png", b"x"), ("k.PNG", _png()), ("k.txt", b"cap\n"), ("k.syn.json", b"{}")],
    )
    ((key, members),) = list(iter_tar_samples(shard))
    assert key == "k" and set(members) == {"seg.png", "png", "txt", "syn.json"}
    (item,) = list(WdsDataset(shard, TRANSFORM))
    assert item["caption"] == "cap"


def test_missing_shard(tmp_path):
    with pytest.raises(DataError) as err:
        list(WdsDataset(tmp_path / "gone-000000.tar", TRANSFORM))
    _assert_one_line(err, "gone-000000.tar", "not found")


# ---------------------------------------------------------------------------------------------
# The decoded-sample cache (data.cache)


def _items_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys() and x["caption"] == y["caption"] and x["index"] == y["index"]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["text"], y["text"])


def test_cached_shards_give_the_same_items_without_reading_the_files_again(copy):
    shards = str(copy / "wds/train-{000000..000002}.tar")
    plain = WdsDataset(shards, TRANSFORM, _tokenize, shuffle_buffer=8, seed=1)
    cache: dict = {}
    cached = WdsDataset(shards, TRANSFORM, _tokenize, shuffle_buffer=8, seed=1, cache=cache)
    for epoch in range(2):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        expected = list(plain)
        _items_equal(list(cached), expected)
    assert len(cache) == 3  # one entry per shard read to its end
    for shard in (copy / "wds").glob("train-*.tar"):
        shard.write_bytes(b"")  # later epochs, and other datasets sharing the dict, read memory
    cached.set_epoch(1)
    _items_equal(list(cached), expected)
    other = WdsDataset(shards, TRANSFORM, _tokenize, shuffle_buffer=8, seed=1, cache=cache)
    other.set_epoch(1)
    _items_equal(list(other), expected)


def test_cached_skips_are_counted_every_epoch(tmp_path):
    shard = _write_tar(
        tmp_path / "s.tar",
        [("a.png", _png()), ("a.txt", b"ok"), ("b.png", b"not a png"), ("b.txt", b"bad")],
    )
    ds = WdsDataset(shard, TRANSFORM, skip_bad=True, cache={})
    assert [s["caption"] for s in ds] == ["ok"] and ds.skipped == 1
    shard.unlink()
    assert [s["caption"] for s in ds] == ["ok"] and ds.skipped == 2


def test_cached_csv_rows_are_decoded_once(copy):
    cache: dict = {}
    ds = CsvDataset(copy / "train.csv", TRANSFORM, _tokenize, cache=cache)
    first = [ds[i] for i in range(len(ds))]
    shutil.rmtree(copy / "images")
    _items_equal([ds[i] for i in range(len(ds))], first)
    assert len(cache) == len(ds) == 25
    _items_equal(
        first,
        [CsvDataset(copy / "train.csv", TRANSFORM, _tokenize, cache=cache)[i] for i in range(25)],
    )
