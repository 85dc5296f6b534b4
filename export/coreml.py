"""The Core ML target: fixed-shape ML Programs for iOS 17+, converted with coremltools and checked
by reading the saved spec (which works on any OS; running the model needs macOS)."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import platform
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.compat import torch_export_quiet
from export.manifest import library_versions, tensor_spec
from export.targets import OUTPUT, Runner, exporters
from export.verify import ParityError

DEPLOYMENT_TARGET = "iOS17"  # ML Program opset CoreML7 (iOS 17, macOS 14)
# w4's 4-bit blocks are iOS 18's constexpr_blockwise_shift_scale (iOS 17 has per-channel int8
# and lookup tables only, and a lookup table per tensor cannot hold a scale per group)
DEPLOYMENT_TARGETS = {"w4": "iOS18"}
# precision → the dtype every floating-point weight must have in the saved program (int8
# programs keep biases and norms in fp16, and compute in fp16 between quantized ops; so do the
# weight-only ones)
WEIGHT_DTYPES = {
    "fp32": "float32",
    "fp16": "float16",
    "int8": "float16",
    "w8": "float16",
    "w4": "float16",
}


@exporters.register("coreml")
class CoreMLTarget:
    """torch.export → coremltools ML Program (``.mlpackage``), fp32 or fp16 inside.

    Inputs are plain tensors (``TensorType``), not ``ImageType``: every target takes the same
    float NCHW input that the manifest's preprocessing describes (bicubic resize, centre crop,
    ``(x - mean) / std`` per channel), so the app code and the parity samples are shared. An
    ``ImageType`` could not hold that contract anyway: the app still has to resize and crop,
    and its ``scale`` is one number for all channels, so CLIP's per-channel std (0.269, 0.261,
    0.276) would not fold in exactly. Core ML has no int64 tensors, so token ids go in as int32
    (ids are < 50k); images and embeddings stay float32 at fp16 too (the casts are inside).

    w8 and w4 programs are the weight-only simulation converted at fp16 with each of its
    quantized weights compressed by coremltools (:func:`compress_weights`) to the same integers
    (the scheme is idempotent: coremltools' symmetric scales are ours), int8 per channel (iOS
    17's ``constexpr_affine_dequantize``), or at w4 int4 per block of 32 (iOS 18's
    ``constexpr_blockwise_shift_scale``); Core ML computes in fp16 from the dequantized weights.
    """

    name = "coreml"
    file_name = "model.mlpackage"  # a bundle folder
    precisions = ("fp32", "fp16", "int8", "w8", "w4")

    def export(
        self,
        module: nn.Module,
        example: torch.Tensor,
        path: Path,
        input_name: str,
        precision: str,
    ) -> dict[str, Any]:
        if precision not in self.precisions:
            raise ValueError(
                f"unknown precision {precision!r}; expected {', '.join(self.precisions)}"
            )
        ct = _coremltools()
        module = module.eval()
        with torch.no_grad():
            out_shape = list(module(example).shape)
        in_dtype = "float32" if example.is_floating_point() else "int32"
        with torch_export_quiet():
            # coremltools converts the ATen dialect only; torch.export gives the training one
            program = torch.export.export(module, (example,)).run_decompositions({})
            with _conversion_quiet():
                mlmodel = ct.convert(
                    program,
                    inputs=[
                        ct.TensorType(
                            name=input_name, shape=tuple(example.shape), dtype=np.dtype(in_dtype)
                        )
                    ],
                    # without a dtype, fp16 programs for iOS16+ get fp16 inputs and outputs
                    # (and token ids would round to the nearest fp16 above 2048)
                    outputs=[ct.TensorType(name=OUTPUT, dtype=np.float32)],
                    convert_to="mlprogram",
                    minimum_deployment_target=getattr(ct.target, deployment_target(precision)),
                    compute_precision=(
                        ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
                    ),
                    pass_pipeline=_pipeline(precision),
                )
                quantized = None
                if precision in ("w8", "w4"):
                    mlmodel, quantized = compress_weights(mlmodel, module.weights)
        mlmodel.save(str(path))
        return check_spec(
            path,
            inputs=[tensor_spec(input_name, example.shape, in_dtype)],
            outputs=[tensor_spec(OUTPUT, out_shape, "float32")],
            precision=precision,
            quantized_values=quantized,
        )

    def runs_here(self) -> str | None:
        return None if platform.system() == "Darwin" else "needs macOS"

    def load(self, path: Path) -> Runner:
        if (reason := self.runs_here()) is not None:
            raise RuntimeError(f"{path}: Core ML models run only in Core ML ({reason})")
        ct = _coremltools()
        model = ct.models.MLModel(str(path))
        ((name, dtype),) = [(s["name"], s["dtype"]) for s in _io(model.get_spec())[0]]
        return lambda batch: np.asarray(
            model.predict({name: batch.astype(dtype, copy=False)})[OUTPUT], dtype=np.float32
        )

    def runtime(self) -> str:
        version = library_versions(["coremltools"]).get("coremltools", "?")
        return f"coremltools {version}, Core ML (macOS)"

    def io_specs(
        self, path: Path, input_name: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        inputs, outputs = _io(_load_spec(path))
        return inputs, [{**spec, "l2_normalized": True} for spec in outputs]


# Passes that fold a following scale into a convolution's weight (a MobileCLIP block's layer
# scale): a weight-only program must keep the simulation's weights as they are, to compress
# them to its integers; the scale then stays a multiply of its own
WEIGHT_CHANGING_PASSES = ("common::fuse_conv_scale", "common::fuse_conv_batchnorm")


def _pipeline(precision: str) -> Any:
    """coremltools' default passes, less those that change weights at w8 and w4."""
    ct = _coremltools()
    pipeline = ct.PassPipeline.DEFAULT
    if precision in ("w8", "w4"):
        pipeline.remove_passes(WEIGHT_CHANGING_PASSES)
    return pipeline


