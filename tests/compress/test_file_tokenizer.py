"""A teacher's own tokenizer file (SigLIP's SentencePiece models): a real Unigram tokenizer
trained here on scenes captions, as open_clip would use it (cleaning, the file's special tokens,
truncation and padding to the context length), carried by the model's record, refused with one
line where it is missing, changed or not the model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.distill.inherit import InheritError, inherit
from compress.distill.reinforce import text_embeddings
from compress.distill.teacher_inputs import TeacherInputs
from compress.models import ModelRecord, build_model, load_model, save_model
from compress.models.given import load_given
from compress.models.loaders import LoaderError
from compress.tokenizer import FileTokenizer, TokenizerFileError, tokenizer_from_spec
from edgeclip.recipe.loading import parse_recipe
from edgeclip.recipe.sections import RecipeError
from tests.helpers import write_sentencepiece_tokenizer

CONTEXT = 16  # tiny_siglip's text context


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return write_sentencepiece_tokenizer(tmp_path_factory.mktemp("siglip_tokenizer"))


def test_captions_become_the_files_ids_ended_and_padded(tokenizer_dir):
    from tokenizers import Tokenizer

    tokenize = FileTokenizer(tokenizer_dir, CONTEXT, clean="canonicalize")
    text = "a small red circle"
    ids = tokenize([text, "A Small, RED circle!"])
    assert ids.shape == (2, CONTEXT) and ids.dtype == torch.long
    assert torch.equal(ids[0], ids[1])  # canonicalize: punctuation and case dropped
    eos, pad = tokenize.encoder.token_to_id("</s>"), tokenize.encoder.token_to_id("<pad>")
    raw = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))  # no cut, no padding
    pieces = raw.encode(text, add_special_tokens=False).ids
    assert ids[0].tolist() == pieces + [eos] + [pad] * (CONTEXT - len(pieces) - 1)
    assert raw.decode(pieces) == text
    assert torch.equal(tokenize(text), ids[0])  # one text: one row
    kept = FileTokenizer(tokenizer_dir, CONTEXT, clean="whitespace")("A Small, RED circle!")
    assert not torch.equal(kept, ids[1])  # whitespace cleaning keeps case and punctuation


def test_a_long_caption_is_cut_to_the_context_and_still_ends_the_sequence(tokenizer_dir):
    tokenize = FileTokenizer(tokenizer_dir, CONTEXT)
    ids = tokenize(" ".join(["a large blue square left of a small green triangle"] * 4))
    assert ids.shape == (CONTEXT,) and ids[-1] == tokenize.encoder.token_to_id("</s>")


def test_files_without_what_encoding_needs_are_one_line_errors(tokenizer_dir, tmp_path):
    with pytest.raises(TokenizerFileError, match="no tokenizer.json there"):
        FileTokenizer(tmp_path, CONTEXT)
    lone = tmp_path / "tokenizer.json"
    lone.write_bytes((tokenizer_dir / "tokenizer.json").read_bytes())
    with pytest.raises(TokenizerFileError, match="no pad token"):
        FileTokenizer(lone, CONTEXT)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerFileError, match="not a tokenizer file"):
        FileTokenizer(tmp_path / "bad", CONTEXT)


def test_the_model_file_carries_its_tokenizer_and_refuses_a_changed_one(tokenizer_dir, tmp_path):
    model, record = load_given("tiny_siglip", tokenizer=tokenizer_dir)
    spec = record.config["text"]["tokenizer"]
    assert spec["kind"] == "hf_tokenizer" and len(spec["sha256"]) == 64
    assert isinstance(model.tokenize, FileTokenizer)
    save_model(model, record, tmp_path / "teacher.pt")
    again, _ = load_model(tmp_path / "teacher.pt")
    captions = ["a small red circle", "two large blue squares"]
    assert torch.equal(again.tokenize(captions), model.tokenize(captions))
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (changed / name).write_bytes((tokenizer_dir / name).read_bytes())
    spec = {**spec, "file": str(changed / "tokenizer.json")}
    tokenizer_from_spec(spec, CONTEXT)  # the same bytes elsewhere: fine
    (changed / "tokenizer.json").write_text((changed / "tokenizer.json").read_text() + "\n")
    with pytest.raises(TokenizerFileError, match="changed since the model was made"):
        tokenizer_from_spec(spec, CONTEXT)


def test_a_tokenizer_larger_than_the_token_table_is_refused(tokenizer_dir):
    record = ModelRecord.named("tiny_siglip")
    small = {**record.config, "text": {**record.config["text"], "vocab_size": 50}}
    torch.manual_seed(0)
    from compress.models import build_from_config
    from compress.models.given import own_tokenizer

    with pytest.raises(LoaderError, match="more than the 50 rows"):
        own_tokenizer(build_from_config(small), record, tokenizer_dir, "whitespace")


def test_the_teacher_reads_its_own_tokens_online_and_in_reinforce(tokenizer_dir):
    """TeacherInputs re-tokenises a student's captions by the teacher's file; reinforce's
    stored text embeddings are the teacher's of those tokens."""
    torch.manual_seed(0)
    teacher, _ = load_given("tiny_siglip", tokenizer=tokenizer_dir)
    student = ModelRecord.named("tiny").build()
    captions = ["a small red circle", "a large green square"]
    batch = {
        "image": torch.rand(2, 3, 32, 32),
        "text": student.tokenize(captions),
        "caption": captions,
    }
    _, tokens = TeacherInputs(teacher.eval(), student)(batch)
    assert torch.equal(tokens, teacher.tokenize(captions))
    with torch.no_grad():
        expected = torch.nn.functional.normalize(teacher.encode_text(tokens), dim=-1).numpy()
    np.testing.assert_allclose(text_embeddings([teacher], captions), expected, atol=1e-6)


