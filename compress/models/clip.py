"""A CLIP model: image tower + text tower + learnable logit scale (Radford et al. 2021), and a
learnable logit bias for models trained with the sigmoid loss (SigLIP, Zhai et al. 2023)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from compress.tokenizer import Tokenizer

# the image normalisation OpenAI's CLIP weights expect (per RGB channel, for [0, 1] inputs)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIP(nn.Module):
    """Two towers mapping images and token ids into one L2-normalised embedding space.

    Example:
        >>> model = build_model("tiny")  # doctest: +SKIP
        >>> image_emb, text_emb, scale = model(images, tokens)  # doctest: +SKIP
    """

    def __init__(
        self,
        visual: nn.Module,
        text: nn.Module,
        init_logit_scale: float = math.log(1 / 0.07),
        mean: tuple[float, float, float] = OPENAI_MEAN,
        std: tuple[float, float, float] = OPENAI_STD,
        init_logit_bias: float | None = None,
    ):
        super().__init__()
        self.visual = visual
        self.text = text
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        # b in the sigmoid loss's logits s·x·yᵀ + b; None for softmax-trained models
        self.logit_bias = (
            None if init_logit_bias is None else nn.Parameter(torch.tensor(float(init_logit_bias)))
        )
        # the image normalisation the weights expect (per RGB channel, for [0, 1] inputs)
        self.preprocess = {"mean": tuple(mean), "std": tuple(std)}
        # a tokenizer of its own (a teacher given its tokenizer file); None: CLIP's BPE
        self.own_tokenizer: Callable[[list[str]], torch.Tensor] | None = None
        self._bpe: Tokenizer | None = None

    @property
    def tokenize(self) -> Callable[[list[str]], torch.Tensor]:
        """Captions → the token ids this model reads: its own tokenizer's, else CLIP's BPE at
        its text tower's context length."""
        if self.own_tokenizer is not None:
            return self.own_tokenizer
        if self._bpe is None:
            self._bpe = Tokenizer(self.text.context_length)
        return self._bpe

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(tokens), dim=-1)

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (image embeddings (B, D), text embeddings (B, D), logit scale s = exp(logit_scale))."""
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()


class NormalizedTower(nn.Module):
    """One tower plus the L2 normalisation: what an exported image or text model computes."""

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.tower(x), dim=-1)
