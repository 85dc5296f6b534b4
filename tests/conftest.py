"""Shared fixtures (helpers that are plain functions and constants are in tests/helpers.py)."""

import os
from pathlib import Path

import pytest
import torch

from compress.models import ModelRecord, save_model

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


@pytest.fixture
def teacher_file(tmp_path: Path) -> Path:
    """A random-init ``tiny`` model file, the teacher of helpers.distill_recipe."""
    torch.manual_seed(0)
    record = ModelRecord.named("tiny")
    save_model(record.build(), record, tmp_path / "teacher.pt")
    return tmp_path / "teacher.pt"
