"""Reinforcing a dataset: stored augmentations replay to the stored teacher embeddings, captions
and their embeddings line up, and a killed run resumes to the same samples, none twice."""

import tarfile

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from compress.data.augment import Augmentation
from compress.data.captioners import captioners, existing_captions
from compress.data.reinforced import ReinforcedShards, ReinforcedWriter, done_keys, read_index
from compress.distill.reinforce import (
    CaptionMemo,
    Sample,
    image_embeddings,
    reinforce,
    text_embeddings,
)
from compress.models import ModelRecord

K, N = 3, 2


@pytest.fixture(scope="module")
def teachers():
    torch.manual_seed(0)
    return [ModelRecord.named(name).build().eval() for name in ("tiny", "tiny_mobile")]


def _samples(count=5):
    out = []
    for i in range(count):
        image = Image.new("RGB", (40, 36), (20 * i, 90, 160))
        ImageDraw.Draw(image).ellipse((4 + i, 6, 24 + i, 30), fill=(250, 30 * i, 10))
        paraphrases = [f"a shape number {i}", f"picture {i}", f"thing {i}"][: 1 + i % 3]
        out.append(Sample(f"{i:06d}", image, f"a red circle {i}", paraphrases))
    return out


def _writer(folder, teachers, resume=False):
    dims = [int(text_embeddings([t], ["x"]).shape[1]) for t in teachers]
    return ReinforcedWriter(
        folder,
        "r",
        ["tiny", "tiny_mobile"],
        dims,
        k=K,
        n=N,
        augmentation={"size": 32},
        samples_per_shard=2,
        scales=[float(t.logit_scale.exp()) for t in teachers],
        resume=resume,
    )


def _reinforce(samples, teachers, writer, **kwargs):
    return reinforce(
        samples,
        teachers,
        Augmentation(32),
        captioners.get("existing"),
        writer,
        k=K,
        n=N,
        seed=7,
        batch_size=2,  # teacher calls over several samples, and a kill between them
        **kwargs,
    )


def test_stored_augmentations_replay_to_the_stored_embeddings(teachers, tmp_path):
    with _writer(tmp_path, teachers) as writer:
        assert _reinforce(_samples(), teachers, writer) == 5
    index = read_index(tmp_path / "index.json")
    assert index["complete"] and index["samples"] == 5 and index["k"] == K
    augmentation = Augmentation(32)
    for sample in ReinforcedShards(tmp_path / "index.json"):
        assert sample["image_emb"].shape == (K, index["d_total"])
        assert sample["text_emb"].shape == (1 + N, index["d_total"])
        replayed = [augmentation.reapply(sample["image"], p) for p in sample["param_aug"]]
        np.testing.assert_allclose(
            sample["image_emb"], image_embeddings(teachers, replayed), atol=2e-3
        )  # fp16 storage; the pixels themselves replay exactly
        texts = [sample["caption"], *sample["syn_text"]]
        np.testing.assert_allclose(sample["text_emb"], text_embeddings(teachers, texts), atol=2e-3)
        assert len(sample["syn_text"]) == N