def deployment_target(precision: str) -> str:
    """The oldest OS a program at ``precision`` runs on (coremltools' target name)."""
    return DEPLOYMENT_TARGETS.get(precision, DEPLOYMENT_TARGET)


def compress_weights(mlmodel: Any, weights: dict[str, Any]) -> tuple[Any, int]:
    """``mlmodel`` (converted from a weight-only simulation at fp16) with the constants that
    hold the simulation's quantized weights compressed to their integers, and how many integer
    values those constants hold.

    Each constant is found by its values (the simulation's weight cast to fp16, as the
    conversion casts it, or its transpose), and gets its own config: int8 symmetric per channel,
    or int4 symmetric per block of the weight's group along its last axis. coremltools then
    recomputes ``scale = max|w| / qmax`` per channel or block from the fp16 values, which are
    the simulation's ``q * scale`` rounded to fp16, and rounds back to the same integers (an
    error below half a step: fp16's relative error times at most 127). Every weight must be
    found, and no other constant is touched. Layers whose fp16 weights are equal (a random
    model's folded RepMixers: identity kernels once the 1e-5 layer scale rounds away) may share
    one constant, which coremltools' ``const_deduplication`` pass keeps for all of them: it is
    compressed once and checked against each layer's integers.
    """
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
    )

    by_value: dict[tuple, list[tuple[str, Any, np.ndarray]]] = {}
    for path, weight in weights.items():
        dense = weight.dequantize().numpy().astype(np.float16)
        config = OpLinearQuantizerConfig(
            mode="linear_symmetric",
            dtype=f"int{weight.bits}",
            granularity="per_channel" if weight.group is None else "per_block",
            block_size=0 if weight.group is None else [1, weight.group],
            weight_threshold=0,
        )
        values = weight.values.numpy()
        # layers whose weights are equal in fp16 share one constant after coremltools'
        # const_deduplication pass: a constant stands for every layer with its values
        by_value.setdefault(_key(dense), []).append((path, config, values))
        if dense.ndim == 2:
            transposed = (path, config, values.T)
            by_value.setdefault(_key(np.ascontiguousarray(dense.T)), []).append(transposed)
    matches = {}
    for function in mlmodel._mil_program.functions.values():
        for op in _mil_operations(function):
            value = op.outputs[0].val if op.op_type == "const" else None
            if isinstance(value, np.ndarray) and value.dtype == np.float16:
                match = by_value.get(_key(value))
                if match is not None:
                    matches[op.name] = match
    missing = sorted(set(weights) - {path for match in matches.values() for path, *_ in match})
    if missing:
        raise ParityError(f"weights not found in the converted program: {', '.join(missing)}")
    configs = {name: match[0][1] for name, match in matches.items()}
    compressed = linear_quantize_weights(mlmodel, OptimizationConfig(op_name_configs=configs))
    _check_integers(
        compressed,
        {name: [(path, values) for path, _, values in match] for name, match in matches.items()},
    )
    return compressed, sum(match[0][2].size for match in matches.values())


def _check_integers(mlmodel: Any, expected: dict[str, list[tuple[str, np.ndarray]]]) -> None:
    """Raise unless each compressed constant (by its original name) holds exactly the
    simulation's integers of each layer it stands for: iOS 17's ``constexpr_affine_dequantize``
    (zero point 0) or iOS 18's ``constexpr_blockwise_shift_scale`` (no offset)."""
    found = {}
    for function in mlmodel._mil_program.functions.values():
        for op in _mil_operations(function):
            if op.op_type in ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"):
                data = op.inputs.get("quantized_data", op.inputs.get("data"))
                found[op.name.removesuffix("_quantized")] = data.val
    for name, layers in expected.items():
        data = found.get(name)
        for path, values in layers:
            if data is None or not np.array_equal(data.astype(np.int16), values.astype(np.int16)):
                raise ParityError(f"{path}: coremltools did not write the simulation's integers")


