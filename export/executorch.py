"""The ExecuTorch target: ``.pte`` programs lowered to the XNNPACK delegate, run in the
ExecuTorch runtime (what Android apps ship), with the ETRecord that per-op profiling reads."""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.compat import torch_export_quiet
from export.manifest import library_versions, tensor_spec
from export.profile.runner import load_quantized_kernels
from export.targets import OUTPUT, Runner, at_precision, exporters

ETRECORD = "etrecord.bin"
# Layers fp16 programs keep in fp32 (measured with ExecuTorch 1.5.1 on x86). Layer norm runs on
# a portable kernel at either precision (XNNPACK takes none), and the fp16 one is wrong from 256
# features on (cosine to eager ≈ 0 for real-size towers) and 16-19× slower than the fp32 one.
# XNNPACK refuses fp16 GELU, which would leave it on a slow portable kernel and split the
# delegate; in fp32 XNNPACK runs it. Both in fp32: TinyCLIP-8M's image tower at fp16 went from
# wrong and 66 ms to cosine 0.9999993 and 44 ms (28 ms at fp32).
FP32_LAYERS = (nn.LayerNorm, nn.GELU)
# The kernel library (ExecuTorch's CMake target) that registers the operators of a namespace;
# every other namespace (aten, dim_order_ops) is in the portable kernels
KERNEL_LIBRARIES = {"quantized_decomposed": "quantized_ops_lib"}
PORTABLE = "portable_ops_lib"
# ExecuTorch's ScalarType codes (c10 numbering) of the dtypes a tower takes or gives
DTYPES = {3: "int32", 4: "int64", 5: "float16", 6: "float32"}
# The most taps XNNPACK's depthwise kernels take (5×5). A depthwise convolution with more runs
# as a grouped IGEMM one output channel at a time: a 7×7 one over 64 channels of 64×64 took 40 ms
# (fp32 and int8 alike) where three of ≤ 25 taps summed take 2 ms (ExecuTorch 1.5.1, x86).
DEPTHWISE_TAPS = 25


@exporters.register("executorch")
class ExecuTorchTarget:
    """torch.export → edge dialect → XNNPACK partition → ``.pte`` (fp32, or fp16 inside).

    int8 programs come from the quantized PT2E graph: XNNPACK runs its quantized linear and
    convolution kernels; the 8-bit token table becomes ExecuTorch's ``embedding_byte`` op (the
    quantized kernel library, which apps link beside the XNNPACK delegate).

    w8 and w4 programs carry the weight-only simulation's integers (:func:`low_bit_tower`):
    linear layers as XNNPACK's dynamically quantized kernels (int8 or 4-bit weights per
    channel or per group, activations quantized to int8 per token at run time: XNNPACK's only
    low-bit linear kernels), the token table as ``embedding_byte`` or ``embedding_4bit`` (the
    quantized kernel library). Convolutions keep the simulation's weights as float values.
    """

    name = "executorch"
    file_name = "model.pte"
    precisions = ("fp32", "fp16", "int8", "w8", "w4")

    def export(
        self,
        module: nn.Module,
        example: torch.Tensor,
        path: Path,
        input_name: str,
        precision: str,
    ) -> dict[str, Any]:
        with torch_export_quiet():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
                XnnpackPartitioner,
            )
            from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
            from executorch.exir.passes.quant_fusion_pass import QuantFusionPass

            if precision in ("w8", "w4"):
                traced = low_bit_tower(module)
            else:
                traced = at_precision(module.eval(), precision, keep_fp32=FP32_LAYERS)
            program = torch.export.export(traced, (example,))
            graph = program.module()  # a copy: an int8 export leaves its simulation as it is
            if split_depthwise(graph):
                program = torch.export.export(graph, (example,))
            edge = to_edge_transform_and_lower(
                program, partitioner=[XnnpackPartitioner()], generate_etrecord=True
            )
            # int8: dequantize + embedding → embedding_byte (ops XNNPACK did not take)
            passes = [QuantFusionPass()] if precision == "int8" else []
            executable = edge.to_executorch(ExecutorchBackendConfig(passes=passes))
        path.write_bytes(executable.buffer)
        executable.get_etrecord().save(str(path.parent / ETRECORD))  # for per-op profiles
        return {"delegate": "xnnpack", **links(executable.executorch_program), "etrecord": ETRECORD}

    def runs_here(self) -> str | None:
        return None

    def load(self, path: Path) -> Runner:
        method = _method(path)

        def run(batch: np.ndarray) -> np.ndarray:
            # the runtime reads an input's memory as contiguous whatever its strides: a
            # transposed view (HWC pictures as CHW) would be read in the wrong order, silently
            return method.execute([torch.from_numpy(np.ascontiguousarray(batch))])[0].numpy()

        return run

    def runtime(self) -> str:
        version = library_versions(["executorch"]).get("executorch", "?")
        return f"executorch {version} runtime, XNNPACK delegate"

    def io_specs(
        self, path: Path, input_name: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        meta = _method(path).metadata
        (tensor_in,) = [meta.input_tensor_meta(i) for i in range(meta.num_inputs())]
        (tensor_out,) = [meta.output_tensor_meta(i) for i in range(meta.num_outputs())]

        def spec(name: str, tensor: Any, **extra: Any) -> dict[str, Any]:
            dtype = DTYPES.get(int(tensor.dtype()), str(tensor.dtype()))
            return tensor_spec(name, list(tensor.sizes()), dtype, **extra)

        return [spec(input_name, tensor_in)], [spec(OUTPUT, tensor_out, l2_normalized=True)]


def low_bit_tower(tower: Any) -> nn.Module:
    """A copy of a weight-only simulation (:class:`compress.quant.weight_only.WeightOnlyTower`)
    that torch.export traces to the ops ExecuTorch lowers: each linear layer's weight a torchao
    ``IntxUnpackedToInt8Tensor`` of the simulation's integers and scales with int8 per-token
    activation quantization (the pattern XNNPACK's partitioner takes, as torchao's
    ``Int8DynamicActivationIntxWeightConfig`` writes it, but with our values rather than
    torchao's own rounding), the token table a :class:`LowBitEmbedding`."""
    with torch_export_quiet():
        from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
            IntxUnpackedToInt8Tensor,
            IntxUnpackedToInt8TensorActivationQuantization,
        )
        from torchao.utils import unwrap_tensor_subclass

    module = copy.deepcopy(tower.module).eval()
    for path, weight in tower.weights.items():
        layer = module.get_submodule(path)
        if isinstance(layer, nn.Linear):
            data = IntxUnpackedToInt8Tensor(
                weight.values,
                weight.scales,
                torch.zeros_like(weight.scales, dtype=torch.int8),
                torch.int4 if weight.bits == 4 else torch.int8,
                (1, weight.group or layer.in_features),
                torch.float32,
                IntxUnpackedToInt8TensorActivationQuantization.INT8_ASYM_PER_TOKEN,
            )
            layer.weight = nn.Parameter(data, requires_grad=False)
        elif isinstance(layer, nn.Embedding):
            module.set_submodule(path, LowBitEmbedding(weight))
    return unwrap_tensor_subclass(module)


