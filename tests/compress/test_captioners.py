"""The CoCa captioner through its real open_clip path, on a random-init tiny CoCa: n captions per
image, reproducible and batch-independent, the caller's RNG untouched, the top-p nucleus,
checkpoints loaded weights-only, and a reinforce run that stores its captions."""

import argparse
import json
import re

import pytest
import torch
from PIL import Image, ImageDraw

from compress import compat
from compress.data import captioners as coca
from compress.data.augment import Augmentation
from compress.data.captioners import captioners
from compress.data.reinforced import ReinforcedShards, ReinforcedWriter
from compress.distill.reinforce import Sample, reinforce, text_embeddings
from compress.errors import UserError
from compress.models import ModelRecord

# coca_ViT-L-14's shape at toy widths: open_clip's vocabulary (49408) and context stay, so its
# tokenizer and generation run unchanged; n=2 captions of 2 images take ~1 s on one CPU core
TINY_COCA = {
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": 32,
        "patch_size": 8,
        "layers": 1,
        "width": 32,
        "head_width": 16,
        "attentional_pool": True,
        "attn_pooler_queries": 8,
        "attn_pooler_heads": 2,
        "output_tokens": True,
    },
    "text_cfg": {
        "context_length": 76,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 1,
        "embed_cls": True,
        "output_tokens": True,
    },
    "multimodal_cfg": {
        "context_length": 76,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 1,
        "attn_pooler_heads": 2,
    },
    "custom_text": True,
}
NAME = "edgeclip_tiny_coca"
N = 2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Width-32 matmuls gain nothing from a second thread, and on a busy 2-core machine two
    threads spin-wait each other: ~10x slower (4 s → 40 s for this file)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_coca(tmp_path_factory):
    """Registers the tiny architecture with open_clip (a JSON in a config folder, as its own)."""
    folder = tmp_path_factory.mktemp("coca_configs")
    (folder / f"{NAME}.json").write_text(json.dumps(TINY_COCA))
    compat.open_clip().add_model_config(folder)
    return NAME


@pytest.fixture
def configure(tiny_coca):
    """configure_coca for the tiny model (random init unless a checkpoint is given), 12 tokens a
    caption (a random model never says EOT, so every caption runs the full length); the
    defaults come back afterwards."""
    defaults = {"model": tiny_coca, "pretrained": None, "seq_len": 12}
    yield lambda **fields: coca.configure_coca(**{**defaults, **fields})
    coca.configure_coca()


def _images():
    out = []
    for i in range(2):
        image = Image.new("RGB", (40, 36), (30 + 100 * i, 90, 160))
        ImageDraw.Draw(image).ellipse((4 + 3 * i, 6, 24, 30), fill=(250, 60 * i, 10))
        out.append(image)
    return out


CAPTIONS = ["a red circle", "an orange circle"]


def _caption(images=None, captions=CAPTIONS):
    images = images or _images()
    return captioners.get("coca")(images, captions, [None] * len(images), N)


def test_n_clean_captions_per_image_reproducible_and_the_callers_rng_untouched(configure):
    configure()
    before = torch.random.get_rng_state()
    out = _caption()
    assert torch.equal(torch.random.get_rng_state(), before)  # the model build included
    assert len(out) == 2 and all(len(c) == N for c in out)
    texts = [t for c in out for t in c]
    assert all(isinstance(t, str) and t == t.strip() for t in texts)
    assert not any("<start_of_text>" in t or "<end_of_text>" in t or "." in t for t in texts)
    assert len(set(texts)) == len(texts)  # each caption its own draw
    assert _caption() == out
    # seeded per image and caption, not per batch: alone, or in another batch, the same
    assert _caption([_images()[1]], [CAPTIONS[1]]) == [out[1]]
    configure(seed=1)
    assert _caption() != out


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    logits = torch.tensor([0.15, 0.5, 0.05, 0.3]).log()
    kept = {
        p: torch.isfinite(coca.top_p_filter(logits, p)).nonzero().flatten().tolist()
        for p in (1e-6, 0.5, 0.8, 0.81, 1.0)
    }
    assert kept == {1e-6: [1], 0.5: [1], 0.8: [1, 3], 0.81: [0, 1, 3], 1.0: [0, 1, 2, 3]}


