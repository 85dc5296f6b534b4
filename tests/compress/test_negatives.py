"""Hard negative captions (NegCLIP): the word swap, the loss against the formula by hand, the
objective under gradient caching, and a pretraining run that uses them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compress.data.negatives import swap_word
from compress.distill.losses import clip_loss, clip_loss_with_negatives
from compress.grad_cache import accumulated_backward
from compress.models import build_model
from compress.objectives import HardNegatives
from compress.precision import MixedPrecision
from compress.tokenizer import Tokenizer
from edgeclip.pipeline import run_pipeline
from edgeclip.recipe import RecipeError, load_recipe
from edgeclip.stages import STAGES
from tests.helpers import write_tiny_recipe

SHAPES = ["circle", "square", "star"]
SETS = [SHAPES, ["red", "blue"]]


@pytest.mark.parametrize("seed", range(20))
def test_swap_changes_one_word_for_another_of_its_set(seed):
    caption = "a small red circle, a large blue star and a small red square"
    swapped = swap_word(caption, SETS, np.random.default_rng(seed))
    before, after = caption.split(" "), swapped.split(" ")
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 1
    a, b = (w.rstrip(",") for w in changed[0])
    assert changed[0][0].endswith(",") == changed[0][1].endswith(",")  # punctuation kept
    assert any(a in words and b in words for words in SETS) and a != b
    assert swap_word(caption, SETS, np.random.default_rng(seed)) == swapped  # rng decides


def test_swap_reaches_every_word_and_leaves_other_captions_alone():
    seen = {swap_word("a red circle", [SHAPES], np.random.default_rng(i)) for i in range(50)}
    assert seen == {"a red square", "a red star"}
    assert swap_word("two green triangles", SETS, np.random.default_rng(0)) == "two green triangles"


def _log_softmax_rows(z: torch.Tensor) -> torch.Tensor:
    return z - z.exp().sum(dim=1, keepdim=True).log()


def test_loss_is_the_formula_by_hand():
    torch.manual_seed(0)
    image, text, negative = (torch.nn.functional.normalize(torch.randn(5, 8), dim=1) for _ in "itn")
    scale = torch.tensor(7.0)
    i2t = _log_softmax_rows(scale * image @ torch.cat([text, negative]).T)  # (5, 10)
    t2i = _log_softmax_rows(scale * text @ image.T)
    expected = -0.5 * (i2t.diagonal().mean() + t2i.diagonal().mean())
    got = clip_loss_with_negatives(image, text, negative, scale)
    torch.testing.assert_close(got, expected)
    # a negative that matches no image better than its caption does raises the loss over CLIP's
    assert got > clip_loss(image, text, scale)


def _batch(model, captions: list[str]) -> dict:
    tokens = Tokenizer(model.text.context_length)(captions)
    images = torch.randn(len(captions), 3, model.visual.image_size, model.visual.image_size)
    return {
        "image": images,
        "text": tokens,
        "caption": captions,
        "index": torch.arange(len(captions)),
    }


@pytest.mark.parametrize("parts", [2, 3])
def test_gradient_caching_gives_the_full_batch_gradient(parts):
    torch.manual_seed(0)
    model = build_model("tiny").train()
    captions = [f"a {c} {s}" for c in ("red", "blue") for s in SHAPES]
    batch, objective = _batch(model, captions), HardNegatives(SETS, model.text.context_length, 0)
    image, text, _ = objective.embed(model, batch)
    assert image.shape[0] == text.shape[0] == 6 and text.shape[1] == 2
    full = objective(model, batch)
    full.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    fp32 = MixedPrecision("fp32", torch.device("cpu"), "test")
    value = accumulated_backward(model, batch, objective, parts, fp32)
    assert value.item() == pytest.approx(full.item(), rel=1e-6)
    for name, grad in expected.items():  # atol: float summation order, on gradients of ~1e-2
        torch.testing.assert_close(model.get_parameter(name).grad, grad, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_pretraining_with_hard_negatives(tmp_path):
    recipe = load_recipe(
        write_tiny_recipe(tmp_path, steps=3),
        ["pretrain.hard_negatives.swap=[[circle, square, triangle, cross, star, diamond]]"],
    )
    ctx = run_pipeline(recipe, STAGES)
    train = json.loads((ctx.run_dir / "pretrain" / "train.json").read_text())
    assert train["steps"] == 3 and np.isfinite(train["final_loss"])


def test_a_word_in_two_sets_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match=r"pretrain.hard_negatives.swap\[1\]: 'red' is in two"):
        load_recipe(
            write_tiny_recipe(tmp_path),
            ["pretrain.hard_negatives.swap=[[red, blue], [red, green]]"],
        )
