"""Shared fixtures: a tiny recipe whose whole pipeline runs in seconds."""

import textwrap
from pathlib import Path

import pytest

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


def write_tiny_recipe(folder: Path, *, steps: int = 6, format: str = "csv") -> Path:
    path = folder / "tiny.yaml"
    path.write_text(
        textwrap.dedent(TINY_RECIPE.format(runs=folder / "runs", steps=steps, format=format))
    )
    return path


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    return write_tiny_recipe(tmp_path)
