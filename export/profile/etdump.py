"""Per-operator times from an ExecuTorch ETDump, read with the ETRecord the exporter saved.

XNNPACK reports each kernel it ran inside its delegate ("Fully Connected (NC, F32) GEMM #3");
ops left outside the delegate appear as portable kernel calls ("native_call_native_layer_norm.out").
We sum the median time of every such leaf event by kind, so a tower's 12 GEMMs become one row;
the wrappers around them (``DELEGATE_CALL``, ``OPERATOR_CALL``) would count the same time twice.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from compress.compat import torch_export_quiet

WRAPPERS = {"DELEGATE_CALL", "OPERATOR_CALL", "Method::execute"}


def op_kind(event_name: str) -> str:
    """``"Fully Connected (NC, F32) GEMM #3"`` → ``"Fully Connected (NC, F32) GEMM"``;
    ``"native_call_native_layer_norm.out"`` → ``"native_layer_norm (portable)"``."""
    if event_name.startswith("native_call_"):
        return event_name.removeprefix("native_call_").removesuffix(".out") + " (portable)"
    return re.sub(r" #\d+$", "", event_name)


def etdump_ops(etdump: str | Path, etrecord: str | Path | None) -> dict[str, float]:
    """Milliseconds per inference by operator kind (the median over the profiled runs)."""
    with torch_export_quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Inspector's notes on debug data we did not ask for
        from executorch.devtools import Inspector

        frame = Inspector(
            etdump_path=str(etdump), etrecord=str(etrecord) if etrecord else None
        ).to_dataframe()
    ops: dict[str, float] = {}
    rows = zip(frame["event_block_name"], frame["event_name"], frame["p50 (ms)"], strict=True)
    for block, name, p50 in rows:
        if block == "Execute" and name not in WRAPPERS:
            kind = op_kind(name)
            ops[kind] = ops.get(kind, 0.0) + float(p50)
    return ops
