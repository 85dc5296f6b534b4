"""The run layer: recipes, run folders, the pipeline's stages, the report and the command line.

It sits on top of the library (:mod:`compress`) and the deployment layer (:mod:`export`), and is
the only place that knows recipes and run folders (docs/design.md, "Layers").
"""