def test_a_killed_run_resumes_to_the_same_samples(teachers, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    with _writer(whole, teachers) as writer:
        _reinforce(_samples(), teachers, writer)

    def killed_after(n):
        for i, sample in enumerate(_samples()):
            if i == n:
                raise KeyboardInterrupt
            yield sample

    with pytest.raises(KeyboardInterrupt), _writer(parts, teachers) as writer:
        _reinforce(killed_after(3), teachers, writer)
    assert read_index(parts / "index.json")["samples"] == 2  # the finished shard only
    done = done_keys(read_index(parts / "index.json"))
    with _writer(parts, teachers, resume=True) as writer:
        assert _reinforce(_samples(), teachers, writer, done=lambda key: key in done) == 3

    def by_key(folder):
        return {s["key"]: s for s in ReinforcedShards(folder / "index.json")}

    a, b = by_key(whole), by_key(parts)
    assert sorted(b) == sorted(a) == [f"{i:06d}" for i in range(5)]  # none missing, none twice
    for key in a:
        assert a[key]["param_aug"] == b[key]["param_aug"]
        # batched differently after the resume: equal up to float rounding (stored in fp16)
        np.testing.assert_allclose(a[key]["image_emb"], b[key]["image_emb"], atol=2e-3)


def test_existing_captions_cycle_to_n_and_refuse_none():
    assert existing_captions([None], ["c"], [["x", "y"]], 3) == [["x", "y", "x"]]
    with pytest.raises(ValueError, match="no synthetic captions"):
        existing_captions([None], ["c"], [None], 2)


def test_a_student_trains_from_the_stored_knowledge_alone(teachers, tmp_path):
    """ReplayDataset + ReinforcedObjective + the training loop, with gradient caching too:
    no teacher model is passed anywhere on this path."""
    from compress.data.batches import batch_stream
    from compress.data.replay import ReplayDataset
    from compress.data.transforms import image_transform
    from compress.distill.losses import ReinforcedKD
    from compress.distill.student import ReinforcedObjective
    from compress.tokenizer import Tokenizer
    from compress.train import train
    from edgeclip.recipe import TrainConfig

    with _writer(tmp_path / "dr", teachers) as writer:
        _reinforce(_samples(6), teachers, writer)
    record = ModelRecord.named("tiny")
    data = ReplayDataset(
        tmp_path / "dr" / "index.json",
        image_transform(record.image_size, **record.normalization),
        Tokenizer(record.context_length),
    )
    assert len(data) == 6 * K * N
    item = data[K * N + N + 1]  # sample 1, augmentation 1, synthetic caption 1
    stored = next(
        s for s in ReinforcedShards(tmp_path / "dr" / "index.json") if s["key"] == "000001"
    )
    np.testing.assert_allclose(item["teacher_image"], stored["image_emb"][1], atol=1e-3)
    np.testing.assert_allclose(item["teacher_syn"], stored["text_emb"][2], atol=1e-3)
    assert item["image"].shape == (3, record.image_size, record.image_size)
    assert torch.equal(data[7]["image"], data[7]["image"])  # replay: no randomness of its own

    torch.manual_seed(0)
    student = record.build()
    loss = ReinforcedKD(0.7, data.dims, data.scales)
    for accumulate in (1, 2):
        cfg = TrainConfig(steps=4, batch_size=8, warmup=1, log_every=1, accumulate=accumulate)
        summary = train(
            student,
            lambda start: batch_stream(data, 8, 0, 0, 1, start),
            cfg,
            tmp_path / f"train{accumulate}",
            objective=ReinforcedObjective(loss),
        )
        assert summary["steps"] == 4 and np.isfinite(summary["final_loss"])


def test_the_pipeline_distils_from_reinforced_data_without_a_teacher(tmp_path, monkeypatch):
    from compress.distill import student
    from edgeclip.cli import main
    from tests.helpers import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path, steps=2)
    recipe.write_text(
        recipe.read_text().split("\neval:")[0]
        + "\nreinforce: {k: 2, n: 2, samples_per_shard: 100, limit: 150}\n"
        + "distill:\n  model: tiny\n  inherit: {method: importance}\n"
        + "  loss: {kind: reinforced, alpha: 0.5}\n  steps: 3\n  batch_size: 16\n  warmup: 1\n"
    )

    def no_teacher(*args, **kwargs):
        raise AssertionError("a teacher ran during reinforced distillation")

    monkeypatch.setattr(student.DistillObjective, "__init__", no_teacher)
    run = tmp_path / "runs" / "tiny"
    assert main(["reinforce", str(recipe)]) == 0  # the teacher, then the data; nothing after
    assert (run / "reinforce" / "done.json").is_file() and not (run / "distill").exists()
    assert main(["run", str(recipe)]) == 0  # reinforce done already: distillation goes on
    index = read_index(run / "reinforce" / "index.json")
    assert index["samples"] == 150 and len(index["shards"]) == 2 and index["complete"]
    with tarfile.open(run / "reinforce" / index["shards"][0]["file"]) as tar:
        images = [n for n in tar.getnames() if n.endswith((".png", ".jpg"))]
    assert images and all(n.endswith(".png") for n in images)  # the scenes PNGs, not re-encoded
    assert (run / "distill" / "model.pt").is_file()
    assert "## Reinforced data" in (run / "report.md").read_text()


