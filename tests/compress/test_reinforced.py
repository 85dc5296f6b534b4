"""Reinforced shards: our writer and index round trip, bad data, and Apple's published layout."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress.data.reinforced import (
    ReinforcedShards,
    ReinforcedWriter,
    done_keys,
    merge_indexes,
    read_index,
    sha256_file,
)
from compress.errors import UserError

TEACHERS, DIMS, K, N = ["big", "small"], [8, 4], 3, 2
AUG = {"size": 32, "rand_augment": {"num_ops": 2}}


def jpeg(seed: int) -> bytes:
    """A small JPEG whose colour depends on `seed`."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (seed * 40 % 256, 100, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def sample(i: int, rng: np.random.Generator) -> dict:
    """Synthetic reinforced sample `i`: fp16 embeddings, K augmentations, N synthetic captions."""
    return {
        "uid": f"uid{i:04d}",
        "caption": f"caption {i}",
        "syn_text": [f"syn {i}.{j}" for j in range(N)],
        "param_aug": [[[j, i, 10, 12], [[5, -12.0], [11, 128.0]]] for j in range(K)],
        "image_emb": rng.standard_normal((K, sum(DIMS))).astype(np.float16),
        "text_emb": rng.standard_normal((1 + N, sum(DIMS))).astype(np.float16),
    }


def write(out: Path, count: int = 5, per_shard: int = 3, prefix: str = "r0", start: int = 0, **kw):
    """Write `count` samples to `out` (2 shards by default); returns the samples by key."""
    rng = np.random.default_rng(start)
    written = {}
    with ReinforcedWriter(out, prefix, TEACHERS, DIMS, K, N, AUG, per_shard, **kw) as w:
        for i in range(start, start + count):
            s = sample(i, rng)
            w.add(f"{i:09d}", image=jpeg(i), **s)
            written[f"{i:09d}"] = s
    return written


def test_round_trip_and_index(tmp_path):
    written = write(tmp_path)
    index = read_index(tmp_path / "index.json")
    assert index["complete"] and index["samples"] == 5
    assert (index["teachers"], index["dims"], index["d_total"]) == (TEACHERS, DIMS, 12)
    assert (index["k"], index["n"], index["augmentation"]) == (K, N, AUG)
    shards = index["shards"]
    assert [s["file"] for s in shards] == ["r0-000000.tar", "r0-000001.tar"]
    assert [s["samples"] for s in shards] == [3, 2]
    assert [(s["first_key"], s["last_key"]) for s in shards] == [
        ("000000000", "000000002"),
        ("000000003", "000000004"),
    ]
    for s in shards:
        assert s["sha256"] == sha256_file(tmp_path / s["file"])
    with tarfile.open(tmp_path / "r0-000000.tar") as tar:
        assert tar.getnames()[:6] == [
            f"000000000.{ext}" for ext in ("jpg", "json", "npz", "paug.json", "syn.json", "txt")
        ]
        paug = json.loads(tar.extractfile("000000000.paug.json").read())
        assert isinstance(paug["param_aug"], str)  # a JSON string, as in Apple's shards
        meta = json.loads(tar.extractfile("000000000.json").read())
        assert meta == {"uid": "uid0000", "sha256": hashlib.sha256(jpeg(0)).hexdigest()}

    items = list(ReinforcedShards(tmp_path / "index.json"))
    assert [it["key"] for it in items] == list(written)
    for it in items:
        want = written[it["key"]]
        assert it["uid"] == want["uid"] and it["caption"] == want["caption"]
        assert it["syn_text"] == want["syn_text"] and it["param_aug"] == want["param_aug"]
        for name in ("image_emb", "text_emb"):
            assert it[name].dtype == np.float32
            np.testing.assert_array_equal(it[name], want[name].astype(np.float32))
        assert it["image"].size == (16, 12) and it["image"].mode == "RGB"
    # The same shards read without the index (a glob), images as bytes.
    raw = list(ReinforcedShards(str(tmp_path / "r0-*.tar"), decode_images=False))
    assert raw[0]["image"] == jpeg(0)


def test_corrupt_byte_names_the_shard(tmp_path):
    write(tmp_path)
    shard = tmp_path / "r0-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"r0-000001\.tar: sha256 .* does not match") as err:
        list(ReinforcedShards(tmp_path / "index.json"))
    assert "\n" not in str(err.value)
    ds = ReinforcedShards(tmp_path / "index.json", skip_bad=True)
    assert len(list(ds)) == 3 and (ds.skipped, ds.bad_shards) == (2, 1)


