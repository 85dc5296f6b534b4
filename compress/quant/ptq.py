"""W8A8 quantization of a CLIP model's towers through PT2E (``torchao.quantization.pt2e``).

The scheme is one for every target: int8 weights, symmetric per output channel; int8
activations, per tensor, at the inputs and outputs of everything XNNPACK's quantizer annotates
(linear and convolution layers, adds, multiplies, concatenations, pooling); the token table
weight-only, 8 bits per row (no runtime here has an int8 gather with int8 activations).
Layer norms, softmax and the attention matmuls stay in float, as the backends run them.

Each tower becomes an exported graph with quantizers in it (:func:`prepare`): observers that
record activation ranges (post-training quantization: :func:`calibrate` on a calibration split),
or fake-quantizers that train with the model (QAT, :mod:`compress.quant.qat`). :func:`convert`
turns those into quantize/dequantize pairs around int8 weights: run in PyTorch that is the INT8
simulation, and it is the graph every exporter lowers to its own int8 format.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable

import torch
from torch import nn

from compress.compat import torch_export_quiet
from compress.data.transforms import image_transform
from compress.models import CLIP, reparameterize
from compress.models.clip import NormalizedTower
from compress.models.record import TOWERS
from compress.quant.config import QuantConfig

# the batch dimension stays free: the same graphs train (large batches) and export (batch 1)
MAX_BATCH = 1 << 16


@functools.cache
def _percentile_observer() -> type:
    """An observer class for percentile calibration (torchao loads only when quantizing)."""
    from torchao.quantization.pt2e import MinMaxObserver

    class PercentileObserver(MinMaxObserver):
        """The mean over calibration batches of each batch's low and high percentile: ranges
        that ignore the rarest values (clipped to the range) instead of stretching to them."""

        def __init__(self, percentile: float = 99.99, **kwargs) -> None:
            super().__init__(**kwargs)
            self.percentile = percentile
            self.register_buffer("batches", torch.zeros((), dtype=torch.long))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.numel() == 0:
                return x
            flat = x.detach().float().flatten()
            flat = flat[:: max(1, flat.numel() // 1_000_000)]  # torch.quantile takes ≤ 16 M values
            q = self.percentile / 100
            low, high = torch.quantile(flat, torch.tensor([1 - q, q]))
            n = self.batches + 1
            first = n == 1
            self.min_val.copy_(torch.where(first, low, self.min_val + (low - self.min_val) / n))
            self.max_val.copy_(torch.where(first, high, self.max_val + (high - self.max_val) / n))
            self.batches += 1
            return x

    return PercentileObserver


def quantizer(config: QuantConfig, qat: bool = False, tower: str = "", only: str | None = None):
    """The PT2E quantizer of the W8A8 scheme: observers for calibration, or fake-quantizers for
    QAT. For the ``tower`` (``"image"`` or ``"text"``) it leaves the layers of
    ``config.float_layers`` in float; with ``only`` (a module path in the tower) it quantizes
    that layer alone (:mod:`compress.quant.sensitivity`)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import QuantizationConfig
    from torchao.quantization.pt2e import (
        FusedMovingAvgObsFakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        PerChannelMinMaxObserver,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationSpec
    from torchao.quantization.pt2e.quantizer.composable_quantizer import ComposableQuantizer
    from torchao.quantization.pt2e.quantizer.embedding_quantizer import EmbeddingQuantizer

    eps = 2**-12  # the smallest scale: keeps an all-zero tensor from dividing by zero
    if qat:
        act = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, eps=eps)
        weight = FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver, eps=eps
        )
    else:
        from torchao.quantization.pt2e import MinMaxObserver

        if config.calibration == "percentile":
            act = _percentile_observer().with_args(percentile=config.percentile, eps=eps)
        else:
            act = MinMaxObserver.with_args(eps=eps)
        weight = PerChannelMinMaxObserver.with_args(eps=eps)
    activations = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=act,
    )
    weights = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
        observer_or_fake_quant_ctr=weight,
    )
    scheme = QuantizationConfig(activations, activations, weights, None, qat)
    xnnpack = XNNPACKQuantizer().set_global(scheme)
    floats = [name.split(".", 1)[1] for name in config.float_layers if name.startswith(f"{tower}.")]
    if only is not None:
        xnnpack.set_filter_function(_within([only]))
    elif floats:
        inside = _within(floats)
        xnnpack.set_filter_function(lambda node: not inside(node))
    parts = [xnnpack]
    table = "token_embed"  # the text tower's token table: weight-only, by its own quantizer
    if config.embeddings and tower != "image" and table not in floats and only in (None, table):
        parts.insert(0, EmbeddingQuantizer())
    return ComposableQuantizer(parts)


def _within(paths: list[str]) -> Callable[[torch.fx.Node], bool]:
    """Whether a graph node comes from one of these modules of a tower (exported inside
    :class:`NormalizedTower`, whose attribute ``tower`` holds it)."""
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    filters = [get_module_name_filter(f"tower.{path}") for path in paths]
    return lambda node: any(f(node) for f in filters)