def test_a_checkpoint_is_loaded_weights_only(configure, tmp_path):
    _, model, _, _ = coca._load(configure())
    torch.manual_seed(3)
    other = {f"module.{k}": v + 0.1 * torch.randn_like(v) for k, v in model.state_dict().items()}
    path = tmp_path / "coca.pt"
    torch.save({"state_dict": other}, path)  # as DDP training saves it
    random_init = _caption()
    configure(checkpoint=str(path))
    assert _caption() != random_init

    path = tmp_path / "clip.pt"
    torch.save(ModelRecord.named("tiny").build().state_dict(), path)  # a CLIP, not this CoCa
    configure(checkpoint=str(path))
    with pytest.raises(UserError, match=re.escape(f"{path}: not a {NAME} state dict")) as err:
        _caption()
    assert "\n" not in str(err.value)

    path = tmp_path / "pickled.pt"
    torch.save({"config": argparse.Namespace(lr=1)}, path)  # a pickled object: never unpickled
    configure(checkpoint=str(path))
    with pytest.raises(
        UserError,
        match=re.escape(
            f"{path}: not loadable weights-only (it holds a pickled argparse.Namespace)"
        ),
    ) as err:
        _caption()
    assert "\n" not in str(err.value)


def test_settings_are_checked_in_the_users_words():
    with pytest.raises(UserError, match=r"coca.top_p: must be in \(0, 1\], got 0"):
        coca.configure_coca(top_p=0)
    with pytest.raises(UserError, match="coca.model: 'ViT-nope' is not an open_clip model"):
        coca.configure_coca(model="ViT-nope")
        _caption()
    coca.configure_coca()


def test_a_reinforce_run_stores_the_coca_captions(configure, tmp_path):
    configure()
    torch.manual_seed(0)
    teacher = ModelRecord.named("tiny").build().eval()
    samples = [
        Sample(f"{i:06d}", image, c)
        for i, (image, c) in enumerate(zip(_images(), CAPTIONS, strict=True))
    ]
    dim = int(text_embeddings([teacher], ["x"]).shape[1])
    with ReinforcedWriter(
        tmp_path,
        "r",
        ["tiny"],
        [dim],
        k=1,
        n=N,
        augmentation={"size": 32},
        samples_per_shard=2,
        scales=[teacher.logit_scale.exp().item()],
    ) as writer:
        written = reinforce(
            samples,
            [teacher],
            Augmentation(32),
            captioners.get("coca"),
            writer,
            k=1,
            n=N,
            seed=0,
            batch_size=2,
        )
    assert written == 2
    stored = list(ReinforcedShards(tmp_path / "index.json"))
    assert [s["key"] for s in stored] == ["000000", "000001"]
    for sample in stored:
        assert len(sample["syn_text"]) == N and sample["text_emb"].shape == (1 + N, dim)
        # what the run stored is what the captioner says about the stored (decoded) image
        assert _caption([sample["image"]], [sample["caption"]]) == [sample["syn_text"]]


def test_a_recipe_reinforces_with_coca(tiny_coca, tmp_path):
    """`reinforce: {captioner: coca, coca: {model: …}}` drives the captioner from a recipe."""
    from edgeclip.cli import main
    from tests.helpers import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path, steps=2)
    recipe.write_text(
        recipe.read_text().split("\neval:")[0]
        + f"\nreinforce: {{k: 1, n: {N}, limit: 6, captioner: coca,\n"
        + f"  coca: {{model: {tiny_coca}, pretrained: null}}}}\n"
    )
    try:
        assert main(["reinforce", str(recipe)]) == 0
    finally:
        coca.configure_coca()
    stored = list(ReinforcedShards(tmp_path / "runs/tiny/reinforce/index.json"))
    assert len(stored) == 6
    assert all(len(s["syn_text"]) == N and s["syn_text"] != [s["caption"]] * N for s in stored)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        recipe.read_text().replace(
            f"coca: {{model: {tiny_coca}, pretrained: null}}",
            f"coca: {{model: {tiny_coca}, pretrained: null, checkpoint: no.pt}}",
        )
    )
    assert main(["validate", str(bad)]) == 2
