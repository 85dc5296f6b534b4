"""open_clip's timm ViT image towers with attention pooling (SigLIP's) as our
:class:`~compress.models.towers.VisionTransformer`: the shape and options are read off timm's own
model, built on the meta device (no memory, no weights), since the names do not say which towers
use tanh GELU or which shapes; anything our tower would compute differently is named in one line."""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

from compress.compat import open_clip
from compress.errors import first_line


@cache
def timm_trunk(name: str) -> nn.Module | str:
    """timm's model ``name`` as open_clip builds it for a ``map`` pool (no head), on the meta
    device (no memory, no weights), or the reason it cannot be built."""
    open_clip()  # imports torchvision beside a CPU torch before timm does
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, num_classes=0, global_pool="map")
    except Exception as err:  # unknown names and arguments the model does not take
        return f"timm cannot build {name} ({first_line(err)})"


def map_vit_config(v: dict) -> dict | str:
    """Our vision config for a timm ViT with attention pooling and no projection (SigLIP), or
    the reason there is none."""
    name = v["timm_model_name"]
    if v.get("timm_proj") != "none":  # checked first: it needs no timm model
        return f"timm image tower {name} with attention pooling and a projection"
    trunk = timm_trunk(name)
    if isinstance(trunk, str):
        return trunk
    why = _map_vit_departure(trunk)
    if why:
        return f"timm image tower {name}: {why}"
    config = trunk_config(trunk, v, name)
    return config if isinstance(config, str) else {**config, "class_token": False, "proj": False}


def trunk_config(trunk: nn.Module, v: dict, name: str) -> dict | str:
    """The vision config keys a timm ViT-like trunk with attention pooling sets the same way for
    SigLIP's towers and PE-Core's (shape, activation, norms, patch bias), or the reason ``v``'s
    image size does not fit it."""
    block, width = trunk.blocks[0], trunk.embed_dim
    size, patch = trunk.patch_embed.img_size, trunk.patch_embed.patch_size
    if v.get("image_size", size[0]) not in (size[0], list(size), tuple(size)):
        return f"image_size {v['image_size']} where timm's {name} takes {size[0]}"
    return {
        "family": "vit",
        "image_size": size[0],
        "patch_size": patch[0],
        "width": width,
        "layers": len(trunk.blocks),
        "heads": block.attn.num_heads,
        "mlp_ratio": block.mlp.fc1.out_features / width,
        "act": timm_act(block.mlp.act),
        "ln_pre": not isinstance(trunk.norm_pre, nn.Identity),
        "ln_eps": trunk.norm.eps,
        "patch_bias": trunk.patch_embed.proj.bias is not None,
        "pool": "map",
    }


def timm_act(act: nn.Module) -> str | None:
    """Our name for a timm MLP activation, None for one we do not have."""
    approximate = getattr(act, "approximate", None)
    if type(act).__name__ == "GELUTanh" or (isinstance(act, nn.GELU) and approximate == "tanh"):
        return "gelu_tanh"
    return "gelu" if type(act) is nn.GELU and approximate == "none" else None


