"""Recipes: every file validates; each kind of bad input gives one line with the place and exit code 2."""

import os
import subprocess
import sys

import pytest

from edgeclip.recipe import RecipeError, load_recipe, parse_recipe
from tests.helpers import ROOT

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.name


def test_recipes_exist():
    assert any(p.name == "demo.yaml" for p in RECIPES)


def test_overrides_and_types():
    recipe = load_recipe(
        ROOT / "recipes/demo.yaml",
        ["pretrain.steps=7", "pretrain.lr=2e-4", "eval.templates=['{}']"],
    )
    assert (
        recipe.pretrain.steps == 7
        and recipe.pretrain.lr == 2e-4
        and recipe.eval.templates == ("{}",)
    )
    assert recipe.hash != load_recipe(ROOT / "recipes/demo.yaml").hash


def test_configs_are_frozen():
    recipe = load_recipe(ROOT / "recipes/demo.yaml")
    with pytest.raises(AttributeError):
        recipe.pretrain.lr = 1.0


def test_section_hash_tracks_only_its_sections():
    a = parse_recipe(
        "name: x\npretrain: {model: tiny}\neval: {retrieval: [retrieval], batch_size: 8}\n"
    )
    b = parse_recipe(
        "name: x\npretrain: {model: tiny}\neval: {retrieval: [retrieval], batch_size: 9}\n"
    )
    assert a.section_hash("data", "pretrain") == b.section_hash("data", "pretrain")
    assert a.section_hash("eval") != b.section_hash("eval")


BASE = "name: demo\npretrain:\n  model: tiny\n"
BAD = [
    ("missing-file", None, [], r"nope\.yaml: no such recipe file"),
    ("yaml-syntax", BASE + "   steps: 3\n", [], r"bad\.yaml:4: YAML syntax error"),
    (
        "unknown-key",
        BASE + "  lrr: 1\n",
        [],
        r"bad\.yaml:4: pretrain\.lrr: unknown key; expected one of: model, ",
    ),
    (
        "wrong-type",
        BASE + "  steps: ten\n",
        [],
        r"bad\.yaml:4: pretrain\.steps: expected an integer, got str 'ten'",
    ),
    ("out-of-range", BASE + "  lr: -1\n", [], r"bad\.yaml:4: pretrain\.lr: must be > 0, got -1"),
    (
        "unknown-model",
        "name: demo\npretrain:\n  model: vit_huge\n",
        [],
        r"bad\.yaml:3: pretrain\.model: unknown model 'vit_huge'; expected one of: .*tiny",
    ),
    (
        "bad-choice",
        BASE + "  attention: {image: {kind: fancy}}\n",
        [],
        r"bad\.yaml:4: pretrain\.attention\.image\.kind: expected one of 'softmax', 'clipped', 'gated', got 'fancy'",
    ),
    (
        "missing-key",
        "pretrain:\n  model: tiny\n",
        [],
        r"bad\.yaml:1: name: missing; expected a string",
    ),
    (
        "infinite-float",
        BASE + "  lr: .inf\n",
        [],
        r"bad\.yaml:4: pretrain\.lr: expected a finite number, got inf",
    ),
    (
        "nan-float",
        BASE + "  lr: .nan\n",
        [],
        r"bad\.yaml:4: pretrain\.lr: expected a finite number",
    ),
    (
        "infinite-override",
        BASE,
        ["pretrain.weight_decay=-.inf"],
        r"\(command-line override\): pretrain\.weight_decay: expected a finite number, got -inf",
    ),
    (
        "duplicate-key",
        "name: demo\nseed: 1\npretrain:\n  model: tiny\nseed: 2\n",
        [],
        r"bad\.yaml:5: seed: set twice \(lines 2 and 5\); keep one",
    ),
    (
        "duplicate-nested-key",
        BASE + "  steps: 3\n  steps: 4\n",
        [],
        r"bad\.yaml:5: pretrain\.steps: set twice \(lines 4 and 5\)",
    ),
    (
        "eval-without-tasks",
        BASE + "eval: {batch_size: 8}\n",
        [],
        r"bad\.yaml:4: eval\.zeroshot: name at least one zeroshot or retrieval task",
    ),
    (
        "unknown-export-target",
        BASE + "export: {targets: [onnx-fp32, tflite-fp32]}\n",
        [],
        r"bad\.yaml:4: export\.targets\[1\]: expected <target>-<precision> or "
        r"<target>-<image precision>\+<text precision> with a target among coreml, executorch, "
        r"onnx, got 'tflite-fp32'",
    ),
    (
        "unsupported-export-precision",
        BASE + "export: {targets: [executorch-int4]}\n",
        [],
        r"bad\.yaml:4: export\.targets\[0\]: the executorch target exports fp32, fp16, int8, w8, "
        r"w4, not 'int4'",
    ),
    (
        "bad-override",
        BASE,
        ["pretrain.steps=-3"],
        r"bad\.yaml \(command-line override\): pretrain\.steps: must be >= 1, got -3",
    ),
    (
        "unknown-override",
        BASE,
        ["pretrain.nope=1"],
        r"bad\.yaml \(command-line override\): pretrain\.nope: unknown key",
    ),
]