def _key(array: np.ndarray) -> tuple:
    return array.shape, array.tobytes()


def _mil_operations(block: Any) -> Iterator[Any]:
    """Every operation of a MIL block (a function), including those of nested blocks."""
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _mil_operations(inner)


def check_spec(
    path: Path,
    *,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    precision: str,
    quantized_values: int | None = None,
) -> dict[str, Any]:
    """Check a saved ``.mlpackage`` by reading its spec, without compiling or running it.

    Checks that the inputs and outputs are ``inputs`` and ``outputs`` (name, fixed shape,
    dtype), that it is an ML Program for iOS 17 or later, that every floating-point constant has
    the dtype of ``precision`` (small integer and bool constants are allowed), that every op
    exists in the opset of the precision's deployment target (iOS 17, w4 iOS 18) as coremltools
    defines it, and for a weight-only program that it holds exactly ``quantized_values`` 8- and
    4-bit weight values.

    Returns:
        The manifest's format details: deployment target, spec version, opset, precision, the
        op-type histogram of the main function and the number of constant values per dtype.

    Raises:
        export.verify.ParityError: a check failed; the message names the file and the problem.

    Example:
        >>> check_spec(Path("image/model.mlpackage"), precision="fp16",  # doctest: +SKIP
        ...            inputs=[tensor_spec("image", [1, 3, 256, 256], "float32")],
        ...            outputs=[tensor_spec("embedding", [1, 512], "float32")])["spec_checks"]
        'passed'
    """
    ct = _coremltools()
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry
    from coremltools.proto import MIL_pb2

    def fail(problem: str) -> None:
        raise ParityError(f"{path}: {problem}")

    spec = _load_spec(path)
    if spec.WhichOneof("Type") != "mlProgram":
        fail(f"is a {spec.WhichOneof('Type')}, expected an mlProgram")
    name = deployment_target(precision)
    target = getattr(ct.target, name)
    if spec.specificationVersion < target.value:
        fail(f"specification version {spec.specificationVersion} is older than {name}")
    declared_inputs, declared_outputs = _io(spec)
    for kind, features, declared, expected in (
        ("inputs", spec.description.input, declared_inputs, inputs),
        ("outputs", spec.description.output, declared_outputs, outputs),
    ):
        flexible = [
            f.name for f in features if f.type.multiArrayType.WhichOneof("ShapeFlexibility")
        ]
        if flexible:
            fail(f"{kind} {flexible} have flexible shapes, expected fixed ones")
        if declared != expected:
            fail(f"{kind} are {declared}, expected {expected}")

    main = spec.mlProgram.functions["main"]
    operations = list(_operations(main.block_specializations[main.opset]))
    ops = Counter(op.type for op in operations)
    unknown = sorted(t for t in ops if target not in SSAOpRegistry.core_ops.get(t, {}))
    if unknown:
        fail(f"ops {unknown} are not in the {name} opset")

    weights: Counter[str] = Counter()
    low_bit = 0  # the values of the integer data of weight-only (dequantized) constants
    for op in operations:  # constants, and the integer data of constexpr (dequantized) weights
        if op.type == "const" or op.type.startswith("constexpr_"):
            values = [
                (name, v)
                for name, v in op.attributes.items()
                if op.type != "const" or name == "val"
            ]
            # iOS 18's constexpr ops take their data and scales as inline input values
            values += [
                (name, a.value)
                for name, v in op.inputs.items()
                for a in v.arguments
                if a.HasField("value")
            ]
            for name, value in values:
                if value.WhichOneof("value") is None:
                    continue
                tensor = value.type.tensorType
                size = math.prod(d.constant.size for d in tensor.dimensions)
                weights[MIL_pb2.DataType.Name(tensor.dataType).lower()] += size
                if name in ("quantized_data", "data"):
                    low_bit += size
    want = WEIGHT_DTYPES[precision]
    stray = sorted(d for d in weights if d.startswith(("float", "bfloat")) and d != want)
    if stray:
        fail(f"has {', '.join(stray)} constants in a {precision} program (expected {want} only)")
    if not weights[want]:
        fail(f"has no {want} weights")
    if precision == "int8" and not weights["int8"] + weights["uint8"] > weights[want]:
        fail(
            f"has {weights[want]} float16 weight values and only "
            f"{weights['int8'] + weights['uint8']} 8-bit ones, expected mostly 8-bit"
        )
    if quantized_values is not None and low_bit != quantized_values:
        fail(f"has {low_bit} 8- and 4-bit weight values, expected {quantized_values}")

    return {
        "minimum_deployment_target": ct.target(spec.specificationVersion).name,
        "specification_version": spec.specificationVersion,
        "opset": main.opset,
        "compute_precision": precision,
        "op_types": dict(sorted(ops.items())),
        "weight_dtypes": dict(sorted(weights.items())),  # values per dtype, over all consts
        "spec_checks": "passed",
    }


