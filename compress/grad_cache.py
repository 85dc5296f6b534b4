"""Gradient caching (Gao et al. 2021): a batch's step in a fraction of its activation memory,
every logit matrix still spanning the whole batch (``accumulate`` of the training configs)."""

from __future__ import annotations

import contextlib
import itertools

import torch
from torch import nn

from compress.objectives import Objective
from compress.precision import MixedPrecision


def split_batch(batch: dict, parts: int) -> list[dict]:
    """A batch as ``parts`` consecutive micro-batches (tensors and lists split, counts kept once)."""
    n = len(batch["image"])
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    pieces = []
    for i, (start, stop) in enumerate(itertools.pairwise(bounds)):
        piece = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor | list):
                piece[key] = value[start:stop]
            else:
                piece[key] = value if i == 0 else type(value)()
        pieces.append(piece)
    return pieces


def accumulated_backward(
    net: nn.Module, batch: dict, objective: Objective, parts: int, precision: MixedPrecision
) -> torch.Tensor:
    """Backward of the whole batch's loss while holding one micro-batch's activations at a time.

    Gradient caching (Gao et al. 2021): embed every part without a graph, take the loss of the
    whole batch on those embeddings (so every logit matrix spans the whole batch, negatives
    included) and its gradient with respect to them, then re-embed each part with a graph and
    backpropagate that gradient. The random state is replayed, so a part embeds the same both
    times; the gradient is the full batch's up to float rounding. Under DDP only the last part
    synchronises.
    """
    pieces = split_batch(batch, min(parts, len(batch["image"])))
    states, outs = [], []
    cuda = torch.cuda.is_available()
    with torch.no_grad(), precision.autocast():
        for piece in pieces:
            states.append((torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else None))
            outs.append(objective.embed(net, piece))
    image = torch.cat([o[0] for o in outs]).float().requires_grad_()
    text = torch.cat([o[1] for o in outs]).float().requires_grad_()
    # what follows the embeddings (the logit scale, a logit bias) is shared by the whole batch
    shared = [x.detach().float().requires_grad_() for x in outs[0][2:]]
    with precision.autocast():
        value = objective.loss((image, text, *shared), batch)
    precision.backward(value)
    sizes = [len(piece["image"]) for piece in pieces]
    grads = list(zip(image.grad.split(sizes), text.grad.split(sizes), strict=True))
    for i, (piece, state, (d_image, d_text)) in enumerate(zip(pieces, states, grads, strict=True)):
        last = i == len(pieces) - 1
        torch.set_rng_state(state[0])
        if cuda:
            torch.cuda.set_rng_state_all(state[1])
        sync = contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()
        with sync:
            with precision.autocast():
                out = objective.embed(net, piece)
            surrogate = (out[0].float() * d_image).sum() + (out[1].float() * d_text).sum()
            if last:  # the shared values' gradients flow once
                for own, leaf in zip(out[2:], shared, strict=True):
                    surrogate = surrogate + (own.float() * leaf.grad).sum()
            surrogate.backward()
    return value