def _map_vit_departure(trunk: nn.Module) -> str | None:
    """The first part of a timm ViT with attention pooling that our VisionTransformer (no class
    token, ``pool: map``, no projection) does not compute the same way, or None."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    if not isinstance(trunk, TimmViT):
        return f"{type(trunk).__name__}, not timm's VisionTransformer"
    why = trunk_departure(trunk) or _blocks_departure(trunk)  # first: below reads block 0's MLP
    if why:
        return why
    block, width = trunk.blocks[0], trunk.embed_dim
    hidden = block.mlp.fc1.out_features
    checks = [
        (trunk.cls_token is not None, "a class token"),
        (timm_act(block.mlp.act) is None, f"activation {type(block.mlp.act).__name__}"),
        (int(width * (hidden / width)) != hidden, f"MLP width {hidden}"),
    ]
    for failed, why in checks:
        if failed:
            return why
    return _pool_departure(trunk.attn_pool, block, trunk.norm.eps)


def trunk_departure(trunk: nn.Module) -> str | None:
    """The first part of a timm ViT's (or Eva's) patch embedding, tokens, position table and
    norms that our VisionTransformer does not compute the same way, or None."""
    from timm.layers import PatchEmbed

    if not isinstance(trunk.norm, nn.LayerNorm):  # every eps below is compared with this one's
        return "no layer norm before the pool"
    size, patch = trunk.patch_embed.img_size, trunk.patch_embed.patch_size
    checks = [
        (trunk.reg_token is not None, "register tokens"),
        (trunk.pos_embed is None or trunk.dynamic_img_size, "no fixed position table"),
        (type(trunk.patch_embed) is not PatchEmbed, "a custom patch embedding"),
        (not isinstance(trunk.patch_embed.norm, nn.Identity), "a norm in the patch embedding"),
        (size[0] != size[1] or patch[0] != patch[1], "non-square images or patches"),
        (size[0] % patch[0], f"image size {size[0]} not a multiple of the patch size {patch[0]}"),
        (not isinstance(trunk.fc_norm, nn.Identity), "a norm after the pool"),
        (getattr(trunk.norm_pre, "eps", trunk.norm.eps) != trunk.norm.eps, "ln_pre's eps"),
    ]
    return next((why for failed, why in checks if failed), None)


def _plain_block(block: nn.Module) -> bool | str:
    """True for a timm pre-norm block our :class:`Block` computes (biased qkv, no layer scale,
    no q/k or inner norms, a two-layer MLP), else what differs."""
    from timm.layers import Mlp
    from timm.models.vision_transformer import Block as TimmBlock

    if type(block) is not TimmBlock or type(block.mlp) is not Mlp:
        return f"block {type(block).__name__} with MLP {type(block.mlp).__name__}"
    plain = [block.ls1, block.ls2, block.attn.q_norm, block.attn.k_norm, block.mlp.norm]
    plain.append(getattr(block.attn, "norm", nn.Identity()))
    if not all(isinstance(m, nn.Identity) for m in plain):
        return "layer scale or extra norms in the blocks"
    if block.attn.qkv.bias is None:
        return "a qkv projection without bias"
    return True


def _blocks_departure(trunk: nn.Module) -> str | None:
    """What differs between a timm ViT's blocks (shapes, norms, activations), or None."""
    shapes = []
    for i, block in enumerate(trunk.blocks):
        plain = _plain_block(block)
        if plain is not True:
            return f"block {i}: {plain}"
        shapes.append((block.attn.num_heads, block.mlp.fc1.out_features, type(block.mlp.act)))
        if shapes[i] != shapes[0]:
            return f"block {i} is shaped differently from block 0"
        if {block.norm1.eps, block.norm2.eps} != {trunk.norm.eps}:
            return f"block {i}'s layer norms have another eps"
    return None


def _pool_departure(pool: nn.Module, block: nn.Module, eps: float) -> str | None:
    """What a timm latent attention pool does that our :class:`AttentionPool`, shaped like the
    blocks, does not, or None."""
    why = latent_pool_departure(pool, block.mlp.act, eps)
    if why:
        return why
    if (pool.num_heads, pool.mlp.fc1.out_features) != (
        block.attn.num_heads,
        block.mlp.fc1.out_features,
    ):
        return "an attention pool with other heads or MLP width than its blocks"
    return None


def latent_pool_departure(pool: nn.Module, act: nn.Module, eps: float) -> str | None:
    """What a timm latent attention pool computes that our :class:`AttentionPool` (one latent
    query, no position table, no q/k norms, a residual MLP with activation ``act``) does not."""
    from timm.layers import AttentionPoolLatent

    if not isinstance(pool, AttentionPoolLatent):
        return "not timm's latent attention pool"
    same = (
        pool.latent_len == 1
        and pool.pos_embed is None
        and isinstance(pool.q, nn.Linear)
        and isinstance(pool.q_norm, nn.Identity)
        and isinstance(pool.k_norm, nn.Identity)
        and pool.mlp is not None
        and pool.pool == "token"
        and type(pool.mlp.act) is type(act)
        and timm_act(pool.mlp.act) == timm_act(act)
        and getattr(pool.norm, "eps", None) == eps
    )
    return None if same else "an attention pool with several latents, extra norms or another MLP"