def _io(spec: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A spec's inputs and outputs as manifest tensor specs (name, shape, dtype)."""
    from coremltools.proto import FeatureTypes_pb2

    def spec_of(feature: Any) -> dict[str, Any]:
        array = feature.type.multiArrayType
        dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType).lower()
        return tensor_spec(feature.name, list(array.shape), dtype)

    return [spec_of(f) for f in spec.description.input], [
        spec_of(f) for f in spec.description.output
    ]


def _operations(block: Any) -> Iterator[Any]:
    """Every operation of an ML Program block, including those in nested blocks."""
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _operations(inner)


def _load_spec(path: Path) -> Any:
    ct = _coremltools()
    return ct.utils.load_spec(str(path))


class _Notes(logging.Filter):
    """Drops coremltools log records whose message matches one of ``patterns``."""

    def __init__(self, *patterns: str) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


# Said at import, about this machine rather than any model: the pinned torch is newer than the
# ones coremltools 9.0 lists as tested (this target's tests are what cover it); the installed
# scikit-learn is unused; on Linux the native Core ML bindings are absent (runs_here says so).
_IMPORT_NOTES = _Notes(
    r"^Torch version \S+ has not been tested with coremltools",
    r"^scikit-learn version \S+ is not supported",
    r"^Failed to load _ML\w+Proxy: No module named 'coremltools\.libcoremlpython'",
)
# Said while converting: Core ML has no int64, so every int64 constant of the graph (indices,
# the EOT id) is stored as int32, with a note each time; none of ours is near 2**31.
_CONVERSION_NOTES = _Notes(r"^Saving value type of int64 into a builtin type of int32")


@functools.cache
def _coremltools():
    """Import coremltools (lazily: importing edgeclip must not load it), minus its import notes,
    with the one converter it lacks for our graphs."""
    logging.getLogger("coremltools").addFilter(_IMPORT_NOTES)
    with torch_export_quiet():  # its torch frontend imports torchao, and torchao has notes
        import coremltools as ct
        from coremltools.converters.mil.frontend.torch import register_torch_op
        from coremltools.converters.mil.frontend.torch.torch_op_registry import (
            _TORCH_OPS_REGISTRY,
        )

    if _TORCH_OPS_REGISTRY.get_func("alias") is None:  # 9.0 has alias_copy but not alias

        @register_torch_op
        def alias(context: Any, node: Any) -> None:
            """torch.export writes a no-op slice (``pos[:, :L]``, L the full length) as
            ``aten.alias``; in an inference graph it is the identity."""
            context.add(context[node.inputs[0]], torch_name=node.name)

    return ct


@contextlib.contextmanager
def _conversion_quiet() -> Iterator[None]:
    """Around ``ct.convert``: no progress bars, and none of the notes it makes about every model.

    coremltools 9.0 draws a tqdm bar per stage (frontend, three pass pipelines) with no switch
    to turn them off, so its two call sites get a disabled tqdm for the duration. Its
    cast-fusion pass compares the ranges of int and float dtypes in numpy and trips an overflow
    RuntimeWarning doing so (the pass's decision is unaffected), and its torch frontend asks its
    own op registry through a method it has deprecated, thousands of times per model.
    """
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.mil.passes import pass_pipeline

    sites = [(ops, "_tqdm"), (pass_pipeline, "tqdm")]
    bars = [getattr(module, name) for module, name in sites]
    logger = logging.getLogger("coremltools")
    logger.addFilter(_CONVERSION_NOTES)
    try:
        for (module, name), bar in zip(sites, bars, strict=True):
            setattr(module, name, functools.partial(bar, disable=True))
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message="overflow encountered in cast",
                category=RuntimeWarning,
                module=r"coremltools\.converters\.mil\.mil\.passes\.defs\.optimize_repeat_ops",
            )
            warnings.filterwarnings(
                "ignore",
                message=r"Function _TORCH_OPS_REGISTRY\.__contains__ is deprecated",
                category=DeprecationWarning,
            )
            yield
    finally:
        for (module, name), bar in zip(sites, bars, strict=True):
            setattr(module, name, bar)
        logger.removeFilter(_CONVERSION_NOTES)
