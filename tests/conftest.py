"""Shared fixtures: a tiny recipe whose whole pipeline runs in seconds."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from compress.models.loaders import MCI, MCI_VIT_B
from compress.tokenizer import EOT_ID

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


# pytest-xdist runs one worker per core: each gets its share of the cores for torch's threads,
# and so do the commands it starts (more threads than free cores make torch's parallel loops
# wait on each other: a small matmul ran 25x slower)
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)


@pytest.fixture(autouse=True, scope="session")
def _own_cache_folder(tmp_path_factory):
    """The suite's own cache folder (``precision: auto`` keeps its measured CPU rates there), so
    tests never read or write the user's ~/.cache; subprocesses inherit it."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


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


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    return write_tiny_recipe(tmp_path)


def model_inputs(model, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and token ids (EOT mid-sequence, zero padding after) sized for ``model``."""
    size, ctx = model.visual.image_size, model.text.context_length
    tokens = torch.randint(1, 1000, (batch, ctx))
    tokens[:, ctx // 2] = EOT_ID
    tokens[:, ctx // 2 + 1 :] = 0
    return torch.randn(batch, 3, size, size), tokens


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
            "compress.cli",
            command,
            str(recipe),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
