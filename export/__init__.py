"""The deployment side: export targets (registry ``exporters``), the shared export driver,
manifests and parity checks. Runtimes (onnxruntime, …) load only when an export runs."""

from export import coreml as _coreml  # noqa: F401  (registers "coreml")
from export import executorch as _executorch  # noqa: F401  (registers "executorch")
from export import onnx as _onnx  # noqa: F401  (registers the "onnx" target)
from export.targets import exporters

__all__ = ["exporters"]