# A precision per tower in export.targets (checked in process only: the command line's one-line
# error is the same path as the cases above)
BAD_TOWERS = [
    (
        "unsupported-tower-precision",
        BASE + "export: {targets: [onnx-fp32, executorch-int8+w2]}\n",
        [],
        r"bad\.yaml:4: export\.targets\[1\]: the executorch target exports fp32, fp16, int8, w8, "
        r"w4, not 'w2' \(the text tower's, in 'executorch-int8\+w2'\)",
    ),
    (
        "three-tower-precisions",
        BASE + "export: {targets: [onnx-int8+w4+w8]}\n",
        [],
        r"bad\.yaml:4: export\.targets\[0\]: expected one precision, or two as "
        r"<image precision>\+<text precision>, got 'onnx-int8\+w4\+w8'",
    ),
    (
        "one-precision-twice",
        BASE + "export: {targets: [onnx-w4+w4]}\n",
        [],
        r"bad\.yaml:4: export\.targets\[0\]: both towers at w4: write onnx-w4, got 'onnx-w4\+w4'",
    ),
    (
        "empty-tower-precision",
        BASE + "export: {targets: [coreml-+w4]}\n",
        [],
        r"bad\.yaml:4: export\.targets\[0\]: the coreml target exports .*, not '' \(the image "
        r"tower's",
    ),
    (
        "bad-weight-only-drop",
        BASE + "export: {max_weight_only_drop: 2}\n",
        [],
        r"bad\.yaml:4: export\.max_weight_only_drop: must be in \[0, 1\], got 2",
    ),
]


@pytest.mark.parametrize(
    "case,text,overrides,message", BAD + BAD_TOWERS, ids=[b[0] for b in BAD + BAD_TOWERS]
)
def test_bad_recipe_raises_one_line(tmp_path, case, text, overrides, message):
    path = tmp_path / ("nope.yaml" if text is None else "bad.yaml")
    if text is not None:
        path.write_text(text)
    with pytest.raises(RecipeError, match=message) as err:
        load_recipe(path, overrides)
    assert "\n" not in str(err.value)


def test_a_precision_per_tower(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(BASE + "export: {targets: [executorch-int8+w4, onnx-w8, onnx-fp32+int8]}\n")
    export = load_recipe(path).export
    assert export.artifacts() == [("executorch", "int8+w4"), ("onnx", "w8"), ("onnx", "fp32+int8")]
    mixed = export.thresholds("fp32+int8")
    assert mixed["image"].max_abs == 1e-4 and mixed["text"].max_abs == 0.05  # each tower's own
    # one agreement for the pair, the looser precision's: it ranks images against texts
    assert mixed["image"].min_zero_shot_agreement == mixed["text"].min_zero_shot_agreement == 0.95
    assert export.thresholds("w8")["text"].min_cosine == 0.995


@pytest.mark.slow
@pytest.mark.parametrize("case,text,overrides,message", BAD, ids=[b[0] for b in BAD])
def test_bad_recipe_cli_exit_code_2(tmp_path, case, text, overrides, message):
    path = tmp_path / ("nope.yaml" if text is None else "bad.yaml")
    if text is not None:
        path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "edgeclip.cli", "validate", str(path), *overrides],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("edgeclip: error: ")
    import re

    assert re.search(message, lines[0])


