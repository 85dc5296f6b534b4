"""The ONNX target: fixed-shape, self-contained ONNX files run in ONNX Runtime."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.compat import torch_export_quiet
from export.manifest import library_versions, tensor_spec
from export.targets import OUTPUT, Runner, at_precision, exporters
from export.verify import run_batched


@exporters.register("onnx")
class OnnxTarget:
    """ONNX opset 18 through the torch.export-based exporter, checked with ``onnx.checker``.

    int8 models are QDQ graphs, written from the quantized PT2E graph: 8-bit weights behind
    ``DequantizeLinear``, ``QuantizeLinear``/``DequantizeLinear`` pairs around the activations,
    the token table 8-bit per row; onnxruntime fuses the pairs into integer kernels. The weights
    are stored unsigned (see :func:`unsigned_weights`), so those kernels compute the simulation's
    integers exactly on every x86 CPU.

    w8 and w4 (weight-only) models are the float graph with the simulation's integers in place
    of its weights (:func:`low_bit_weights`): linear layers as onnxruntime's ``MatMulNBits``
    (4 or 8 bits, float activations), a w4 token table as ``GatherBlockQuantized``, a w8 one as
    a standard int8 ``Gather`` scaled per row, convolutions behind a standard per-channel
    ``DequantizeLinear``.
    """

    name = "onnx"
    file_name = "model.onnx"
    precisions = ("fp32", "fp16", "int8", "w8", "w4")

    def __init__(self, opset: int = 18) -> None:
        self.opset = opset

    def export(
        self,
        module: nn.Module,
        example: torch.Tensor,
        path: Path,
        input_name: str,
        precision: str,
    ) -> dict[str, Any]:
        if precision == "fp16":
            module = _explicit_biases(at_precision(module, precision))
        export_tower(module, example, path, input_name=input_name, opset=self.opset)
        if precision in ("w8", "w4"):
            _rewrite(path, lambda model: low_bit_weights(model, module.weights))
            return {"opset": self.opset, **op_types(path), "weight_kernels": WEIGHT_KERNELS}
        if precision != "int8":
            return {"opset": self.opset, **op_types(path)}
        _rewrite(path, unsigned_weights)
        return {"opset": self.opset, **op_types(path), "int8_kernels": INT8_KERNELS}

    def runs_here(self) -> str | None:
        return None

    def load(self, path: Path) -> Runner:
        session = _session(path)
        (name,) = [i.name for i in session.get_inputs()]
        return lambda batch: session.run(None, {name: batch})[0]

    def runtime(self) -> str:
        version = library_versions(["onnxruntime"]).get("onnxruntime", "?")
        return f"onnxruntime {version} CPUExecutionProvider"

    def io_specs(
        self, path: Path, input_name: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        import onnx

        graph = onnx.load(os.fspath(path)).graph

        def spec(value: Any, **extra: Any) -> dict[str, Any]:
            tensor = value.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            return tensor_spec(value.name, [d.dim_value for d in tensor.shape.dim], dtype, **extra)

        return [spec(v) for v in graph.input], [spec(v, l2_normalized=True) for v in graph.output]


def export_tower(
    module: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike,
    *,
    input_name: str,
    opset: int = 18,
) -> Path:
    """Export ``module`` to one self-contained ONNX file whose shapes are those of ``example``.

    We use the torch.export-based exporter (``dynamo=True``): it is the maintained path (the
    TorchScript one warns that it will be removed), and it exports all three attention variants,
    the causal mask and the int32 EOT argmax as plain ONNX ops with parity at float rounding.
    Its one quirk here: it names values after the aten op that made them, so a text tower's token
    lookup is already called ``embedding`` and asking for an output of that name breaks SSA; we
    rename after export instead (see :func:`_name_output`).

    Example:
        >>> export_tower(NormalizedTower(model.visual), torch.rand(1, 3, 32, 32), "image.onnx",
        ...              input_name="image")  # doctest: +SKIP
    """
    import onnx  # lazy: importing edgeclip must not load onnx

    path = Path(path)
    with torch_export_quiet():
        program = torch.onnx.export(
            module.eval(),
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[input_name],
            verbose=False,
        )
    _name_output(program.model.graph, OUTPUT)
    for node in program.model.graph.all_nodes():
        # the exporter's per-node debug notes (Python stack traces, module paths): 3/4 of a
        # small int8 file, nothing an app or runtime reads
        node.metadata_props.clear()
    program.save(path, external_data=False)  # one file: apps ship it without a side-car .data
    onnx.checker.check_model(os.fspath(path), full_check=True)
    return path


def op_types(path: Path) -> dict[str, Any]:
    """What a runtime must implement to run the model: each imported operator set (domain →
    version; "" is the standard one) and how often each op type occurs, ops of other domains
    (onnxruntime's contrib ops) named ``domain::Op``."""
    import onnx

    model = onnx.load(os.fspath(path))
    counts = Counter(
        f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        for node in model.graph.node
    )
    return {
        "opsets": {o.domain: o.version for o in sorted(model.opset_import, key=lambda o: o.domain)},
        "op_types": dict(sorted(counts.items())),
    }


# What the int8 artifacts were made for, in the manifest (format.int8_kernels)
INT8_KERNELS = (
    "uint8 weights (zero point 128) and int8 activations: onnxruntime's U8U8 integer kernels, "
    "exact on x86 with or without VNNI (its U8S8 kernels saturate on AVX2 and non-VNNI AVX-512)"
)


def unsigned_weights(model: Any) -> int:
    """Store every int8 weight behind a ``DequantizeLinear`` as uint8 with its zero point + 128
    (the same real values); returns how many were changed.

    On x86 CPUs without VNNI, onnxruntime multiplies uint8 activations by int8 weights with
    ``vpmaddubsw``, which adds two products into a saturating int16: with activations near 255
    and weights near ±127 the sums clip, and a tiny text tower's embeddings fell to cosine 0.96
    of the INT8 simulation they were lowered from (AVX2; 0.9992 with VNNI). uint8 × uint8 goes
    through kernels that widen to 16 bits first and never saturate, so the artifact computes
    the same integers on every CPU, as onnxruntime's quantization guide advises for such CPUs.
    """
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    shifted: dict[str, str] = {}  # int8 initializer -> its uint8 twin (zero points are shared)

    def unsigned(name: str) -> str:
        if name not in shifted:
            values = numpy_helper.to_array(initializers[name]).astype(np.int16) + 128
            twin = numpy_helper.from_array(values.astype(np.uint8), f"{name}_u8")
            graph.initializer.append(twin)
            shifted[name] = twin.name
        return shifted[name]

    def int8(name: str) -> bool:
        return name in initializers and initializers[name].data_type == TensorProto.INT8

    changed = 0
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) == 3:
            weight, _, zero_point = node.input
            if int8(weight) and int8(zero_point):
                node.input[0], node.input[2] = unsigned(weight), unsigned(zero_point)
                changed += 1
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return changed


