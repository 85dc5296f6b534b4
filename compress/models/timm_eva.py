"""open_clip's PE-Core image towers (the Perception Encoder, Bolya et al. 2025: timm's ``Eva`` with
2-D rotary position embeddings) as our :class:`~compress.models.towers.VisionTransformer`.

As for SigLIP's towers (:mod:`compress.models.timm_vit`), the shape and options are read off
timm's own model, built on the meta device; anything our tower would compute differently is named
in one line. PE-Core's layout: a class token and a position table with a row for it, a layer norm
before the blocks (and a patch convolution without bias), rotary embeddings in every attention
that leave the class token unturned, attention pooling with its own heads and MLP ratio, and
timm's biased linear head as the projection to the embedding.
"""

from __future__ import annotations

from torch import nn

from compress.models.timm_vit import (
    latent_pool_departure,
    timm_act,
    timm_trunk,
    trunk_config,
    trunk_departure,
)


def is_eva(name: str) -> bool:
    """Whether timm's model ``name`` is an ``Eva`` (PE-Core's trunks are)."""
    trunk = timm_trunk(name)  # first: it imports timm after open_clip, as timm must be
    from timm.models.eva import Eva

    return isinstance(trunk, Eva)


def eva_config(v: dict) -> dict | str:
    """Our vision config for an open_clip vision_cfg with a timm ``Eva`` trunk, attention pooling
    and timm's own head as the projection (PE-Core), or the reason there is none."""
    name = v["timm_model_name"]
    proj = v.get("timm_proj", "linear")  # open_clip's default: its own projection after the trunk
    if proj:  # PE-Core's null (or ""): timm's head is the projection
        return f"timm image tower {name} with timm_proj {proj!r}"
    trunk = timm_trunk(name)
    why = _eva_departure(trunk)
    if why:
        return f"timm image tower {name}: {why}"
    config = trunk_config(trunk, v, name)
    if isinstance(config, str):
        return config
    pool = trunk.attn_pool
    config |= {
        "class_token": trunk.cls_token is not None,
        "pool_heads": pool.num_heads,
        "pool_mlp_ratio": pool.mlp.fc1.out_features / trunk.embed_dim,
        "proj_bias": True,  # timm's head: nn.Linear(width, embed_dim), biased
    }
    if trunk.rope is not None:
        config["rope"] = _rope_config(trunk.rope)
    return config


def _rope_config(rope: nn.Module) -> dict:
    """Our :class:`~compress.models.rope.Rotary2d` options for timm's rotary embedding."""
    options = {"offset": float(rope.grid_offset), "temperature": float(rope.temperature)}
    if rope.ref_feat_shape is not None:
        options["ref_grid"] = int(rope.ref_feat_shape[0])
    return options


def _eva_departure(trunk: nn.Module) -> str | None:
    """The first part of a timm ``Eva`` that our VisionTransformer (``pool: map``, a biased
    projection, optional :class:`Rotary2d`) does not compute the same way, or None."""
    from timm.models.eva import Eva

    if not isinstance(trunk, Eva):
        return f"{type(trunk).__name__}, not timm's Eva"
    # in this order: the later checks read block 0 and the pool
    why = trunk_departure(trunk) or _eva_blocks_departure(trunk) or _rope_departure(trunk)
    if why:
        return why
    if trunk.attn_pool is None:
        return f"pool {trunk.global_pool!r}, not attention pooling"
    block, width = trunk.blocks[0], trunk.embed_dim
    why = latent_pool_departure(trunk.attn_pool, block.mlp.act, trunk.norm.eps)
    if why:
        return why
    for what, layer in (("MLP", block.mlp), ("attention pool MLP", trunk.attn_pool.mlp)):
        hidden = layer.fc1.out_features  # our towers size an MLP as int(width · ratio)
        if int(width * (hidden / width)) != hidden:
            return f"{what} width {hidden}"
    return None


def _eva_blocks_departure(trunk: nn.Module) -> str | None:
    """What differs between an Eva's blocks and our :class:`Block` (pre-norm, fused biased qkv
    with a biased output projection, no layer scale, no q/k, inner or gate norms, a two-layer
    MLP with exact or tanh GELU, one shape and one eps throughout), or None."""
    from timm.layers import AttentionRope, Mlp
    from timm.models.eva import EvaBlock

    shapes = []
    for i, block in enumerate(trunk.blocks):
        attn = block.attn
        if type(block) is not EvaBlock or type(attn) is not AttentionRope:
            return f"block {i}: {type(block).__name__} with {type(attn).__name__}"
        if type(block.mlp) is not Mlp or not isinstance(block.mlp.norm, nn.Identity):
            return f"block {i}: MLP {type(block.mlp).__name__} (SwiGLU or a norm inside)"
        plain = [attn.q_norm, attn.k_norm, attn.norm]
        if not all(isinstance(m, nn.Identity) for m in plain) or attn.gate is not None:
            return f"block {i}: q/k, inner norms or a gate in the attention"
        if block.gamma_1 is not None or block.gamma_2 is not None:
            return f"block {i}: layer scale"
        if attn.qkv is None or attn.qkv.bias is None or attn.proj.bias is None:
            return f"block {i}: separate or unbiased q, k, v or output projections"
        if timm_act(block.mlp.act) is None:
            return f"block {i}: activation {type(block.mlp.act).__name__}"
        shapes.append((attn.num_heads, attn.head_dim, block.mlp.fc1.out_features))
        if shapes[i] != shapes[0] or type(block.mlp.act) is not type(trunk.blocks[0].mlp.act):
            return f"block {i} is shaped differently from block 0"
        if {block.norm1.eps, block.norm2.eps} != {trunk.norm.eps}:
            return f"block {i}'s layer norms have another eps"
        if attn.head_dim * attn.num_heads != trunk.embed_dim:
            return f"block {i}: heads × head width is not the width"
    return None


def _rope_departure(trunk: nn.Module) -> str | None:
    """What an Eva's rotary embedding does that :class:`Rotary2d` does not (its layout: index
    positions on the fixed grid, x's pairs first, adjacent channels paired), or None."""
    from timm.layers import RotaryEmbeddingCat

    rope, grid = trunk.rope, tuple(trunk.patch_embed.grid_size)
    if rope is None:
        return None
    if type(rope) is not RotaryEmbeddingCat or trunk.rope_mixed:
        return f"rotary embedding {type(rope).__name__}"
    ref = tuple(rope.ref_feat_shape) if rope.ref_feat_shape is not None else None
    checks = [
        (rope.in_pixels or rope.grid_type != "index", "rotary positions in pixels"),
        (rope.grid_indexing != "xy", f"rope_grid_indexing {rope.grid_indexing!r}"),
        (rope.rotate_half, "rope_rotate_half (channels paired across halves)"),
        (rope.aug_active, "rotary coordinate augmentation"),
        (tuple(rope.feat_shape or ()) != grid, "rotary embeddings for another grid"),
        (ref is not None and ref[0] != ref[1], f"non-square ref_feat_shape {ref}"),
        (rope.dim != trunk.blocks[0].attn.head_dim, "rotary width is not the head width"),
    ]
    return next((why for failed, why in checks if failed), None)