class LowBitEmbedding(nn.Module):
    """A token table looked up from its integers by ExecuTorch's quantized kernels:
    ``embedding_byte`` (8 bits, a scale per row) or ``embedding_4bit`` (two values a byte, the
    first in the high nibble, stored + 8; a scale per group)."""

    def __init__(self, weight: Any) -> None:
        super().__init__()
        from executorch.exir.passes import _quant_patterns_and_replacements  # noqa: F401 (the ops)

        self.bits = weight.bits
        values = weight.values
        if weight.bits == 4:
            unsigned = (values.to(torch.int16) + 8).to(torch.uint8)
            values = (unsigned[:, 0::2] << 4) | unsigned[:, 1::2]
        self.register_buffer("values", values.contiguous())
        self.register_buffer("scales", weight.scales.float().contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ops = torch.ops.quantized_decomposed
        if self.bits == 4:
            return ops.embedding_4bit.dtype(
                self.values, self.scales, None, -8, 7, ids, dtype=torch.float32
            )
        return ops.embedding_byte.dtype(
            self.values, self.scales[:, 0], None, -127, 127, ids, dtype=torch.float32
        )


def links(program: Any) -> dict[str, Any]:
    """What an app must link to run ``program`` (an ExecuTorch ``Program``): ``backends``, the
    delegates it calls, and ``kernels``, each operator the runtime looks up by name (those no
    delegate took) under the kernel library that registers it. A runtime without one of these
    fails at load with "Missing operator"."""
    (plan,) = program.execution_plan
    kernels: dict[str, list[str]] = {}
    for op in plan.operators:
        name = f"{op.name}.{op.overload}" if op.overload else op.name
        library = KERNEL_LIBRARIES.get(op.name.split("::")[0], PORTABLE)
        kernels.setdefault(library, []).append(name)
    return {
        "backends": sorted({delegate.id for delegate in plan.delegates}),
        "kernels": {library: sorted(ops) for library, ops in sorted(kernels.items())},
    }


def split_depthwise(graph: torch.fx.GraphModule) -> int:
    """Rewrite, in place, each depthwise convolution of more than :data:`DEPTHWISE_TAPS` taps
    into a sum of centred ones that XNNPACK runs as depthwise kernels; returns how many.

    A k×k kernel splits along its rows (its columns if a row pair does not fit): a centre block
    of as many rows as fit, then each pair of rows ±i from the centre as a 2-row convolution
    dilated by 2i (7×7: 3×7, then 2×7 at dilations 4 and 6). Each part keeps the stride and the
    output grid (its padding less its first row's offset); the bias goes with the centre. In
    an int8 graph the parts run in float on the dequantized input and weights, and their sum is
    quantized where the convolution's output was: the simulation's arithmetic in another order.
    """
    split = 0
    for node in list(graph.graph.nodes):
        found = _depthwise_split(graph, node)
        if found is None:
            continue
        axis, parts, weight = found
        x, _, bias, stride, padding, _, groups = node.args
        with graph.graph.inserting_before(node):
            total = None
            for index, (offsets, dilation) in enumerate(parts):
                name = f"_depthwise{split}_part{index}"
                graph.register_buffer(name, weight.index_select(axis, torch.tensor(offsets)))
                pad, dil = list(padding), [1, 1]
                pad[axis - 2] -= offsets[0]  # the part's taps start this far into the kernel
                dil[axis - 2] = dilation
                args = (x, graph.graph.get_attr(name), bias, stride, pad, dil, groups)
                part = graph.graph.call_function(torch.ops.aten.conv2d.default, args)
                bias = None
                add = (total, part)
                total = part if total is None else graph.graph.call_function(ADD, add)
        node.replace_all_uses_with(total)
        graph.graph.erase_node(node)
        split += 1
    if split:
        before = {n.target for n in graph.graph.nodes if n.op == "get_attr"}
        graph.graph.eliminate_dead_code()
        for target in before - {n.target for n in graph.graph.nodes if n.op == "get_attr"}:
            owner, _, name = target.rpartition(".")  # the weights the parts replaced
            delattr(graph.get_submodule(owner), name)
        graph.recompile()
    return split


ADD = torch.ops.aten.add.Tensor


def _depthwise_split(
    graph: torch.fx.GraphModule, node: torch.fx.Node
) -> tuple[int, list[tuple[list[int], int]], torch.Tensor] | None:
    """For a depthwise ``conv2d`` node with more than :data:`DEPTHWISE_TAPS` taps: the axis of
    its weight it splits along (2 rows, 3 columns), each part's kernel offsets along it and
    their dilation, and the float weight (dequantized in an int8 graph); else None."""
    if node.target != torch.ops.aten.conv2d.default or len(node.args) != 7:
        return None
    _, weight_node, _, _, padding, dilation, _ = node.args
    weight = _constant(graph, weight_node)
    if weight is None or weight.dim() != 4 or weight.shape[1] != 1 or list(dilation) != [1, 1]:
        return None
    kh, kw = weight.shape[2:]
    if kh * kw <= DEPTHWISE_TAPS:
        return None
    for axis, size, across in ((2, kh, kw), (3, kw, kh)):
        if size % 2 == 0 or 2 * across > DEPTHWISE_TAPS:
            continue  # an even kernel has no centre; a row pair that does not fit
        centre, half = size // 2, (DEPTHWISE_TAPS // across - 1) // 2
        parts = [(list(range(centre - half, centre + half + 1)), 1)]
        parts += [([centre - i, centre + i], 2 * i) for i in range(half + 1, centre + 1)]
        if padding[axis - 2] < centre - half:
            return None  # a part would need negative padding
        return axis, parts, weight
    return None


def _constant(graph: torch.fx.GraphModule, node: Any) -> torch.Tensor | None:
    """A weight's value: a module attribute, or one dequantized from int8 attributes."""
    if not isinstance(node, torch.fx.Node):
        return None
    if node.op == "get_attr":
        value = graph
        for name in node.target.split("."):
            value = getattr(value, name)
        return value.detach() if isinstance(value, torch.Tensor) else None
    if node.op == "call_function" and "dequantize" in str(node.target):
        args = [_constant(graph, a) if isinstance(a, torch.fx.Node) else a for a in node.args]
        if any(a is None for a in args):
            return None
        return node.target(*args, **node.kwargs)
    return None


def _method(path: Path):
    with torch_export_quiet():
        from executorch.runtime import Runtime

        load_quantized_kernels()

        program = Runtime.get().load_program(str(path))
        with _native_stderr_without("cpuinfo_utils.cpp"):
            return program.load_method("forward")


@contextlib.contextmanager
def _native_stderr_without(marker: str) -> Iterator[None]:
    """Drop the lines containing ``marker`` that native code writes to stderr in the block.

    XNNPACK's first initialisation in a process logs how it probed the CPU (files that only
    ARM boards have), five lines from C++ that no Python setting turns off; other lines pass.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if marker not in line:
                    sys.stderr.write(line)