# Inputs the recipe names that do not exist: caught by `validate` and at the start of `run`,
# before any stage (the scenes splits a run writes itself are not required to exist yet).
MISSING = [
    (
        "train-csv",
        "data: {train: nope/train.csv}\npretrain: {model: tiny}\n",
        r"m\.yaml:1: data\.train: no such file: nope/train\.csv",
    ),
    (
        "train-shards",
        "data: {train: 'nope/x-{000..009}.tar'}\npretrain: {model: tiny}\n",
        r"m\.yaml:1: data\.train: no shard file matches nope/x-\{000\.\.009\}\.tar",
    ),
    (
        "eval-csv",
        "pretrain: {model: tiny}\neval: {zeroshot: [zs_shape, nope/labels.csv]}\n",
        r"m\.yaml:2: eval\.zeroshot\[1\]: no such file: nope/labels\.csv",
    ),
    (
        "teacher-checkpoint",
        "teacher: {model: tiny, checkpoint: nope/teacher.pt}\n",
        r"m\.yaml:1: teacher\.checkpoint: no such file: nope/teacher\.pt",
    ),
    (
        "ensemble-checkpoint",
        "teacher: {model: tiny}\ndistill:\n  model: tiny_student\n"
        "  ensemble: [{model: tiny, checkpoint: nope/member.pt}]\n",
        r"m\.yaml:4: distill\.ensemble\[0\]\.checkpoint: no such file: nope/member\.pt",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case,body,message", MISSING, ids=[m[0] for m in MISSING])
def test_missing_inputs_fail_before_anything_runs(tmp_path, case, body, message):
    from edgeclip.pipeline import check_inputs, run_pipeline
    from edgeclip.stages import STAGES

    path = tmp_path / "m.yaml"
    path.write_text(body + f"name: m\nruns_dir: {tmp_path / 'runs'}\n")  # sections from line 1
    recipe = load_recipe(path)
    with pytest.raises(RecipeError, match=message) as err:
        check_inputs(recipe, STAGES)
    assert "\n" not in str(err.value)
    with pytest.raises(RecipeError, match=message):
        run_pipeline(recipe, STAGES)
    assert not (tmp_path / "runs").exists(), "nothing may run before the inputs are checked"
    for command in ("validate", "run"):
        proc = subprocess.run(
            [sys.executable, "-m", "edgeclip.cli", command, str(path)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        import re

        assert re.search(message, proc.stderr)


@pytest.mark.slow
def test_an_offline_download_says_so_and_how_to_do_without(tmp_path):
    """No network (HF_HUB_OFFLINE makes the hub fail at once, as a dead network does after retries)."""
    path = tmp_path / "t.yaml"
    path.write_text(
        f"name: t\nruns_dir: {tmp_path / 'runs'}\n"
        "teacher: {model: 'openclip:ViT-B-32', pretrained: laion2b_s34b_b79k}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "edgeclip.cli", "run", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert "ViT-B-32 tag 'laion2b_s34b_b79k': the weights could not be downloaded from" in line
    assert "Hugging Face Hub (laion/CLIP-ViT-B-32-laion2B-s34B-b79K)" in line
    assert "checkpoint: path/to/file instead of pretrained" in line
    assert "does not fit" not in line


def test_shard_urls_are_training_data(tmp_path):
    """Streamed shards (`pipe:` commands, https) are accepted as written; nothing local to check."""
    from edgeclip.pipeline import check_inputs
    from edgeclip.stages import STAGES

    for train in ("pipe:aws s3 cp s3://b/x-{000..009}.tar -", "https://h/x-{000..009}.tar"):
        path = tmp_path / "m.yaml"
        path.write_text(f"name: m\ndata: {{train: '{train}'}}\npretrain: {{model: tiny}}\n")
        recipe = load_recipe(path)
        assert recipe.data.train == train
        check_inputs(recipe, STAGES)
