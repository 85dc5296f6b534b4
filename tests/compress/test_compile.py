"""compile: true in the one training loop: the compiled model trains as the eager one does, and
where torch.compile cannot run it the loop falls back to eager with one warning line."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._inductor.config

from compress.models import build_model
from compress.train import train
from edgeclip.recipe import TrainConfig
from tests.helpers import model_inputs


def _train(tmp_path, name: str, *, compile: bool, steps: int = 3) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = build_model("tiny")
    images, tokens = model_inputs(model, batch=8)

    def batches(start: int):
        while True:
            yield {"image": images, "text": tokens}

    cfg = TrainConfig(
        steps=steps, batch_size=8, warmup=1, log_every=1, compile=compile, precision="fp32"
    )
    summary = train(model, batches, cfg, tmp_path / name)
    return summary, model.state_dict()


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    torch._dynamo.reset()
    eager, eager_state = _train(tmp_path, "eager", compile=False)
    compiled, compiled_state = _train(tmp_path, "compiled", compile=True)
    for a, b in zip(eager["history"], compiled["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for key, value in eager_state.items():
        torch.testing.assert_close(compiled_state[key], value, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_a_platform_without_a_compiler_falls_back_to_eager(tmp_path, capsys):
    torch._dynamo.reset()
    no_compiler = {"cpp.cxx": ("no-such-compiler",), "fx_graph_cache": False}
    with torch._inductor.config.patch(no_compiler):
        fallback, fallback_state = _train(tmp_path, "fallback", compile=True)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "torch.compile failed, training in eager mode" in warnings[0]
    assert "compiler" in warnings[0]  # says why
    eager, eager_state = _train(tmp_path, "eager", compile=False)
    assert fallback["finished"]
    assert [h["loss"] for h in fallback["history"]] == [h["loss"] for h in eager["history"]]
    for key, value in eager_state.items():
        assert torch.equal(fallback_state[key], value), key
