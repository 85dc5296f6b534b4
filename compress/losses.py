"""Training losses, chosen by name in the recipe: the CLIP contrastive loss (Radford et al. 2021)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from compress.registry import Registry

losses = Registry("loss")


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows (rank order) so similarities span the global batch.

    The gather is differentiable: each rank's gradient flows back to the rows it produced.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


@losses.register("clip")
def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """L = ½[CE(s·I·Tᵀ, diag) + CE(s·T·Iᵀ, diag)] over the global batch."""
    image_emb, text_emb = gather(image_emb), gather(text_emb)
    logits = scale * image_emb @ text_emb.T  # (B, B)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