def _stored(index):
    """A reinforced dataset's samples by key: caption, synthetic captions, augmentations, embeddings."""
    return {
        s["key"]: (s["caption"], s["syn_text"], s["param_aug"], s["image_emb"], s["text_emb"])
        for s in ReinforcedShards(index, decode_images=False)
    }


@pytest.mark.slow
def test_two_processes_under_torchrun_write_one_merged_dataset(tmp_path):
    """Each process reinforces every other sample into its own shards and index; the merged
    index holds every sample once, exactly as one process writes them."""
    import json
    import shutil

    from compress.data.replay import ReplayDataset
    from compress.data.transforms import image_transform
    from compress.tokenizer import Tokenizer
    from edgeclip.cli import main
    from tests.helpers import torchrun_edgeclip, write_tiny_recipe

    one, two = tmp_path / "one", tmp_path / "two"
    recipes = []
    for folder in (one, two):
        folder.mkdir()
        recipe = write_tiny_recipe(folder, steps=2)
        recipe.write_text(
            recipe.read_text().split("\neval:")[0]
            + "\nreinforce: {k: 2, n: 2, samples_per_shard: 40, limit: 101, batch_size: 16}\n"
        )
        recipes.append(recipe)
    assert main(["reinforce", str(recipes[0])]) == 0
    shutil.copytree(one / "runs", two / "runs")  # the same teacher: only reinforce runs again
    shutil.rmtree(two / "runs/tiny/reinforce")
    proc = torchrun_edgeclip(recipes[1], two, command="reinforce")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    folder = two / "runs/tiny/reinforce"
    index = read_index(folder / "index.json")
    files = [s["file"] for s in index["shards"]]
    # 51 + 50 samples at 40 per shard
    assert files == [f"train-r{r}of2-{i:06d}.tar" for r in (0, 1) for i in (0, 1)], files
    assert index["samples"] == 101 and index["complete"]
    assert json.loads((folder / "done.json").read_text())["summary"]["processes"] == 2
    single, double = _stored(one / "runs/tiny/reinforce/index.json"), _stored(folder / "index.json")
    assert list(single) == sorted(double) == [f"{i:09d}" for i in range(101)]
    for key, (caption, syn, params, image_emb, text_emb) in single.items():
        assert double[key][:3] == (caption, syn, params), key
        np.testing.assert_allclose(double[key][3], image_emb, atol=2e-3)
        np.testing.assert_allclose(double[key][4], text_emb, atol=2e-3)
    # Training reads the samples in key order, whichever process wrote them.
    replay = [
        ReplayDataset(f / "index.json", image_transform(32, (0.5,) * 3, (0.5,) * 3), Tokenizer(16))
        for f in (one / "runs/tiny/reinforce", folder)
    ]
    for v in (0, 5, 403):
        assert replay[0][v]["caption"] == replay[1][v]["caption"]
        assert torch.equal(replay[0][v]["image"], replay[1][v]["image"])


def test_a_rerun_drops_only_the_files_of_other_process_counts(tmp_path):
    from edgeclip.stages.reinforce import _drop_other_worlds

    names = ["train-r0of2-000000.tar", "index-r1of2.json", "train-r3of12-000004.tar"]
    names += ["index-r0of1.json", "index.json", "done.json"]
    for name in names:
        (tmp_path / name).write_text("")
    _drop_other_worlds(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["train-r0of2-000000.tar", "index-r1of2.json", "index.json", "done.json"]
    )


def test_each_distinct_caption_runs_through_the_teachers_once(teachers, monkeypatch):
    seen = []
    for teacher in teachers:
        encode = teacher.encode_text
        monkeypatch.setattr(teacher, "encode_text", lambda t, e=encode: seen.append(len(t)) or e(t))
    memo = CaptionMemo(teachers, limit=4)
    first = memo(["a", "b", "a"])
    assert seen == [2, 2]  # "a" and "b", once per teacher
    np.testing.assert_allclose(first, text_embeddings(teachers, ["a", "b", "a"]), atol=1e-6)
    seen.clear()
    assert np.array_equal(memo(["b", "c"]), np.stack([first[1], memo(["c"])[0]]))
    assert seen == [1, 1]  # only "c" was new
    seen.clear()
    memo(["d", "e", "f"])  # past the limit: starts afresh with these
    assert seen == [3, 3] and set(memo.known) == {"d", "e", "f"}