def test_truncated_shard_names_it(tmp_path):
    write(tmp_path)
    shard = tmp_path / "r0-000000.tar"
    shard.write_bytes(shard.read_bytes()[:2500])
    with pytest.raises(UserError, match=r"r0-000000\.tar: sha256"):
        list(ReinforcedShards(tmp_path / "index.json"))
    # Without the index the tar reader itself notices the cut.
    with pytest.raises(UserError, match=r"r0-000000\.tar: truncated"):
        list(ReinforcedShards(str(tmp_path / "r0-*.tar")))
    ds = ReinforcedShards(str(tmp_path / "r0-*.tar"), skip_bad=True)
    assert len(list(ds)) == 2 and ds.bad_shards == 1 and ds.skipped >= 1


def test_missing_member_names_it(tmp_path):
    write(tmp_path, count=2)
    shard = tmp_path / "r0-000000.tar"
    with tarfile.open(shard) as src, tarfile.open(tmp_path / "cut.tar", "w") as dst:
        for info in src:
            if info.name != "000000001.npz":
                dst.addfile(info, src.extractfile(info))
    with pytest.raises(
        UserError, match=r"cut\.tar: sample '000000001': missing member '000000001\.npz'"
    ):
        list(ReinforcedShards([tmp_path / "cut.tar"]))
    ds = ReinforcedShards([tmp_path / "cut.tar"], skip_bad=True)
    assert [it["key"] for it in ds] == ["000000000"] and ds.skipped == 1


APPLE_PAUG = "[[[10, 5, 30, 28], [[5, -12.0], [11, 128.0]]]]"


def apple_shard(
    path: Path, uids: list[str], images: bool = False, first: int = 0, paug: str = APPLE_PAUG
) -> dict:
    """A shard in exactly DataCompDR's published layout (url.txt, JSON-string param_aug, fp16
    npz), built with tarfile directly; with `images` instead an img2dataset-style image shard."""
    rng = np.random.default_rng(1)
    embs = {}
    with tarfile.open(path, "w") as tar:
        for i, uid in enumerate(uids):
            key = f"{i:08d}"
            if images:
                members = {
                    "jpg": jpeg(first + i),
                    "json": json.dumps({"uid": uid, "url": "x"}).encode(),
                }
            else:
                image_emb = rng.standard_normal((1, 12)).astype(np.float16)
                text_emb = rng.standard_normal((3, 12)).astype(np.float16)
                embs[uid] = (image_emb, text_emb)
                npz = io.BytesIO()
                np.savez(npz, image_emb=image_emb, text_emb=text_emb)
                members = {
                    "url.txt": f"https://example.com/{uid}.jpg".encode(),
                    "txt": f"apple caption {i}".encode(),
                    "syn.json": json.dumps({"syn_text": ["syn a", "syn b"]}).encode(),
                    "paug.json": json.dumps({"param_aug": paug}).encode(),
                    "npz": npz.getvalue(),
                    "json": json.dumps({"uid": uid, "sha256": "0" * 64}).encode(),
                }
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return embs


def check_apple(items: list[dict], embs: dict) -> None:
    assert [it["uid"] for it in items] == list(embs)
    for i, it in enumerate(items):
        assert it["caption"] == f"apple caption {i}" and it["syn_text"] == ["syn a", "syn b"]
        assert it["param_aug"] == [[[10, 5, 30, 28], [[5, -12.0], [11, 128.0]]]]
        np.testing.assert_array_equal(it["image_emb"], embs[it["uid"]][0].astype(np.float32))
        np.testing.assert_array_equal(it["text_emb"], embs[it["uid"]][1].astype(np.float32))
        assert it["image"].size == (16, 12)


def test_apple_layout_with_image_folder(tmp_path):
    uids = ["9f86d081884c7d65", "2c26b46b68ffc68f"]
    embs = apple_shard(tmp_path / "00000000.tar", uids)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, uid in enumerate(uids):
        (folder / f"{uid}.jpg").write_bytes(jpeg(i))
    check_apple(
        list(ReinforcedShards(str(tmp_path / "{00000000..00000000}.tar"), images=folder)), embs
    )
    # Without images, or with one missing: one line naming the shard and sample.
    with pytest.raises(UserError, match=r"00000000\.tar: sample '00000000' has no image"):
        list(ReinforcedShards(str(tmp_path / "00000000.tar")))
    (folder / f"{uids[1]}.jpg").unlink()
    with pytest.raises(UserError, match=r"sample '00000001': no image for uid '2c26b46b68ffc68f'"):
        list(ReinforcedShards(str(tmp_path / "00000000.tar"), images=folder))
    ds = ReinforcedShards(str(tmp_path / "00000000.tar"), images=folder, skip_bad=True)
    assert len(list(ds)) == 1 and ds.skipped == 1


