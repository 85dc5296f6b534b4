"""The stages of an edgeclip run, in order: data → pretrain | teacher → reinforce → distill → qat →
eval → export → profile → report.

Each stage is one module here that turns its recipe section into library calls and exports a
``STAGE`` (:class:`edgeclip.pipeline.Stage`): what it depends on, how to run it, the inputs it
checks before anything runs, and its section of the report. A new stage is a new module and one
line in ``STAGES``.
"""

from __future__ import annotations

from edgeclip.pipeline import Stage
from edgeclip.recipe import Recipe
from edgeclip.stages import (
    data,
    distill,
    export,
    pretrain,
    profile,
    qat,
    reinforce,
    report,
    teacher,
)
from edgeclip.stages import eval as evaluation

STAGES: list[Stage] = [
    m.STAGE
    for m in (data, pretrain, teacher, reinforce, distill, qat, evaluation, export, profile, report)
]


def enabled_stages(recipe: Recipe) -> list[str]:
    return [s.name for s in STAGES if s.enabled(recipe)]