# What the weight-only artifacts need of the runtime, in the manifest (format.weight_kernels)
WEIGHT_KERNELS = (
    "onnxruntime's contrib ops (com.microsoft, in every onnxruntime build): MatMulNBits for "
    "linear layers (float activations), GatherBlockQuantized for a 4-bit token table"
)
CONTRIB = "com.microsoft"
MATMUL_BLOCKS = (16, 32, 64, 128, 256)  # the block sizes MatMulNBits takes (onnxruntime 1.31)


def low_bit_weights(model: Any, weights: dict[str, Any]) -> int:
    """Put the integers of ``weights`` (:class:`compress.quant.weight_only.QuantizedWeight`
    by layer) in place of the float weights of an exported weight-only simulation; returns how
    many weights were replaced.

    The exporter names the initializers it folds (a linear layer's transposed weight), so a
    weight is found by its values: the simulation's float weight is exactly its integers times
    its scales, and quantizing is a function of the values, so two equal weights have equal
    integers too. A linear layer (``MatMul`` by its transposed weight, or ``Gemm``) becomes
    ``MatMulNBits``: 4-bit weights in groups of 32, or 8-bit with the row's scale repeated per
    block (its blocks are at most 256 wide); the token table's ``Gather`` becomes
    ``GatherBlockQuantized`` (4-bit) or a standard int8 ``Gather`` times the gathered row
    scales; a convolution's weight comes from a per-channel ``DequantizeLinear``. Every weight
    of ``weights`` must be found: a missing one means the exporter changed how it writes layers.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    by_value: dict[tuple, tuple[str, Any, bool]] = {}
    for path, weight in weights.items():
        dense = weight.dequantize().numpy()
        by_value[_key(dense)] = (path, weight, False)
        if dense.ndim == 2:
            by_value[_key(np.ascontiguousarray(dense.T))] = (path, weight, True)
    arrays: dict[str, np.ndarray] = {}

    def find(name: str) -> tuple[str, Any, bool] | None:
        if name not in initializers:
            return None
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(initializers[name])
        return by_value.get(_key(arrays[name]))

    def constant(array: np.ndarray, name: str) -> str:
        graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    found: set[str] = set()
    nodes = []
    for node in graph.node:
        kind = node.op_type
        match = find(node.input[1]) if kind in ("MatMul", "Gemm", "Conv") else None
        if kind == "Gather":
            match = find(node.input[0])
        if match is None:
            nodes.append(node)
            continue
        path, weight, transposed = match
        values, scales = weight.values.numpy(), weight.scales.numpy().astype(np.float32)
        name = f"{path}.{weight.bits}bit"
        if kind == "Conv":
            dequantized = f"{name}.dequantized"
            nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [constant(values, name), constant(scales[:, 0], f"{name}.scales")],
                    [dequantized],
                    axis=0,
                )
            )
            node.input[1] = dequantized
            nodes.append(node)
        elif kind == "Gather":
            nodes.extend(_gather(node, values, scales, weight, name, constant))
        else:
            gemm = kind == "Gemm"
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if gemm != (not transposed) or attributes.get("transA", 0):
                raise ValueError(f"{path}: unexpected {kind} layout {attributes}")
            product = (
                f"{node.output[0]}.product" if gemm and len(node.input) > 2 else node.output[0]
            )
            packed, block, block_scales = _matmul_blocks(values, scales, weight)
            nodes.append(
                helper.make_node(
                    "MatMulNBits",
                    [
                        node.input[0],
                        constant(packed, name),
                        constant(block_scales, f"{name}.scales"),
                    ],
                    [product],
                    domain=CONTRIB,
                    K=values.shape[1],
                    N=values.shape[0],
                    bits=weight.bits,
                    block_size=block,
                )
            )
            if product != node.output[0]:  # Gemm's bias
                nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]]))
        found.add(path)
    missing = sorted(set(weights) - found)
    if missing:
        raise ValueError(f"weights not found in the exported graph: {', '.join(missing)}")
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == CONTRIB for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(found)


def _key(array: np.ndarray) -> tuple:
    return array.shape, str(array.dtype), hashlib.sha256(array.tobytes()).hexdigest()


def _matmul_blocks(
    values: np.ndarray, scales: np.ndarray, weight: Any
) -> tuple[np.ndarray, int, np.ndarray]:
    """A linear weight (N, K) as ``MatMulNBits`` stores it: (N, blocks, block bytes) unsigned
    (zero point 2**(bits-1), the default) and packed two per byte at 4 bits, low nibble first,
    K padded to whole blocks; with its (N × blocks) scales. A per-channel weight repeats its
    row's scale in every block."""
    n, k = values.shape
    block = weight.group or min(b for b in MATMUL_BLOCKS if b >= min(k, MATMUL_BLOCKS[-1]))
    blocks = -(-k // block)
    unsigned = (values.astype(np.int16) + 2 ** (weight.bits - 1)).astype(np.uint8)
    unsigned = np.pad(
        unsigned, ((0, 0), (0, blocks * block - k)), constant_values=2 ** (weight.bits - 1)
    )
    unsigned = unsigned.reshape(n, blocks, block)
    if weight.bits == 4:
        unsigned = unsigned[..., 0::2] | (unsigned[..., 1::2] << 4)
    block_scales = scales if weight.group else np.repeat(scales, blocks, axis=1)
    return np.ascontiguousarray(unsigned), block, np.ascontiguousarray(block_scales).reshape(-1)


def _gather(node: Any, values: np.ndarray, scales: np.ndarray, weight: Any, name: str, constant):
    """The token table's lookup from its integers: ``GatherBlockQuantized`` at 4 bits (the
    table unsigned, zero point 8, two values a byte, low nibble first), else the int8 rows
    gathered, cast to float and scaled by their gathered per-row scales."""
    from onnx import TensorProto, helper

    table, ids = node.input
    out = node.output[0]
    if weight.bits == 4:
        unsigned = (values.astype(np.int16) + 8).astype(np.uint8)
        packed = unsigned[:, 0::2] | (unsigned[:, 1::2] << 4)
        return [
            helper.make_node(
                "GatherBlockQuantized",
                [constant(packed, name), ids, constant(scales, f"{name}.scales")],
                [out],
                domain=CONTRIB,
                bits=4,
                block_size=weight.group,
                gather_axis=0,
                quantize_axis=1,
            )
        ]
    rows, row_scales = f"{out}.int8", f"{out}.scales"
    return [
        helper.make_node("Gather", [constant(values, name), ids], [rows]),
        helper.make_node("Gather", [constant(scales, f"{name}.scales"), ids], [row_scales]),
        helper.make_node("Cast", [rows], [f"{rows}.float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{rows}.float", row_scales], [out]),
    ]


def _rewrite(path: Path, change: Any) -> None:
    """Apply ``change`` to the ONNX file at ``path`` (in an export's temporary folder), then check it."""
    import onnx

    model = onnx.load(os.fspath(path))
    change(model)
    onnx.save(model, os.fspath(path))
    onnx.checker.check_model(os.fspath(path), full_check=True)


def _name_output(graph: Any, name: str) -> None:
    """Call the graph's single output ``name``, first renaming any inner value that already has it."""
    (output,) = graph.outputs
    for node in graph:
        for value in node.outputs:
            if value.name == name and value is not output:
                value.name = f"{name}_inner"
    output.name = name


def _explicit_biases(module: nn.Module) -> nn.Module:
    """Give every bias-free linear layer a zero bias (the same function, one more add).

    onnxruntime 1.31's attention fusion (on at its default optimisation level) cannot fuse an
    fp16 attention whose q/k/v projection has no bias: the session fails to load with "Tensor
    type mismatch" (measured on MobileCLIP-style attention blocks). With an explicit bias the
    pattern is the one it handles.
    """
    for child in module.modules():
        if isinstance(child, nn.Linear) and child.bias is None:
            child.bias = nn.Parameter(
                torch.zeros(child.out_features, dtype=child.weight.dtype), requires_grad=False
            )
    return module


def _session(path: str | os.PathLike, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
    import onnxruntime as ort  # lazy: importing edgeclip must not load a runtime

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; ORT's graph-optimizer notes are not actionable
    return ort.InferenceSession(os.fspath(path), sess_options=options, providers=list(providers))


def run_onnx(path: str | os.PathLike, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Run a single-input, single-output ONNX model in ONNX Runtime over ``inputs``, ``batch_size`` rows at a time.

    Example:
        >>> run_onnx("export/image/model.onnx", images.numpy(), batch_size=1)  # doctest: +SKIP
    """
    return run_batched(OnnxTarget().load(Path(path)), inputs, batch_size)
