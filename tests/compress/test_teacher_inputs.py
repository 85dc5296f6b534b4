"""A student's batch as a teacher with other preprocessing sees it: resized (bicubic, antialiased),
re-normalised images and captions re-tokenised for the teacher's context length."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compress.distill.teacher_inputs import TeacherInputs
from compress.models import build_from_config, build_model, model_config
from compress.models.loaders import load_openclip
from compress.tokenizer import EOT_ID, Tokenizer

CAPTIONS = [
    "a red circle",
    "Two BLUE squares &amp; a star, on a dark background!",
    "",
    "a photo of " + "a very small green triangle next to a yellow star " * 8,  # > 77 tokens
    "café façade 123",
    "   extra   whitespace\tand\nnewlines  ",
]
B = len(CAPTIONS)


def _stats(model):
    mean, std = (torch.tensor(model.preprocess[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    return mean, std


def student_batch(student, seed: int = 0) -> tuple[dict, torch.Tensor]:
    """A training-like batch for ``student`` and the [0, 1] pixels its images were made from."""
    g = torch.Generator().manual_seed(seed)
    size = student.visual.image_size
    pixels = torch.rand(B, 3, size, size, generator=g)
    pixels[0] = 0.0  # black and white images: the resize overshoots, the clamp must catch it
    pixels[1, :, ::2] = 1.0
    mean, std = _stats(student)
    batch = {
        "image": (pixels - mean) / std,
        "text": Tokenizer(student.text.context_length)(CAPTIONS),
        "caption": list(CAPTIONS),
    }
    return batch, pixels


def expected_pixels(pixels: torch.Tensor, size: int) -> torch.Tensor:
    if pixels.shape[-1] != size:
        pixels = F.interpolate(
            pixels, size=(size, size), mode="bicubic", antialias=True, align_corners=False
        )
    return pixels.clamp(0.0, 1.0)


@pytest.fixture(scope="module")
def mobileclip():
    torch.manual_seed(0)
    teacher, config = load_openclip("MobileCLIP2-S0")  # no checkpoint, no tag: random weights
    return teacher.eval(), config


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return build_model("tiny").eval()


def test_the_pair_really_differs(mobileclip, student):
    teacher, config = mobileclip
    assert teacher.visual.image_size == 256 and student.visual.image_size == 32
    assert teacher.preprocess == {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    assert student.preprocess != teacher.preprocess
    assert teacher.text.context_length == 77 and student.text.context_length == 16
    assert config["vision"]["family"] == "hybrid"


def test_mobileclip_teacher_gets_resized_renormalised_images_and_its_own_tokens(
    mobileclip, student
):
    teacher, _ = mobileclip
    batch, pixels = student_batch(student)
    original = {
        k: (v.clone() if isinstance(v, torch.Tensor) else list(v)) for k, v in batch.items()
    }
    images, tokens = TeacherInputs(teacher, student)(batch)

    assert images.shape == (B, 3, 256, 256) and images.dtype == torch.float32
    mean, std = _stats(teacher)
    seen = images * std + mean  # the teacher's own pixels
    want = expected_pixels(pixels, 256)
    torch.testing.assert_close(seen, want, rtol=0, atol=2e-5)
    assert seen.min() >= 0 and seen.max() <= 1
    # the resize did overshoot on the hard edges, so the clamp mattered
    unclamped = F.interpolate(pixels, size=(256, 256), mode="bicubic", antialias=True)
    assert unclamped.min() < -1e-3 or unclamped.max() > 1 + 1e-3
    # not a plain bilinear / nearest resize
    nearest = F.interpolate(pixels, size=(256, 256), mode="nearest")
    assert (seen - nearest).abs().max() > 1e-2

    assert torch.equal(tokens, Tokenizer(77)(CAPTIONS))
    assert tokens.shape == (B, 77) and batch["text"].shape == (B, 16)
    assert tokens.shape != batch["text"].shape
    assert (tokens == EOT_ID).sum(dim=1).tolist() == [1] * B
    assert tokens[3, -1] == EOT_ID  # the long caption is truncated at 77, not at 16
    assert (tokens[3] != 0).sum() == 77 and (batch["text"][3] != 0).sum() == 16

    for key, value in original.items():  # the student's batch is left as it was
        if isinstance(value, torch.Tensor):
            assert torch.equal(batch[key], value), key
        else:
            assert batch[key] == value, key

    with torch.no_grad():
        image_emb, text_emb, scale = teacher(images, tokens)
    assert image_emb.shape == (B, 512) and text_emb.shape == (B, 512)
    assert torch.isfinite(image_emb).all() and torch.isfinite(text_emb).all()
    assert torch.isfinite(scale)
    torch.testing.assert_close(image_emb.norm(dim=-1), torch.ones(B))


def test_same_preprocessing_passes_the_batch_through(student):
    torch.manual_seed(1)
    teacher = build_model("tiny").eval()
    batch, _ = student_batch(student)
    images, tokens = TeacherInputs(teacher, student)(batch)
    assert images is batch["image"] or torch.equal(images, batch["image"])
    assert tokens is batch["text"] or torch.equal(tokens, batch["text"])


def _variant(name: str, **vision_or_text) -> torch.nn.Module:
    cfg = model_config(name)
    for key, value in vision_or_text.items():
        part, field = key.split("__")
        cfg[part][field] = value
    return build_from_config(cfg).eval()


def test_downsizing_is_antialiased(student):
    """A 64-px student under a 32-px teacher: antialiasing changes a downscale, so it is checked."""
    big = build_model("demo_student").eval()  # 64 px, context 24
    batch, pixels = student_batch(big, seed=3)
    images, tokens = TeacherInputs(student, big)(batch)
    mean, std = _stats(student)
    seen = images * std + mean
    torch.testing.assert_close(seen, expected_pixels(pixels, 32), rtol=0, atol=2e-5)
    aliased = F.interpolate(pixels, size=(32, 32), mode="bicubic", antialias=False).clamp(0, 1)
    assert (seen - aliased).abs().max() > 1e-2
    assert torch.equal(tokens, Tokenizer(16)(CAPTIONS))


def test_same_size_other_statistics_renormalises_only(student):
    teacher = _variant("tiny", vision__mean=[0.5, 0.5, 0.5], vision__std=[0.25, 0.5, 1.0])
    batch, pixels = student_batch(student, seed=4)
    images, tokens = TeacherInputs(teacher, student)(batch)
    mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    std = torch.tensor([0.25, 0.5, 1.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(images, (pixels.clamp(0, 1) - mean) / std, rtol=0, atol=1e-5)
    assert tokens is batch["text"]  # same context length: the tokens are reused


def test_other_context_length_only_retokenises(student):
    teacher = _variant("tiny", text__context_length=24)
    batch, _ = student_batch(student, seed=5)
    images, tokens = TeacherInputs(teacher, student)(batch)
    assert images is batch["image"]
    assert tokens.shape == (B, 24) and torch.equal(tokens, Tokenizer(24)(CAPTIONS))
    with torch.no_grad():
        out = teacher(images, tokens)
    assert all(torch.isfinite(x).all() for x in out)