def test_apple_layout_with_image_shards(tmp_path):
    uids = ["9f86d081884c7d65", "2c26b46b68ffc68f", "fcde2b2edba56bf4"]
    embs = apple_shard(tmp_path / "dr.tar", uids)
    # Images in another order, split over two shards, joined by uid.
    apple_shard(tmp_path / "img-0.tar", [uids[2]], images=True, first=2)
    apple_shard(tmp_path / "img-1.tar", [uids[1], uids[0]], images=True)
    joined = ReinforcedShards(
        [tmp_path / "dr.tar"], images=str(tmp_path / "img-*.tar"), decode_images=False
    )
    items = list(joined)
    assert [it["image"] for it in items] == [jpeg(1), jpeg(0), jpeg(2)]  # by uid, not by order
    for it in items:
        it["image"] = Image.open(io.BytesIO(it["image"]))
    check_apple(items, embs)


def test_killed_writer_leaves_no_partial_shard(tmp_path):
    rng = np.random.default_rng(0)
    with (
        pytest.raises(RuntimeError),
        ReinforcedWriter(tmp_path, "r0", TEACHERS, DIMS, K, N, AUG, 2) as w,
    ):
        for i in range(3):
            w.add(f"{i:09d}", image=jpeg(i), **sample(i, rng))
        raise RuntimeError("killed mid-shard")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "r0-000000.tar"]
    index = read_index(tmp_path / "index.json")  # written when shard 0 finished
    assert not index["complete"] and index["samples"] == 2
    done = done_keys(index)
    assert "000000001" in done and "000000002" not in done
    with pytest.raises(UserError, match="already exists"):
        ReinforcedWriter(tmp_path, "r0", TEACHERS, DIMS, K, N, AUG, 2)
    with ReinforcedWriter(tmp_path, "r0", TEACHERS, DIMS, K, N, AUG, 2, resume=True) as w:
        for i in range(2, 4):
            w.add(f"{i:09d}", image=jpeg(i), **sample(i, rng))
    index = read_index(tmp_path / "index.json")
    assert index["complete"] and [s["file"] for s in index["shards"]] == [
        "r0-000000.tar",
        "r0-000001.tar",
    ]
    assert [it["key"] for it in ReinforcedShards(tmp_path / "index.json")] == [
        f"{i:09d}" for i in range(4)
    ]


def test_merge_rank_indexes(tmp_path):
    write(tmp_path / "rank0", count=3, prefix="rank0")
    write(tmp_path / "rank1", count=4, prefix="rank1", start=100)
    merged = merge_indexes(
        [tmp_path / "rank0/index.json", tmp_path / "rank1/index.json"], tmp_path / "index.json"
    )
    assert merged["samples"] == 7 and len(merged["shards"]) == 3
    assert merged["shards"][0]["file"] == "rank0/rank0-000000.tar"
    items = list(ReinforcedShards(tmp_path / "index.json"))
    assert [it["key"] for it in items][3:] == [f"{i:09d}" for i in range(100, 104)]
    # A rank written with other dims is refused in one line.
    with ReinforcedWriter(tmp_path / "odd", "odd", TEACHERS, [8, 8], K, N, AUG, 3) as w:
        w.add(
            "0",
            image=jpeg(0),
            **{
                **sample(0, np.random.default_rng(0)),
                "image_emb": np.zeros((K, 16)),
                "text_emb": np.zeros((1 + N, 16)),
            },
        )
    with pytest.raises(UserError, match=r"odd/index\.json: dims is \[8, 8\], expected \[8, 4\]"):
        merge_indexes(
            [tmp_path / "rank0/index.json", tmp_path / "odd/index.json"], tmp_path / "bad.json"
        )
    assert not (tmp_path / "bad.json").exists()


