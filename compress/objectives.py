"""What a training step minimises, in two halves (embed, then the loss of the whole batch) so that
gradient caching can embed a batch a part at a time: pretraining's CLIP loss, with or without hard
negative captions, or its sigmoid loss. Distillation's objective builds on the same base
(:mod:`compress.distill.student`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from compress.data.negatives import swap_word
from compress.distill.losses import clip_loss, clip_loss_with_negatives, sigmoid_loss
from compress.tokenizer import Tokenizer


class Objective:
    """What a step minimises, in two halves so that a batch can be embedded a part at a time:
    ``embed(net, batch)`` gives the model's (image, text, scale) for (part of) a batch and
    ``loss(out, batch)`` the loss of the whole batch's embeddings. Calling it does both.
    This one is pretraining's: the contrastive loss of the model's own embeddings."""

    def embed(self, net: nn.Module, batch: dict) -> tuple[torch.Tensor, ...]:
        return net(batch["image"], batch["text"])

    def loss(self, out: tuple[torch.Tensor, ...], batch: dict) -> torch.Tensor:
        return clip_loss(*out)

    def __call__(self, net: nn.Module, batch: dict) -> torch.Tensor:
        return self.loss(self.embed(net, batch), batch)


clip_objective = Objective()


class HardNegatives(Objective):
    """Pretraining's CLIP loss with one hard negative caption per image: its caption with one
    word swapped for another of the same set (:func:`compress.data.negatives.swap_word`), drawn
    from (``seed``, the sample's index), so that gradient caching, which embeds a part twice,
    and a resumed run see the same negatives. A caption without a listed word is its own
    negative: its row is then the CLIP loss with the caption counted twice. ``embed`` returns
    the text embeddings as (B, 2, D), each caption's beside its negative's, so that the parts of
    a batch split and join as rows."""

    def __init__(self, word_sets: Sequence[Sequence[str]], context_length: int, seed: int) -> None:
        self.word_sets, self.seed = word_sets, seed
        self.tokenize = Tokenizer(context_length)

    def embed(self, net: nn.Module, batch: dict) -> tuple[torch.Tensor, ...]:
        negatives = [
            swap_word(caption, self.word_sets, np.random.default_rng([self.seed, int(index)]))
            for caption, index in zip(batch["caption"], batch["index"], strict=True)
        ]
        n = len(batch["image"])
        tokens = torch.cat([batch["text"], self.tokenize(negatives)])
        image, text, scale = net(batch["image"], tokens)
        return image, torch.stack([text[:n], text[n:]], dim=1), scale

    def loss(self, out: tuple[torch.Tensor, ...], batch: dict) -> torch.Tensor:
        image, text, scale = out
        return clip_loss_with_negatives(image, text[:, 0], text[:, 1], scale)


class Sigmoid(Objective):
    """Pretraining's sigmoid loss (:func:`compress.distill.losses.sigmoid_loss`) with the model's
    own logit scale and bias. ``embed`` returns (image, text, scale, bias), the bias the model's
    parameter itself (its forward does not return it), so that gradient caching passes it on as
    it does the scale."""

    def __init__(self, bias: nn.Parameter | None) -> None:
        if bias is None:
            raise ValueError("the sigmoid loss needs a model with a logit bias (config logit_bias)")
        self.bias = bias

    def embed(self, net: nn.Module, batch: dict) -> tuple[torch.Tensor, ...]:
        return (*net(batch["image"], batch["text"]), self.bias)

    def loss(self, out: tuple[torch.Tensor, ...], batch: dict) -> torch.Tensor:
        return sigmoid_loss(*out)