def test_a_siglip_model_without_its_tokenizer_is_told_what_to_fetch():
    """(A recipe's teacher section is checked before anything runs: tests/edgeclip/test_teacher.py.)"""
    with pytest.raises(LoaderError, match="fetch tokenizer.json and tokenizer_config.json from"):
        load_given("openclip:ViT-B-16-SigLIP")


def test_a_teacher_that_reads_its_own_tokens_is_not_exported_as_the_runs_model(tokenizer_dir):
    text = f"name: t\nteacher: {{model: tiny_siglip, tokenizer: {tokenizer_dir}}}\nexport: {{}}\n"
    with pytest.raises(RecipeError, match="export: the run's model is its teacher"):
        parse_recipe(text, "t.yaml")


def test_a_text_tower_inherits_only_from_a_teacher_reading_the_same_tokens(tokenizer_dir):
    """A CLIP-BPE student cannot take the token table (and the layers behind it) of a teacher
    reading a SentencePiece file: one line, before anything is copied; the image tower alone
    inherits; a student reading the teacher's own file inherits both."""
    torch.manual_seed(0)
    teacher, _ = load_given("tiny_siglip", tokenizer=tokenizer_dir)
    student = build_model("tiny_siglip")  # a registry student: CLIP's BPE
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(InheritError) as err:
        inherit(teacher, student)
    message = str(err.value)
    assert "\n" not in message and message.startswith("cannot inherit the text tower: ")
    assert "tokenizer.json" in message and "CLIP's BPE" in message and "towers: [image]" in message
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())

    report = inherit(teacher, student, towers=("image",))
    assert report["text"] is None and report["visual"]["layers"] == [0, 1]
    for key, value in student.state_dict().items():
        source = teacher.state_dict()[key]
        same = torch.equal(value, before[key] if key.startswith("text.") else source)
        assert same, key

    alike, _ = load_given("tiny_siglip", tokenizer=tokenizer_dir)
    assert inherit(teacher, alike)["text"]["layers"] == [0, 1]


def test_a_recipe_whose_student_would_inherit_another_tokenizers_text_is_refused(tokenizer_dir):
    teacher = f"teacher: {{model: tiny_siglip, tokenizer: {tokenizer_dir}}}\n"
    text = f"name: t\n{teacher}distill:\n  model: tiny_siglip\n  inherit: {{method: leading}}\n"
    with pytest.raises(RecipeError) as err:
        parse_recipe(text, "t.yaml")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("t.yaml:")
    assert "distill.inherit.towers: the teacher reads text by its own tokenizer" in str(err.value)
    parse_recipe(text.replace("leading}", "leading, towers: [image]}"), "t.yaml")
