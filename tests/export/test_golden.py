"""The golden files every export ships for apps (export/golden.py): their token ids are
open_clip's, their pixels are open_clip's preprocessing, their embeddings and ranking are the
model's and the artifact's."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from compress.compat import open_clip
from compress.evaluate import classifier
from compress.models import ModelRecord
from compress.tokenizer import Tokenizer
from export.driver import export_model
from export.golden import EDGE_CAPTIONS, GOLDEN_NAME, LABELS, TEMPLATES, prompts
from tests.app_fixtures import CAPTIONS, CAPTIONS_FILE, CONTEXT_LENGTH, make_app_fixtures


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(3)
    record = ModelRecord.named("tiny")
    model = record.build().eval()
    out = tmp_path_factory.mktemp("golden") / "onnx-fp32"
    summary = export_model(
        model,
        record,
        out,
        target="onnx",
        sample_images=torch.rand(4, 3, record.image_size, record.image_size),
        sample_tokens=Tokenizer(record.context_length)(["a red circle"]),
    )
    return model, record, out, json.loads((out / GOLDEN_NAME).read_text()), summary


def open_clip_ids(texts, context_length):
    """open_clip's own tokenizer, not ours: the reference the apps must equal."""
    tokenizer = open_clip().tokenizer.SimpleTokenizer(context_length=context_length)
    return tokenizer(list(texts)).tolist()


def test_golden_token_ids_are_open_clips(exported):
    _, record, _, golden, summary = exported
    texts = [c["text"] for c in golden["captions"]]
    assert texts == [*EDGE_CAPTIONS, *prompts()]
    assert summary["golden"].endswith(GOLDEN_NAME)
    expected = open_clip_ids(texts, record.context_length)
    assert [c["ids"] for c in golden["captions"]] == expected
    # the set covers truncation (a caption longer than the context) and empty input
    assert sum(row[-1] == 49407 for row in expected) >= 2
    assert expected[EDGE_CAPTIONS.index("")][:3] == [49406, 49407, 0]


def test_golden_pixels_are_open_clips_preprocessing(exported):
    _, record, out, golden, _ = exported
    picture = Image.open(out / golden["image"]["file"])
    assert (picture.width, picture.height) == (golden["image"]["width"], golden["image"]["height"])
    assert picture.width > picture.height > record.image_size  # downsampled, long side cropped
    assert (
        hashlib.sha256((out / "golden.png").read_bytes()).hexdigest() == golden["image"]["sha256"]
    )

    norm = record.normalization
    reference = open_clip().transform.image_transform(record.image_size, is_train=False, **norm)
    tensor = reference(picture).numpy()  # torchvision's Resize + CenterCrop + Normalize
    pre = golden["preprocessed"]
    assert pre["shape"] == [1, *tensor.shape]
    assert hashlib.sha256(tensor.astype("<f4").tobytes()).hexdigest() == pre["tensor_sha256"]
    np.testing.assert_allclose(tensor.reshape(3, -1).mean(axis=1), pre["mean"], atol=1e-6)
    np.testing.assert_allclose(tensor.reshape(3, -1).std(axis=1), pre["std"], atol=1e-6)

    pixels = np.asarray(Image.open(out / pre["file"]))
    assert pixels.shape == (record.image_size, record.image_size, 3)
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == pre["pixels_sha256"]
    mean, std = (np.array(norm[k], np.float32)[:, None, None] for k in ("mean", "std"))
    np.testing.assert_array_equal(
        (pixels.transpose(2, 0, 1).astype(np.float32) / 255.0 - mean) / std, tensor
    )


def test_golden_embeddings_and_ranking_are_the_models(exported):
    model, record, out, golden, _ = exported
    tokenize = Tokenizer(record.context_length)
    image = torch.from_numpy(
        np.asarray(Image.open(out / golden["preprocessed"]["file"])).copy()
    ).permute(2, 0, 1)[None]
    mean, std = (torch.tensor(record.normalization[k])[:, None, None] for k in ("mean", "std"))
    with torch.no_grad():
        image_emb = model.encode_image((image.float() / 255.0 - mean) / std)[0]
        class_emb = classifier(model, tokenize, LABELS, TEMPLATES, batch_size=8)
    np.testing.assert_allclose(golden["image_embedding"], image_emb.numpy(), atol=1e-5)
    scale = model.logit_scale.exp().item()
    scores = (scale * class_emb @ image_emb).numpy()
    zs = golden["zero_shot"]
    assert zs["labels"] == list(LABELS) and zs["templates"] == list(TEMPLATES)
    assert zs["logit_scale"] == pytest.approx(scale)
    np.testing.assert_allclose(zs["scores"], scores, rtol=1e-5)
    assert zs["ranking"] == np.argsort(-scores, kind="stable").tolist()


def test_golden_embeddings_match_the_artifact(exported):
    """What an app's self-check does on the phone: the shipped models, fed the golden inputs."""
    import onnxruntime as ort

    _, record, out, golden, _ = exported
    ids = np.array([c["ids"] for c in golden["captions"]], np.int64)
    session = ort.InferenceSession(str(out / "text" / "model.onnx"))
    text = np.concatenate([session.run(None, {"tokens": row[None]})[0] for row in ids])
    np.testing.assert_allclose(text, [c["embedding"] for c in golden["captions"]], atol=1e-5)


def test_app_fixtures_captions(tmp_path):
    out = make_app_fixtures(tmp_path)
    data = json.loads((out / CAPTIONS_FILE).read_text())
    texts = [c["text"] for c in data["captions"]]
    assert len(texts) == CAPTIONS and data["context_length"] == CONTEXT_LENGTH
    assert sum(t.isascii() for t in texts) < 0.8 * CAPTIONS  # the multilingual set is there
    assert [c["ids"] for c in data["captions"]] == open_clip_ids(texts, CONTEXT_LENGTH)
    assert (out / "export" / GOLDEN_NAME).is_file()
