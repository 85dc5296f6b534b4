"""The three layers import downward only: the run layer (edgeclip/) over deployment (export/)
over the library (compress/), read from the source, imports inside functions included
(docs/design.md, "Layers")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

LAYERS = {"compress": 0, "export": 1, "edgeclip": 2}  # a package may import its own or lower


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in a file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def upward_imports(root: Path) -> list[str]:
    """Every import of a higher layer, as ``file:line: imports module``."""
    found = []
    for package, rank in LAYERS.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imports(path):
                top = module.partition(".")[0]
                if LAYERS.get(top, -1) > rank:
                    found.append(f"{path.relative_to(root)}:{line}: imports {module}")
    return found


def stage_imports(root: Path) -> list[str]:
    """Every import of one stage module by another (they share results through the run folder)."""
    stages = root / "edgeclip" / "stages"
    shared = {"__init__", "layout"}  # the stage list, and where a run keeps its files
    found = []
    for path in sorted(stages.glob("*.py")):
        if path.stem in shared:
            continue
        for line, module in imports(path):
            if module.startswith("edgeclip.stages.") and module.rpartition(".")[2] not in shared:
                found.append(f"{path.relative_to(root)}:{line}: imports {module}")
    return found


def test_no_layer_imports_a_higher_one():
    assert upward_imports(ROOT) == []


def test_the_check_finds_a_planted_upward_import(tmp_path):
    for package in LAYERS:
        (tmp_path / package).mkdir()
    (tmp_path / "compress" / "train.py").write_text(
        "def f():\n    from edgeclip.recipe import TrainConfig\n"
    )
    (tmp_path / "export" / "driver.py").write_text("import edgeclip.stages.export\n")
    assert upward_imports(tmp_path) == [
        "compress/train.py:2: imports edgeclip.recipe",
        "export/driver.py:1: imports edgeclip.stages.export",
    ]


def test_no_stage_imports_another():
    assert stage_imports(ROOT) == []


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        (
            "import compress.train, compress.distill.student, compress.quant.qat",
            ("export", "edgeclip"),
        ),
        ("import export.driver, export.verify, export.profile.profiler", ("edgeclip",)),
    ],
)
def test_importing_a_layer_loads_nothing_above_it(statement, forbidden):
    code = f"{statement}; import sys; print(sorted(m for m in sys.modules if m.startswith({forbidden!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
