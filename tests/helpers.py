"""What test modules share that is not a fixture (those are in conftest.py): the repository's
root, small MobileCLIP configs, the tiny recipe and the recipes a few stages' tests write, model
inputs, and ``edgeclip`` under torchrun. No test module imports another; they import this."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from compress.models import model_config
from compress.models.mobileclip_towers import MCI, MCI_VIT_B
from compress.tokenizer import EOT_ID

ROOT = Path(__file__).resolve().parents[1]  # the repository: recipes/, android_demo/, the packages

# MobileCLIP's larger image towers, shrunk to test size with their block types kept:
# MobileCLIP-B's ViT (conv stem with Apple's padding, no pre-norm, eps 1e-6, biased head) and
# MCi3's five stages (layer-norm attention, no 1×1 stem branch).
MCI_VIT_SMALL = {
    **MCI_VIT_B,
    "image_size": 32,
    "width": 32,
    "layers": 2,
    "heads": 2,
    "mlp_ratio": 2,
    "stem_channels": [8, 8],
    "stem_padding": [1, 0, 0],
}
MCI_LARGE_SMALL = {
    "family": "hybrid",
    **MCI["fastvit_mci3"],
    "image_size": 64,
    "layers": [1, 1, 1, 1, 1],
    "widths": [8, 16, 16, 32, 32],
    "mlp_ratio": 2,
    "head_dim": 16,
}
MCI_VIT = {**model_config("tiny"), "vision": MCI_VIT_SMALL}  # MobileCLIP-B's build, small

TINY_RECIPE = """\
name: tiny
seed: 0
runs_dir: {runs}
data:
  format: {format}
  scenes: {{image_size: 32, train: 256, val: 16, retrieval: 32, zeroshot: 36, shard_size: 64}}
pretrain:
  model: tiny
  attention:
    image: {{kind: clipped, alpha: 4.0}}
    text: {{kind: gated}}
  steps: {steps}
  precision: {precision}
  batch_size: 16
  lr: 2.0e-3
  warmup: 2
  checkpoint_every: 2
  log_every: 2
eval:
  zeroshot: [zs_colour, zs_colour_shape]
  retrieval: [retrieval]
  batch_size: 64
export:
  batch_size: 2
  samples: 8
"""


def write_tiny_recipe(
    folder: Path, *, steps: int = 6, format: str = "csv", precision: str = "auto"
) -> Path:
    """The tiny recipe. Tests that compare training runs for equality (across processes, batch
    parts, torch.compile) pass ``precision="fp32"``: under ``auto`` a CPU with fast bf16 trains
    in bf16, whose rounding their fp32 tolerances do not allow for."""
    path = folder / "tiny.yaml"
    text = TINY_RECIPE.format(runs=folder / "runs", steps=steps, format=format, precision=precision)
    path.write_text(textwrap.dedent(text))
    return path


GIVEN_SCENES = "{image_size: 32, train: 64, val: 16, retrieval: 32, zeroshot: 36, shard_size: 64}"


def teacher_recipe(tmp_path: Path, teacher: str, extra: str = "") -> Path:
    """A recipe whose teacher section is ``teacher`` (a model it brings), and ``extra`` sections."""
    lines = [
        "name: given",
        f"runs_dir: {tmp_path / 'runs'}",
        f"data: {{scenes: {GIVEN_SCENES}}}",
        "teacher:",
        textwrap.indent(teacher, "  "),
        textwrap.dedent(extra),
    ]
    path = tmp_path / "given.yaml"
    path.write_text("\n".join(lines))
    return path


DISTILL_SCENES = (
    "{image_size: 32, train: 256, val: 16, retrieval: 32, zeroshot: 36, shard_size: 64}"
)
# the distill section's training settings, before each test's model and steps
DISTILL_TRAIN = "batch_size: 16\nwarmup: 1\ncheckpoint_every: 2\nlog_every: 2\nlr: 2.0e-3\n"


def distill_recipe(folder: Path, teacher_file: Path, distill: str, eval_: bool = False) -> Path:
    """A recipe that distills from the model file ``teacher_file`` with the section ``distill``
    (and evaluates, with ``eval_``)."""
    text = f"""\
name: d
runs_dir: {folder / "runs"}
data:
  format: csv  # one global sample order, so 1 and 2 processes see the same batches
  scenes: {DISTILL_SCENES}
teacher: {{model: tiny, checkpoint: {teacher_file}}}
distill:
{textwrap.indent(textwrap.dedent(distill), "  ")}
"""
    if eval_:
        text += "eval: {zeroshot: [zs_colour], retrieval: [retrieval], batch_size: 64}\n"
    path = folder / "d.yaml"
    path.write_text(text)
    return path


def model_inputs(model, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and token ids (EOT mid-sequence, zero padding after) sized for ``model``."""
    size, ctx = model.visual.image_size, model.text.context_length
    tokens = torch.randint(1, 1000, (batch, ctx))
    tokens[:, ctx // 2] = EOT_ID
    tokens[:, ctx // 2 + 1 :] = 0
    return torch.randn(batch, 3, size, size), tokens


def perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Random BN statistics, layer scales and biases, so every folded branch and every mapped
    tensor carries weight (a zero-initialised bias mapped to the wrong place would go unseen)."""
    g = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2, generator=g)
            module.running_var.uniform_(0.5, 2.0, generator=g)
            module.weight.data.normal_(1, 0.2, generator=g)
            module.bias.data.normal_(0, 0.2, generator=g)
        for name, p in module.named_parameters(recurse=False):
            if name.startswith("layer_scale"):
                p.data.normal_(0, 0.3, generator=g)
            elif name == "bias":
                p.data.normal_(0, 0.05, generator=g)
    return model


def torchrun_edgeclip(
    recipe: Path, cwd: Path, processes: int = 2, command: str = "run"
) -> subprocess.CompletedProcess:
    """`edgeclip COMMAND RECIPE` under torchrun on this machine (gloo), one thread per process."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            torchrun,
            "--standalone",
            f"--nproc_per_node={processes}",
            "-m",
            "edgeclip.cli",
            command,
            str(recipe),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def write_sentencepiece_tokenizer(folder: Path) -> Path:
    """A SentencePiece-style tokenizer as SigLIP's hub folders hold one (tokenizer.json and
    tokenizer_config.json): Unigram pieces over Metaspace words, an end-of-sequence token
    appended, a pad token; trained here on 300 scenes captions in well under a second."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from compress.data.scenes import caption, make_scene

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator([caption(make_scene("train", i, 0)[0]) for i in range(300)], trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", eos)]
    )
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": {"content": "<pad>"}}))
    return folder
