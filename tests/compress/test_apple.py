"""Apple's own MobileCLIP checkpoint layout (ml-mobileclip): S0, S1, S2 and B load with Apple's
embeddings, before and after folding; wrong files are one-line errors.

The reference is Apple's model code as the ``visaionmobileclip`` package ships it (random init,
no weights), installed without its dependencies (it pins an old timm; its code runs with ours).
"""

from __future__ import annotations

import argparse
import copy
import re
import subprocess
import sys

import pytest
import torch

from compress.compat import open_clip
from compress.errors import UserError
from compress.models import (
    is_reparameterized,
    load_model,
    model_config,
    reparameterize,
    tower_params,
)
from compress.models.apple import NAMES, apple_config, load_apple
from compress.models.given import load_given
from compress.models.loaders import LoaderError
from edgeclip.pipeline import run_pipeline
from edgeclip.recipe import load_recipe
from edgeclip.stages import STAGES
from tests.helpers import perturb, teacher_recipe

open_clip()  # Apple's package imports torchvision: patched first (compress.compat)
mobileclip = pytest.importorskip(
    "mobileclip", reason="pip install --no-deps visaionmobileclip==0.1.1 (README, Tests)"
)


def _apple(name: str) -> torch.nn.Module:
    """Apple's own model, random init with every branch and bias carrying weight."""
    torch.manual_seed(0)
    model, _, _ = mobileclip.create_model_and_transforms(f"mobileclip_{name}", reparameterize=False)
    projection = model.text_encoder.projection_layer  # left as torch.empty by Apple's code
    torch.nn.init.normal_(projection, std=projection.shape[0] ** -0.5)
    return perturb(model).eval()


def _assert_same_embeddings(apple, ours, name):
    size = ours.visual.image_size
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = mobileclip.get_tokenizer(f"mobileclip_{name}")(
        ["a photo of a dog", "a red square left of a small blue circle"]
    )
    with torch.no_grad():
        for theirs, mine in (
            (apple.encode_image(images, normalize=True), ours.encode_image(images)),
            (apple.encode_text(tokens, normalize=True), ours.encode_text(tokens)),
        ):
            assert (theirs - mine).abs().max().item() <= 1e-5
    assert ours.logit_scale.item() == pytest.approx(apple.logit_scale.item())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NAMES))
def test_apple_checkpoints_load_with_apples_embeddings(name, tmp_path):
    apple = _apple(name)
    path = tmp_path / f"mobileclip_{name}.pt"
    torch.save(apple.state_dict(), path)
    ours, record = load_given(f"mobileclip:{name}", checkpoint=path)
    assert record.name == f"mobileclip:{name}"
    assert record.provenance["checkpoint"] == str(path)
    assert ours.preprocess == {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    _assert_same_embeddings(apple, ours, name)
    folded = reparameterize(copy.deepcopy(ours))
    assert is_reparameterized(folded)
    _assert_same_embeddings(apple, folded, name)
    added = tower_params(record.config)["total"] - sum(p.numel() for p in apple.parameters())
    assert added == (768 if name == "b" else 512)  # a zero class-token position / head bias


def test_registry_mobileclip_s0_is_apples_s0():
    """``mobileclip_s0`` (what students are built from) has Apple's S0 layout, tensor for tensor."""
    ours = apple_config("s0")
    registry = model_config("mobileclip_s0")
    assert ours["vision"] | {"mean": None, "std": None} == registry["vision"] | {
        "mean": None,
        "std": None,
    }
    assert ours["text"] == registry["text"]


def test_another_models_checkpoint_names_the_model_it_fits(tmp_path):
    path = tmp_path / "mobileclip_s1.pt"
    torch.save(_apple("s1").state_dict(), path)
    with pytest.raises(LoaderError) as err:
        load_apple("s0", path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: not MobileCLIP-S0 weights in Apple's layout")
    assert message.endswith("it fits mobileclip:s1")

    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(LoaderError, match="it fits none of mobileclip:s0, mobileclip:s1"):
        load_apple("b", path)


def test_inference_mode_and_pickled_checkpoints_are_refused(tmp_path):
    folded, _, _ = mobileclip.create_model_and_transforms("mobileclip_s0", reparameterize=True)
    path = tmp_path / "folded.pt"
    torch.save(folded.state_dict(), path)
    with pytest.raises(LoaderError, match="reparameterized .inference-mode. weights"):
        load_apple("s0", path)

    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(UserError) as err:
        load_apple("s0", path)
    assert str(err.value) == (
        f"mobileclip:s0 checkpoint {path}: not loadable weights-only (it holds a pickled "
        "argparse.Namespace); edgeclip never runs code from a checkpoint"
    )
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'nope.pt'}: no such file")):
        load_apple("s0", tmp_path / "nope.pt")


def test_a_recipe_takes_apples_s0_as_its_teacher(tmp_path):
    apple = _apple("s0")
    checkpoint = tmp_path / "mobileclip_s0.pt"
    torch.save(apple.state_dict(), checkpoint)
    path = teacher_recipe(tmp_path, f"model: mobileclip:s0\ncheckpoint: {checkpoint}")
    run_dir = run_pipeline(load_recipe(path), STAGES).run_dir
    ours, record = load_model(run_dir / "teacher" / "model.pt")
    assert record.name == "mobileclip:s0" and record.provenance["checkpoint"] == str(checkpoint)
    _assert_same_embeddings(apple, ours, "s0")


@pytest.mark.slow
def test_cli_names_the_model_a_wrong_checkpoint_fits_in_one_line(tmp_path):
    checkpoint = tmp_path / "mobileclip_s2.pt"
    torch.save(_apple("s2").state_dict(), checkpoint)
    path = teacher_recipe(tmp_path, f"model: mobileclip:s1\ncheckpoint: {checkpoint}")
    proc = subprocess.run(
        [sys.executable, "-m", "edgeclip.cli", "run", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "not MobileCLIP-S1 weights in Apple's layout" in last
    assert last.endswith("it fits mobileclip:s2")
