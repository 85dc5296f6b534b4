"""The library: models, data, the tokenizer, distillation, quantization, training and evaluation,
as functions and classes that take plain arguments and their own configs. It never imports a
recipe, a stage or :mod:`export` (docs/design.md, "Layout"; tests/test_layers.py holds it)."""
