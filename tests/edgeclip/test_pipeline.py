"""The pipeline end to end on a tiny recipe: outputs, skipping, --from, resume after a kill, DDP."""

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.data.reinforced import ReinforcedShards
from compress.io import sha256_file
from compress.models import load_model
from edgeclip.pipeline import run_pipeline
from edgeclip.recipe import load_recipe
from edgeclip.stages import STAGES, qat
from tests.helpers import (
    ROOT,
    torchrun_edgeclip,
    write_sentencepiece_tokenizer,
    write_tiny_recipe,
)

EDGECLIP = [sys.executable, "-m", "edgeclip.cli"]


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "pretrain" / "model.pt", weights_only=True)["state_dict"]


def _finished(run_dir: Path) -> dict:
    return {
        p.name: json.loads((p / "done.json").read_text())["finished"]
        for p in run_dir.iterdir()
        if (p / "done.json").exists()
    }


@pytest.mark.slow
@pytest.mark.parametrize("format", ["csv", "wds"])
def test_run_writes_every_stage_and_report(tmp_path, format):
    recipe = load_recipe(write_tiny_recipe(tmp_path, format=format))
    ctx = run_pipeline(recipe, STAGES)
    run_dir = ctx.run_dir
    assert sorted(_finished(run_dir)) == ["data", "eval", "export", "pretrain", "report"]
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["zeroshot"]["zs_colour_shape"]["classes"] == 36
    assert 0 <= metrics["retrieval"]["retrieval"]["text_to_image_r1"] <= 1
    for tower in ("image", "text"):
        manifest = json.loads(
            (run_dir / "export" / "onnx-fp32" / tower / "manifest.json").read_text()
        )
        assert manifest["recipe_hash"] == recipe.hash and manifest["parity"]["cosine_min"] > 0.9999
    report = (run_dir / "report.md").read_text()
    assert "zs_colour_shape" in report and "text→image" in report and "`image/model.onnx`" in report
    assert json.loads((run_dir / "report.json").read_text())["recipe_hash"] == recipe.hash
    saved = json.loads((run_dir / "recipe.json").read_text())
    assert saved["hash"] == recipe.hash and saved["recipe"]["data"]["format"] == format


@pytest.mark.slow
def test_rerun_skips_done_stages_and_from_reruns(tmp_path):
    path = write_tiny_recipe(tmp_path, steps=2)
    run_dir = run_pipeline(load_recipe(path), STAGES).run_dir
    first = _finished(run_dir)
    time.sleep(1.1)
    run_pipeline(load_recipe(path), STAGES)
    assert _finished(run_dir) == first  # nothing reran
    run_pipeline(load_recipe(path), STAGES, from_stage="export")
    again = _finished(run_dir)
    assert again["pretrain"] == first["pretrain"] and again["export"] != first["export"]
    time.sleep(1.1)
    run_pipeline(load_recipe(path, ["eval.templates=['a photo of a {}.']"]), STAGES)
    changed = _finished(run_dir)  # an eval-only change reruns eval (and what follows), not training
    assert changed["pretrain"] == first["pretrain"] and changed["eval"] != again["eval"]


@pytest.mark.parametrize("budget", [None, 0.005])
def test_an_eval_change_reruns_the_stages_that_use_the_quant_plan_only(tmp_path, budget):
    """The qat stage trains with the layers quant.max_drop's plan keeps in float, and the plan
    is measured on the eval tasks: with a budget, new tasks rerun it; without, they rerun only
    eval and what follows it (the demo's training stays done)."""
    base = [f"runs_dir={tmp_path / 'runs'}"] + ([f"quant.max_drop={budget}"] if budget else [])
    before = load_recipe(ROOT / "recipes/demo.yaml", base)
    after = load_recipe(ROOT / "recipes/demo.yaml", [*base, "eval.zeroshot=[zs_shape]"])
    changed = {
        s.name
        for s in STAGES
        if before.section_hash(*s.sections(before)) != after.section_hash(*s.sections(after))
    }
    uses_plan = {"qat"} if budget else set()
    assert changed == {"eval", "export", "profile"} | uses_plan
    runs = []  # the pipeline's own rerun rule, around the qat stage's dependencies
    stage = replace(qat.STAGE, run=lambda ctx, out: runs.append(ctx.recipe.eval.zeroshot) or {})
    for recipe in (before, after, after):
        run_pipeline(recipe, [stage])
    assert runs == [before.eval.zeroshot] + ([after.eval.zeroshot] if budget else [])