def test_a_student_trains_from_apple_layout_shards(tmp_path):
    """A hand-built DataCompDR shard (url.txt, images in a folder, no index) trains a student:
    its stored augmentation replays and its stored embeddings are the targets."""
    from compress.data.batches import batch_stream
    from compress.data.replay import ReplayDataset
    from compress.data.transforms import image_transform
    from compress.distill.losses import ReinforcedKD
    from compress.distill.student import ReinforcedObjective
    from compress.models import ModelRecord
    from compress.tokenizer import Tokenizer
    from compress.train import train
    from edgeclip.recipe import TrainConfig

    uids = [f"{i:016x}" for i in range(8)]
    # one augmentation per sample inside the 16x12 images: crop (top 1, left 2, 10x12), 2 ops
    apple_shard(tmp_path / "00000000.tar", uids, paug="[[[1, 2, 10, 12], [[5, -12.0], [8, 0.3]]]]")
    folder = tmp_path / "images"
    folder.mkdir()
    for i, uid in enumerate(uids):
        (folder / f"{uid}.jpg").write_bytes(jpeg(i))
    record = ModelRecord.named("tiny")
    transform = image_transform(record.image_size, **record.normalization)
    shards = str(tmp_path / "{00000000..00000000}.tar")
    with pytest.raises(UserError, match="need teachers"):
        ReplayDataset(shards, transform, Tokenizer(record.context_length), images=folder)
    data = ReplayDataset(
        shards,
        transform,
        Tokenizer(record.context_length),
        images=folder,
        teachers=[(12, 100.0)],  # the ensemble as DataCompDR documents it
        image_size=16,
    )
    assert (len(data), data.k, data.n) == (8 * 1 * 2, 1, 2)
    assert data[3]["image"].shape == (3, record.image_size, record.image_size)
    torch.manual_seed(0)
    student = record.build()
    summary = train(
        student,
        lambda start: batch_stream(data, 4, 0, 0, 1, start),
        TrainConfig(steps=3, batch_size=4, warmup=1, log_every=1),
        tmp_path / "train",
        objective=ReinforcedObjective(ReinforcedKD(0.75, data.dims, data.scales)),
    )
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss"])


def test_an_augmentation_that_cannot_be_replayed_names_its_shard_or_is_skipped(tmp_path):
    """A stored op out of range (posterize with 0 bits) is the reader's one-line error naming
    the shard, the sample and the augmentation; with skip_bad the item is None (collate drops
    and counts it)."""
    from compress.data.augment import OPS
    from compress.data.datasets import DataError, collate
    from compress.data.replay import ReplayDataset
    from compress.data.transforms import image_transform
    from compress.tokenizer import Tokenizer

    uids = [f"{i:016x}" for i in range(2)]
    posterize = OPS.index("Posterize")
    shard = tmp_path / "00000000.tar"
    apple_shard(shard, uids, paug=f"[[[1, 2, 10, 12], [[5, -12.0], [{posterize}, 0.0]]]]")
    folder = tmp_path / "images"
    folder.mkdir()
    for i, uid in enumerate(uids):
        (folder / f"{uid}.jpg").write_bytes(jpeg(i))
    options = {"images": folder, "teachers": [(12, 100.0)], "image_size": 16}
    args = (str(tmp_path / "{00000000..00000000}.tar"), image_transform(16, (0.5,) * 3, (0.5,) * 3))
    data = ReplayDataset(*args, Tokenizer(16), **options)
    with pytest.raises(DataError) as err:
        data[0]
    message = str(err.value)
    assert "\n" not in message and str(shard) in message
    assert "sample '00000000'" in message and "stored augmentation 0" in message
    assert "bits must be between" in message and "data.skip_bad" in message
    skipping = ReplayDataset(*args, Tokenizer(16), skip_bad=True, **options)
    assert skipping[0] is None
    assert collate([skipping[0], skipping[1]])["skipped"] == 2


def test_sigmoid_teachers_biases_are_in_the_index_and_must_agree(tmp_path):
    """A teacher with a logit bias (sigmoid-trained) has it stored beside its scale; an index
    whose teachers have none has no ``biases``; ranks that disagree do not merge."""
    write(tmp_path / "softmax", count=1)
    assert "biases" not in read_index(tmp_path / "softmax/index.json")
    write(tmp_path / "rank0", count=2, prefix="rank0", scales=[10.0, 20.0], biases=[-10.0, None])
    assert read_index(tmp_path / "rank0/index.json")["biases"] == [-10.0, None]
    write(tmp_path / "rank1", count=2, prefix="rank1", start=100, scales=[10.0, 20.0])
    with pytest.raises(
        UserError, match=r"rank1/index\.json: biases is null, expected \[-10\.0, null\]"
    ):
        merge_indexes(
            [tmp_path / "rank0/index.json", tmp_path / "rank1/index.json"], tmp_path / "index.json"
        )
