"""Recipes: YAML → frozen, validated config objects, one per stage, with `a.b=c` overrides."""

from edgeclip.recipe.loading import load_recipe, parse_recipe
from edgeclip.recipe.sections import (
    AttentionConfig,
    DataConfig,
    DistillConfig,
    DistillStep,
    EvalConfig,
    ExportConfig,
    InheritConfig,
    LossConfig,
    PretrainConfig,
    QatConfig,
    QuantConfig,
    Recipe,
    RecipeError,
    ReinforceConfig,
    ScenesConfig,
    TeacherConfig,
    TrainConfig,
)

__all__ = [
    "AttentionConfig",
    "DataConfig",
    "DistillConfig",
    "ReinforceConfig",
    "DistillStep",
    "EvalConfig",
    "ExportConfig",
    "InheritConfig",
    "LossConfig",
    "PretrainConfig",
    "QatConfig",
    "QuantConfig",
    "Recipe",
    "RecipeError",
    "ScenesConfig",
    "TeacherConfig",
    "TrainConfig",
    "load_recipe",
    "parse_recipe",
]