@pytest.mark.slow
def test_resume_after_interrupt_matches_uninterrupted(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = run_pipeline(load_recipe(write_tiny_recipe(tmp_path / "a", steps=6)), STAGES).run_dir
    path = write_tiny_recipe(tmp_path / "b", steps=6)
    with pytest.raises(KeyboardInterrupt):  # stopped after 3 steps, as if killed
        run_pipeline(load_recipe(path), STAGES, stop_after=3)
    resumed_dir = tmp_path / "b" / "runs" / "tiny"
    assert torch.load(resumed_dir / "pretrain" / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (resumed_dir / "pretrain" / "done.json").exists()
    run_pipeline(load_recipe(path), STAGES)
    a, b = _weights(straight), _weights(resumed_dir)
    assert all(torch.equal(a[k], b[k]) for k in a), (
        "resumed training differs from uninterrupted training"
    )


@pytest.mark.slow
def test_killed_process_resumes_from_checkpoint(tmp_path):
    path = write_tiny_recipe(tmp_path, steps=40)
    run_dir = tmp_path / "runs" / "tiny"
    proc = subprocess.Popen(
        [*EDGECLIP, "run", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    ckpt = run_dir / "pretrain" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (run_dir / "pretrain" / "done.json").exists()
    done = subprocess.run(
        [*EDGECLIP, "run", str(path)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "data] done already" in done.stdout
        and "resuming from the checkpoint at step" in done.stdout
    )
    assert json.loads((run_dir / "pretrain" / "train.json").read_text())["steps"] == 40


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["clip", "sigmoid"])
def test_two_process_torchrun_matches_single_process(tmp_path, loss):
    """2-process gloo DDP with the global batch split in two gives the single-process result,
    with either pretraining loss (the sigmoid loss's logit bias included)."""
    recipes = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        path = write_tiny_recipe(tmp_path / folder, steps=3, precision="fp32")
        path.write_text(
            path.read_text().replace("  lr: 2.0e-3\n", f"  lr: 2.0e-3\n  loss: {{kind: {loss}}}\n")
        )
        recipes.append(path)
    single, double = recipes
    run_pipeline(load_recipe(single), STAGES)
    proc = torchrun_edgeclip(double, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        json.loads((tmp_path / "two/runs/tiny/pretrain/train.json").read_text())["world_size"] == 2
    )
    a, b = _weights(tmp_path / "one/runs/tiny"), _weights(tmp_path / "two/runs/tiny")
    assert ("logit_bias" in a) == (loss == "sigmoid")
    if loss == "sigmoid":  # it learned, from SigLIP's start
        assert a["logit_bias"].item() != -10.0
    for k in a:
        if k.endswith("qkv.bias"):
            # The key bias cannot change attention (softmax ignores a per-row constant), so its
            # true gradient is 0 and AdamW turns the float noise it gets into lr-sized steps that
            # differ run to run. Compare the query and value biases only.
            a[k], b[k] = a[k].view(3, -1)[[0, 2]], b[k].view(3, -1)[[0, 2]]
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def _user_csvs(folder: Path, n: int = 24) -> dict[str, Path]:
    """A user's own data: PNG files with a train CSV (captions), a labelled CSV and a pairs CSV."""
    from PIL import Image

    colours = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}
    rows = []
    for i in range(n):
        name = list(colours)[i % 3]
        path = folder / "images" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), colours[name]).save(path)
        rows.append((path, name))
    files = {
        "train": folder / "train.csv",
        "labelled": folder / "labelled.csv",
        "pairs": folder / "pairs.csv",
    }
    files["train"].write_text("filepath,caption\n" + "".join(f"{p},a {c} photo\n" for p, c in rows))
    files["labelled"].write_text("filepath,label\n" + "".join(f"{p},{c}\n" for p, c in rows))
    files["pairs"].write_text(
        "filepath,caption\n" + "".join(f"{p},a {c} square {i}\n" for i, (p, c) in enumerate(rows))
    )
    return files


def test_a_run_on_user_csvs_has_no_scenes_in_its_report(tmp_path):
    files = _user_csvs(tmp_path)
    path = tmp_path / "mine.yaml"
    path.write_text(f"""\
name: mine
runs_dir: {tmp_path / "runs"}
data: {{train: {files["train"]}}}
pretrain: {{model: tiny, steps: 2, batch_size: 8, warmup: 1, log_every: 1}}
distill: {{model: tiny_student, steps: 2, batch_size: 8, warmup: 1, log_every: 1}}
eval: {{zeroshot: [{files["labelled"]}], retrieval: [{files["pairs"]}], batch_size: 8}}
export: {{batch_size: 2, samples: 4}}
""")
    run_dir = run_pipeline(load_recipe(path), STAGES).run_dir
    assert sorted(_finished(run_dir)) == ["distill", "eval", "export", "pretrain", "report"]
    report = (run_dir / "report.md").read_text()
    assert (
        str(files["labelled"]) in report and "## Distillation" in report and "## Exports" in report
    )
    assert f"{files['labelled']} top-1" in report  # the distillation table names the user's task
    for word in ("scenes", "Scenes", "zs_", "colour"):
        assert word not in report, word


@pytest.mark.slow
def test_a_sigmoid_teacher_to_verified_int8_students(tmp_path):
    """End to end with a SigLIP-style teacher (random init, a logit bias, its own SentencePiece
    tokenizer file): its knowledge (scale and bias) stored by reinforce from captions in its own
    tokens, a PE-Core-style student (rotary embeddings, attention pooling) distilled with the
    sigmoid loss as the base under the stored affinities, QAT with the same loss, int8 exports
    verified, each naming the BPE it reads."""
    tokenizer = write_sentencepiece_tokenizer(tmp_path)
    recipe = write_tiny_recipe(tmp_path, steps=2)
    text = recipe.read_text().split("\npretrain:")[0]
    sigmoid = "{kind: reinforced, alpha: 0.5, base: sigmoid}"
    recipe.write_text(
        text
        + f"\nteacher: {{model: tiny_siglip, tokenizer: {tokenizer}}}\n"
        + "reinforce: {k: 1, n: 1, samples_per_shard: 100, limit: 64}\n"
        + f"distill: {{model: tiny_pe, inherit: {{method: none}}, loss: {sigmoid}, steps: 3,"
        + " batch_size: 16, warmup: 1}\n"
        + "qat: {steps: 2, batch_size: 16, warmup: 1, loss: {alpha: 0.5, base: sigmoid}}\n"
        # a 3-step student's captions are near-ties whose ranking flips at any rounding: the
        # artifacts are held to their simulation by cosine and max-abs, not by agreement
        # an int8 image tower beside a w4 text tower (a precision per tower) in one of them
        + "export: {targets: [onnx-int8+w4, executorch-int8], batch_size: 2, samples: 8,"
        + " min_agreement: 0.0}\n"
    )
    run_dir = run_pipeline(load_recipe(recipe), STAGES).run_dir
    teacher, record = load_model(run_dir / "teacher" / "model.pt")
    assert record.config["text"]["tokenizer"]["kind"] == "hf_tokenizer"
    index = json.loads((run_dir / "reinforce" / "index.json").read_text())
    assert index["biases"] == [-10.0]  # the teacher's bias, stored beside its scale
    first = next(iter(ReinforcedShards(run_dir / "reinforce" / "index.json")))
    with torch.no_grad():  # stored from the caption in the teacher's own tokens
        own = teacher.encode_text(teacher.tokenize([first["caption"]]))[0].numpy()
    np.testing.assert_allclose(first["text_emb"][0], own, atol=2e-3)  # stored in fp16
    student = torch.load(run_dir / "distill" / "model.pt", weights_only=True)["state_dict"]
    assert student["logit_bias"].item() != -10.0  # learned from SigLIP's start
    for target in ("onnx-int8+w4", "executorch-int8"):
        for tower in ("image", "text"):
            manifest = json.loads(
                (run_dir / "export" / target / tower / "manifest.json").read_text()
            )
            assert manifest["parity"]["cosine_min"] >= 0.99, (target, tower)  # its simulation's
            assert "logit_bias" in manifest  # the sigmoid-trained student's, for apps
            expected = "w4" if (target, tower) == ("onnx-int8+w4", "text") else "int8"
            assert manifest["precision"] == expected
            # the int8 tower from the qat stage's model, the w4 one from the distilled model
            made = "qat" if expected == "int8" else "distill"
            assert manifest["provenance"]["model_file"] == str(run_dir / made / "model.pt")
        text_manifest = json.loads(
            (run_dir / "export" / target / "text" / "manifest.json").read_text()
        )
        assert text_manifest["tokenizer"]["kind"] == "clip_bpe"  # the student's, not the teacher's
    behind = text_manifest["provenance"]["record"]  # the int8 model's record: its float parent's
    teacher_file = run_dir / "teacher" / "model.pt"
    assert behind["teachers"] == [
        {"model": "tiny_siglip", "file": str(teacher_file), "sha256": sha256_file(teacher_file)}
    ]
    assert behind["reinforced_index"]["sha256"] == sha256_file(run_dir / "reinforce" / "index.json")
