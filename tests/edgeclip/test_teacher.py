"""Recipes that bring their own model: an open_clip checkpoint, or an edgeclip model file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from compress.compat import open_clip
from compress.models import ModelRecord, load_model, save_model
from edgeclip.pipeline import check_inputs, run_pipeline
from edgeclip.recipe import RecipeError, load_recipe, parse_recipe
from edgeclip.stages import STAGES
from tests.helpers import ROOT, teacher_recipe


@pytest.mark.slow
def test_teacher_from_an_edgeclip_model_file_is_evaluated_and_exported(tmp_path):
    torch.manual_seed(0)
    record = ModelRecord.named("tiny_mobile", {"text": {"kind": "gated"}})
    model = record.build()
    save_model(model, record, tmp_path / "mine.pt")
    extra = """\
    eval:
      zeroshot: [zs_colour]
      retrieval: [retrieval]
    export:
      batch_size: 2
      samples: 8
    """
    path = teacher_recipe(
        tmp_path, f"model: tiny_mobile\ncheckpoint: {tmp_path / 'mine.pt'}", extra
    )
    run_dir = run_pipeline(load_recipe(path), STAGES).run_dir
    done = sorted(p.name for p in run_dir.iterdir() if (p / "done.json").exists())
    assert done == ["data", "eval", "export", "report", "teacher"]
    loaded, saved = load_model(run_dir / "teacher" / "model.pt")
    assert saved.attention == {"image": None, "text": {"kind": "gated"}}
    assert saved.provenance["stage"] == "teacher" and saved.provenance["checkpoint"] == str(
        tmp_path / "mine.pt"
    )
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    manifest = json.loads(
        (run_dir / "export" / "onnx-fp32" / "image" / "manifest.json").read_text()
    )
    assert manifest["parity"]["max_abs"] <= 1e-5  # exported after folding, checked against unfolded


@pytest.mark.slow
def test_teacher_from_an_openclip_checkpoint(tmp_path):
    torch.manual_seed(0)
    oc_model = open_clip().create_model("MobileCLIP2-S0", pretrained=None).eval()
    checkpoint = tmp_path / "mobileclip2_s0.pt"
    torch.save(oc_model.state_dict(), checkpoint)
    path = teacher_recipe(tmp_path, f"model: openclip:MobileCLIP2-S0\ncheckpoint: {checkpoint}")
    run_dir = run_pipeline(load_recipe(path), STAGES).run_dir
    assert not (run_dir / "data").exists(), "nothing reads the scenes, so none are written"
    ours, record = load_model(run_dir / "teacher" / "model.pt")
    assert record.name == "openclip:MobileCLIP2-S0" and record.normalization["mean"] == (
        0.0,
        0.0,
        0.0,
    )
    images = torch.rand(2, 3, 256, 256)
    tokens = open_clip().get_tokenizer("MobileCLIP2-S0")(["a dog", "two red squares"])
    with torch.no_grad():
        assert (oc_model.encode_image(images, True) - ours.encode_image(images)).abs().max() <= 1e-5
        assert (oc_model.encode_text(tokens, True) - ours.encode_text(tokens)).abs().max() <= 1e-5
    summary = json.loads((run_dir / "teacher" / "done.json").read_text())["summary"]
    assert summary["weights"] == str(checkpoint)


@pytest.mark.parametrize(
    "teacher, message",
    [
        (
            "model: openclip:RN50",
            "teacher.model: open_clip architecture 'RN50' is not supported; supported: ",
        ),
        (
            "model: openclip:ViT-B-32\npretrained: nope",
            "teacher.pretrained: open_clip has no tag 'nope' for ViT-B-32; tags: ",
        ),
        (
            "model: tiny\npretrained: openai",
            "teacher.pretrained: pretrained tags name open_clip weights",
        ),
        ("model: tiny\ncheckpoint: missing.pt", "teacher.checkpoint: no such file: missing.pt"),
        (
            "model: openclip:ViT-B-32\ncheckpoint: x.pt\npretrained: openai",
            "give either checkpoint or pretrained",
        ),
        (
            "model: nonsense",
            "teacher.model: unknown model 'nonsense'; expected 'openclip:<arch>', 'mobileclip:<name>' or one of",
        ),
        (
            "model: mobileclip:s3",
            "teacher.model: unknown Apple MobileCLIP 'mobileclip:s3'; expected one of: "
            "mobileclip:s0, mobileclip:s1, mobileclip:s2, mobileclip:b",
        ),
        (
            "model: mobileclip:b\npretrained: datacompdr",
            "teacher.pretrained: Apple's MobileCLIP files have no tags",
        ),
        ("model: mobileclip:s0\ncheckpoint: gone.pt", "teacher.checkpoint: no such file: gone.pt"),
        (
            "model: openclip:ViT-B-16-SigLIP",
            "teacher.tokenizer: missing: ViT-B-16-SigLIP reads text tokenized by "
            "timm/ViT-B-16-SigLIP (SentencePiece), not CLIP's BPE: fetch tokenizer.json and "
            "tokenizer_config.json from https://huggingface.co/timm/ViT-B-16-SigLIP",
        ),
        (
            "model: tiny_siglip\ntokenizer: gone/",
            "teacher.tokenizer: no such file or folder: gone/",
        ),
    ],
)
def test_bad_teacher_sections(teacher, message):
    """Caught by validation, before any stage runs (files and tags by the teacher stage's check)."""
    text = "name: t\nteacher:\n" + textwrap.indent(teacher, "  ") + "\n"
    with pytest.raises(RecipeError) as err:
        check_inputs(parse_recipe(text, "t.yaml"), STAGES)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("t.yaml:")


def test_the_pe_core_recipe_checks_its_models_and_files_without_the_hub(tmp_path, monkeypatch):
    """recipes/pe_core_distill.yaml as written passes every stage's input check once the files
    it names exist (empty stand-ins): PE-Core-L and SigLIP2 architectures and their open_clip
    tags, SigLIP2's tokenizer folder, the shards and the evaluation CSVs; nothing downloads."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_data/shards").mkdir(parents=True)
    (tmp_path / "my_data/shards/train-000000.tar").touch()
    (tmp_path / "my_data/ViT-SO400M-16-SigLIP2-384").mkdir()
    for csv in ("imagenet_val.csv", "coco_val.csv"):
        (tmp_path / "my_data" / csv).touch()
    recipe = load_recipe(ROOT / "recipes/pe_core_distill.yaml")
    check_inputs(recipe, STAGES)
    assert recipe.distill.inherit.towers == ("text",)
    (tmp_path / "my_data/ViT-SO400M-16-SigLIP2-384").rmdir()
    with pytest.raises(RecipeError, match=r"reinforce\.ensemble\[0\]\.tokenizer: no such file"):
        check_inputs(recipe, STAGES)


def test_pretrain_and_teacher_together_is_an_error():
    text = "name: t\npretrain: {model: tiny}\nteacher: {model: tiny}\n"
    with pytest.raises(RecipeError, match="either pretrain .* or teacher"):
        parse_recipe(text, "t.yaml")


@pytest.mark.slow
def test_cli_reports_a_code_carrying_checkpoint_in_one_line(tmp_path):
    import pickle

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": pickle.loads}, evil)
    path = teacher_recipe(tmp_path, f"model: openclip:MobileCLIP2-S0\ncheckpoint: {evil}")
    proc = subprocess.run(
        [sys.executable, "-m", "edgeclip.cli", "run", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "not a weights-only checkpoint (it references pickle.loads)" in last
    assert "Traceback" not in proc.stderr