class QuantizedTower(nn.Module):
    """One tower's exported graph, with ``train()``/``eval()`` that mean what they do for the
    eager model: batch norm and dropout switch modes, and fake-quantizers update their ranges
    in training only (evaluation measures the ranges learned)."""

    def __init__(self, graph: torch.fx.GraphModule) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def train(self, mode: bool = True) -> QuantizedTower:
        from torchao.quantization.pt2e import (
            disable_observer,
            enable_observer,
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

        self.training = mode  # the graph's own train() is not for exported programs
        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
        self.graph.apply(enable_observer if mode else disable_observer)
        return self


class QuantizedCLIP(nn.Module):
    """A CLIP model whose towers are exported graphs with quantizers (or, converted, with
    quantize/dequantize ops); the same interface as :class:`~compress.models.CLIP` for training
    and evaluation. Each graph includes the L2 normalisation, as the exported towers do."""

    def __init__(
        self,
        visual: QuantizedTower,
        text: QuantizedTower,
        logit_scale: torch.Tensor,
        transform: Callable,
        tokenize: Callable,
        logit_bias: torch.Tensor | None = None,
        float_layers: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.visual, self.text = visual, text
        self.float_layers = tuple(float_layers)  # the layers its scheme left in float
        self.logit_scale = nn.Parameter(logit_scale.detach().clone())
        # a sigmoid-trained model's bias (its forward, like the float model's, leaves it out)
        self.logit_bias = None if logit_bias is None else nn.Parameter(logit_bias.detach().clone())
        # the float model's preprocessing, which evaluation feeds an encoder through
        self.transform, self.tokenize = transform, tokenize

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens)

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()

    def graph(self, tower: str) -> torch.fx.GraphModule:
        """The ``image`` or ``text`` tower's graph, as exporters take it."""
        return (self.visual if tower == "image" else self.text).graph


def examples(model: CLIP, batch: int = 2) -> dict[str, torch.Tensor]:
    """Tracing inputs of each tower (values do not matter: the towers have no data-dependent
    control flow; a batch of 2 keeps the batch dimension free)."""
    size = model.visual.image_size
    tokens = torch.zeros(batch, model.text.context_length, dtype=torch.long)
    tokens[:, 1] = model.text.eot_id
    return {"image": torch.zeros(batch, 3, size, size), "text": tokens}


def exported_tower(deployed: CLIP, name: str) -> torch.fx.GraphModule:
    """The ``image`` or ``text`` tower of a folded model with its L2 normalisation, exported
    (torch.export) with a free batch dimension: what quantizers annotate."""
    with torch_export_quiet():
        tower = NormalizedTower(deployed.visual if name == "image" else deployed.text)
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        x = examples(deployed)[name]
        return torch.export.export(tower, (x,), dynamic_shapes=({0: batch},)).module()


def prepare_graph(graph: torch.fx.GraphModule, quantize_with, qat: bool = False) -> QuantizedTower:
    """An exported tower (:func:`exported_tower`, changed in place) with the quantizer's
    observers, or fake-quantizers for QAT, in it."""
    with torch_export_quiet():  # torchao's import notes too
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

        return QuantizedTower((prepare_qat_pt2e if qat else prepare_pt2e)(graph, quantize_with))


def prepare(model: CLIP, config: QuantConfig, qat: bool = False) -> QuantizedCLIP:
    """Both towers of (a folded copy of) ``model`` as graphs with quantizers in them."""
    deployed = reparameterize(copy.deepcopy(model).float().eval())
    graphs = {
        name: prepare_graph(exported_tower(deployed, name), quantizer(config, qat, name), qat)
        for name in TOWERS
    }
    transform = image_transform(model.visual.image_size, **model.preprocess)
    tokenize = model.tokenize
    quantized = QuantizedCLIP(
        graphs["image"],
        graphs["text"],
        model.logit_scale,
        transform,
        tokenize,
        model.logit_bias,
        config.float_layers,
    )
    return quantized.train(qat)


@torch.no_grad()
def calibrate(model: QuantizedCLIP, batches: Iterable[dict]) -> QuantizedCLIP:
    """Record activation ranges over ``batches`` (dicts with ``image`` and ``text``)."""
    model.eval()
    for batch in batches:
        model(batch["image"], batch["text"])
    return model


def convert(model: QuantizedCLIP) -> QuantizedCLIP:
    """A copy with quantize/dequantize ops and int8 weights in place of the quantizers: the INT8
    simulation in PyTorch, and what the exporters lower."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    towers = []
    with torch_export_quiet():  # copying a graph trips torch's own pytree deprecation note
        model = copy.deepcopy(model).eval()
        for tower in (model.visual, model.text):
            graph = convert_pt2e(tower.graph)
            # an inference graph whose ops are in eval form already: give it back the plain
            # train()/eval() (flags only) that PT2E replaces with ones that refuse, so that
            # exporters and runners treat it as any module
            for name in ("train", "eval"):
                vars(graph).pop(name, None)
            towers.append(QuantizedTower(graph))
    return QuantizedCLIP(
        *towers,
        model.logit_scale,
        model.transform,
        model.tokenize,
        model.logit_bias,
        model.float_layers,
    ).eval()


def quantize(model: CLIP, config: QuantConfig, batches: Iterable[dict]) -> QuantizedCLIP:
    """Post-training quantization: prepare, calibrate on ``batches``, convert."""
    return convert(calibrate(prepare(model, config), batches))
