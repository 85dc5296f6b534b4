"""Manual weight inheritance (TinyCLIP, Wu et al. 2023): a smaller student starts from slices of
its teacher's weights instead of a random initialisation.

For every transformer tower the student takes teacher layers [0, k, 2k, …] (k = L_teacher //
L_student, or an explicit list), a subset of the residual (hidden) channels, and per layer a
subset of the attention heads (q, k and v sliced per head, separately) and of the MLP neurons.
``method="leading"`` keeps the leading slice of every width, as TinyCLIP does; ``"importance"``
keeps the heads, neurons and hidden channels that matter most on a calibration batch, scored by
activation magnitude or by first-order Taylor importance |activation · gradient| of the
teacher's own contrastive loss. Convolutional parts (conv stems, MobileCLIP-style hybrid towers,
Text-RepMixer blocks) inherit leading slices, layer by layer. An attention pool (SigLIP's,
PE-Core's) takes its leading heads, each head's leading channels and its leading MLP neurons at
the kept hidden channels. Rotary position embeddings (PE-Core's) turn each head's channels in
pairs by angles that depend on the head width, so a student with them keeps its teacher's
head width (and rotary layout): it may have fewer heads, neurons, layers and hidden channels.
A text tower inherits only from a teacher that reads text by the same tokenizer (a token id
names a different piece in CLIP's BPE and in a SigLIP SentencePiece model); ``towers`` leaves
a tower out, keeping its own initialisation.

Example:
    >>> report = inherit(teacher, student, method="importance", calibration=batch)  # doctest: +SKIP
    >>> report["visual"]["heads"][0]  # teacher heads kept in the student's first layer
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from compress.distill.losses import clip_loss
from compress.errors import UserError
from compress.models.attention import Attention, HeadGate
from compress.models.clip import CLIP
from compress.models.mobile import HybridVisionTower
from compress.models.towers import AttentionPool, ConvStem, TextTransformer, VisionTransformer

METHODS = ("leading", "importance")
SCORES = ("magnitude", "taylor")
TOWERS = ("image", "text")  # what ``inherit`` may initialise, by the recipe's names


class InheritError(UserError):
    """A teacher/student pair whose shapes or families do not allow inheritance."""


@dataclass
class TowerPlan:
    """Which teacher indices each part of a student tower takes."""

    hidden: torch.Tensor  # teacher residual channels kept, (student width,)
    layers: list[int]  # teacher block per student block
    heads: list[torch.Tensor] = field(default_factory=list)  # per student block
    neurons: list[torch.Tensor] = field(default_factory=list)  # per student block

    def summary(self) -> dict:
        return {
            "layers": self.layers,
            "hidden": self.hidden.tolist(),
            "heads": [h.tolist() for h in self.heads],
            "neurons": [len(n) for n in self.neurons],
        }


def every_kth(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher layers [0, k, 2k, …] with k = teacher_layers // student_layers."""
    k = teacher_layers // student_layers
    return [i * k for i in range(student_layers)]


def _check(ok: bool, tower: str, message: str) -> None:
    if not ok:
        raise InheritError(f"cannot inherit the {tower} tower: {message}")


def _widths(block: nn.Module) -> tuple[int, int, int]:
    """(heads, head width, MLP neurons) of a transformer block (0 for a pruned-away part)."""
    attn, mlp = block.attn, block.mlp
    return (
        attn.heads if attn is not None else 0,
        attn.head_dim if attn is not None else 0,
        mlp.fc.out_features if mlp is not None else 0,
    )


def _tower_width(tower: nn.Module) -> int:
    """The residual (hidden) width of a transformer tower (its final norm's: some have no
    output projection)."""
    final = tower.ln_post if isinstance(tower, VisionTransformer) else tower.ln_final
    return final.normalized_shape[0]


def _check_rope(teacher: VisionTransformer, student: VisionTransformer, tower: str) -> None:
    """Rotary tables are built for one head width and layout: a student keeps its teacher's."""
    ropes = student.rope, teacher.rope
    _check(
        (ropes[0] is None) == (ropes[1] is None),
        tower,
        "one has rotary position embeddings (rope), one not",
    )
    if ropes[0] is None:
        return
    (ds, dt), (ss, st) = (r.head_dim for r in ropes), (r.spec for r in ropes)
    _check(
        ds == dt,
        tower,
        f"student head_dim {ds} differs from the teacher's {dt}; "
        "rotary embeddings need one head width",
    )
    _check(ss == st, tower, f"the rotary embeddings differ: student {ss}, teacher {st}")


def _reads(model: CLIP) -> tuple[str, str | None]:
    """How a model turns text into token ids: (description, sha256 of its tokenizer file), or
    CLIP's BPE (no file); a model's own tokenizer comes from its record's ``text.tokenizer``."""
    own = model.own_tokenizer
    if own is None:
        return "CLIP's BPE", None
    spec = own.spec()
    return f"its own tokenizer file {spec['file']}", spec["sha256"]


def _check_tokenizers(teacher: CLIP, student: CLIP) -> None:
    """A token table, and every text layer behind it, means something only under the tokenizer
    it was trained with: a text tower inherits from a teacher that reads text alike."""
    (s_desc, s_sha), (t_desc, t_sha) = _reads(student), _reads(teacher)
    _check(
        s_sha == t_sha,
        "text",
        f"the teacher reads text by {t_desc}, the student by {s_desc}: their token ids name "
        "different pieces; inherit the image tower alone (towers: [image])",
    )


def _top(scores: torch.Tensor | None, k: int) -> torch.Tensor:
    """Indices of the k largest scores in ascending index order; the leading k without scores."""
    if scores is None:
        return torch.arange(k)
    return scores.topk(k).indices.sort().values


def plan_transformer(
    teacher: nn.Module,
    student: nn.Module,
    tower: str,
    layers: list[int] | None = None,
    scores: dict | None = None,
) -> TowerPlan:
    """The teacher indices a transformer student tower takes; checks that the pair fits."""
    _check(
        type(teacher) is type(student),
        tower,
        f"a {type(student).__name__} cannot inherit from a {type(teacher).__name__}",
    )
    width_t, width_s = _tower_width(teacher), _tower_width(student)
    _check(width_s <= width_t, tower, f"student width {width_s} > teacher width {width_t}")
    lt, ls = len(teacher.blocks), len(student.blocks)
    _check(ls <= lt, tower, f"student has {ls} layers, more than the teacher's {lt}")
    if isinstance(student, VisionTransformer):
        _check_rope(teacher, student, tower)
    layers = list(layers) if layers is not None else every_kth(lt, ls)
    _check(len(layers) == ls, tower, f"{len(layers)} teacher layers given for {ls} student layers")
    _check(all(0 <= i < lt for i in layers), tower, f"teacher layers {layers} outside 0..{lt - 1}")
    scores = scores or {}
    if len(getattr(student, "mixers", ())):  # convolutional mixers inherit leading channels
        scores = {**scores, "hidden": None}
    plan = TowerPlan(_top(scores.get("hidden"), width_s), layers)
    for i, (s_block, t_index) in enumerate(zip(student.blocks, layers, strict=True)):
        (hs, ds, ns), (ht, dt, nt) = _widths(s_block), _widths(teacher.blocks[t_index])
        _check(
            hs <= ht, tower, f"student layer {i} has {hs} heads, teacher layer {t_index} has {ht}"
        )
        _check(ds <= dt or hs == 0, tower, f"student head width {ds} > teacher head width {dt}")
        _check(
            ns <= nt,
            tower,
            f"student layer {i} has {ns} MLP neurons, teacher layer {t_index} has {nt}",
        )
        head_scores = scores.get("heads", {}).get(t_index)
        neuron_scores = scores.get("neurons", {}).get(t_index)
        plan.heads.append(_top(head_scores, hs))
        plan.neurons.append(_top(neuron_scores, ns))
    return plan


@torch.no_grad()
def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    if dst.shape != src.shape:
        raise InheritError(f"shape mismatch {tuple(src.shape)} → {tuple(dst.shape)}")
    dst.copy_(src)


def _leading(src: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return src[tuple(slice(0, n) for n in shape)]


def _copy_leading(dst_module: nn.Module, src_module: nn.Module, tower: str) -> None:
    """Leading slice of every parameter and buffer, matched by name (same structure, smaller)."""
    src = dict(src_module.state_dict())
    for name, dst in dst_module.state_dict().items():
        _check(name in src, tower, f"the teacher has no {name}")
        _check(
            all(d <= s for d, s in zip(dst.shape, src[name].shape, strict=True))
            and dst.ndim == src[name].ndim,
            tower,
            f"{name}: student {tuple(dst.shape)} is larger than teacher {tuple(src[name].shape)}",
        )
        _copy(dst, _leading(src[name], dst.shape))


def _copy_attention(
    dst: Attention, src: Attention, hidden: torch.Tensor, heads: torch.Tensor
) -> None:
    ds, dt = dst.head_dim, src.head_dim
    qkv_w = src.qkv.weight.reshape(3, src.heads, dt, -1)[:, heads, :ds][..., hidden]
    _copy(dst.qkv.weight, qkv_w.reshape(dst.qkv.weight.shape))
    if dst.qkv.bias is not None and src.qkv.bias is not None:
        _copy(dst.qkv.bias, src.qkv.bias.reshape(3, src.heads, dt)[:, heads, :ds].reshape(-1))
    out_w = src.out.weight[hidden].reshape(len(hidden), src.heads, dt)[:, heads, :ds]
    _copy(dst.out.weight, out_w.reshape(dst.out.weight.shape))
    _copy(dst.out.bias, src.out.bias[hidden])
    if dst.gate is not None and src.gate is not None and type(dst.gate) is type(src.gate):
        if isinstance(dst.gate, HeadGate):
            _copy(dst.gate.logit, src.gate.logit[heads])
        else:
            _copy(dst.gate.proj.weight, src.gate.proj.weight[heads][:, hidden])
            _copy(dst.gate.proj.bias, src.gate.proj.bias[heads])


def _copy_norm(dst: nn.LayerNorm, src: nn.LayerNorm, hidden: torch.Tensor) -> None:
    _copy(dst.weight, src.weight[hidden])
    _copy(dst.bias, src.bias[hidden])


def _copy_mlp(dst: nn.Module, src: nn.Module, hidden: torch.Tensor, neurons: torch.Tensor) -> None:
    _copy(dst.fc.weight, src.fc.weight[neurons][:, hidden])
    _copy(dst.fc.bias, src.fc.bias[neurons])
    _copy(dst.proj.weight, src.proj.weight[hidden][:, neurons])
    _copy(dst.proj.bias, src.proj.bias[hidden])


def _copy_pool(dst: AttentionPool, src: AttentionPool, hidden: torch.Tensor, tower: str) -> None:
    """An attention pool's leading heads, each head's leading channels and its leading MLP
    neurons, at the kept hidden channels."""
    (hs, ds, ms), (ht, dt, mt) = ((p.heads, p.head_dim, p.mlp.fc.out_features) for p in (dst, src))
    _check(
        hs <= ht and ds <= dt and ms <= mt,
        tower,
        f"the student's attention pool ({hs} heads of width {ds}, {ms} MLP neurons) is larger "
        f"than the teacher's ({ht} of {dt}, {mt})",
    )
    _copy(dst.latent, src.latent[..., hidden])
    q = src.q.weight.reshape(ht, dt, -1)[:hs, :ds][..., hidden]  # (heads, hd, |hidden|)
    _copy(dst.q.weight, q.reshape(dst.q.weight.shape))
    _copy(dst.q.bias, src.q.bias.reshape(ht, dt)[:hs, :ds].reshape(-1))
    kv = src.kv.weight.reshape(2, ht, dt, -1)[:, :hs, :ds][..., hidden]  # (2, heads, hd, |hidden|)
    _copy(dst.kv.weight, kv.reshape(dst.kv.weight.shape))
    _copy(dst.kv.bias, src.kv.bias.reshape(2, ht, dt)[:, :hs, :ds].reshape(-1))
    out = src.out.weight[hidden].reshape(len(hidden), ht, dt)[:, :hs, :ds]  # (|hidden|, heads, hd)
    _copy(dst.out.weight, out.reshape(dst.out.weight.shape))
    _copy(dst.out.bias, src.out.bias[hidden])
    _copy_norm(dst.ln, src.ln, hidden)
    _copy_mlp(dst.mlp, src.mlp, hidden, torch.arange(ms))


def _same(parts: list[bool], tower: str, message: str) -> bool:
    """Whether student and teacher both have a part; an error when only one has it."""
    _check(parts[0] == parts[1], tower, message)
    return parts[0]


def apply_transformer(teacher: nn.Module, student: nn.Module, plan: TowerPlan, tower: str) -> None:
    """Copy the planned teacher slices into a ViT or text transformer student tower."""
    hidden = plan.hidden
    with torch.no_grad():
        if isinstance(student, VisionTransformer):
            _check(
                student.seq_len == teacher.seq_len,
                tower,
                f"student sees {student.seq_len} tokens, teacher {teacher.seq_len} (image or patch size differ)",
            )
            _check(
                type(student.patch_embed) is type(teacher.patch_embed),
                tower,
                "the patch stems differ (patch vs conv)",
            )
            if isinstance(student.patch_embed, ConvStem):
                *convs, last = student.patch_embed.layers
                *t_convs, t_last = teacher.patch_embed.layers
                _copy_leading(nn.Sequential(*convs), nn.Sequential(*t_convs), tower)
                _copy(last.weight, t_last.weight[hidden][:, : last.weight.shape[1]])
                _copy(last.bias, t_last.bias[hidden])
            else:
                _check(
                    student.patch_embed.weight.shape[1:] == teacher.patch_embed.weight.shape[1:],
                    tower,
                    "patch sizes differ",
                )
                _copy(student.patch_embed.weight, teacher.patch_embed.weight[hidden])
                biases = [t.patch_embed.bias is not None for t in (student, teacher)]
                if _same(biases, tower, "one patch convolution has a bias, one not"):
                    _copy(student.patch_embed.bias, teacher.patch_embed.bias[hidden])
            tokens = [t.class_token is not None for t in (student, teacher)]
            if _same(tokens, tower, "one has a class token, one not"):
                _copy(student.class_token, teacher.class_token[hidden])
            _copy(student.pos_embed, teacher.pos_embed[:, hidden])
            pre_norms = [isinstance(t.ln_pre, nn.LayerNorm) for t in (student, teacher)]
            _check(pre_norms[0] == pre_norms[1], tower, "one has a pre-norm (ln_pre), one not")
            if pre_norms[0]:
                _copy_norm(student.ln_pre, teacher.ln_pre, hidden)
            _copy_norm(student.ln_post, teacher.ln_post, hidden)
            pools = [t.attn_pool is not None for t in (student, teacher)]
            if _same(pools, tower, "one pools by attention (pool: map), one by its class token"):
                _copy_pool(student.attn_pool, teacher.attn_pool, hidden, tower)
        else:
            ctx = student.pos_embed.shape[0]
            _check(ctx <= teacher.pos_embed.shape[0], tower, f"student context {ctx} > teacher's")
            _check(
                student.token_embed.num_embeddings == teacher.token_embed.num_embeddings,
                tower,
                "vocabularies differ",
            )
            _copy(student.token_embed.weight, teacher.token_embed.weight[:, hidden])
            _copy(student.pos_embed, teacher.pos_embed[:ctx][:, hidden])
            _copy_norm(student.ln_final, teacher.ln_final, hidden)
            _inherit_mixers(teacher, student, tower)
        projections = [isinstance(t.proj, nn.Linear) for t in (student, teacher)]
        if _same(projections, tower, "one has an output projection, one not"):
            embed = student.proj.weight.shape[0]
            _check(
                embed <= teacher.proj.weight.shape[0],
                tower,
                "student embedding wider than teacher's",
            )
            _copy(student.proj.weight, teacher.proj.weight[:embed][:, hidden])
            biases = [t.proj.bias is not None for t in (student, teacher)]
            if _same(biases, tower, "one projection has a bias, one not"):
                _copy(student.proj.bias, teacher.proj.bias[:embed])
        for block, t_index, heads, neurons in zip(
            student.blocks, plan.layers, plan.heads, plan.neurons, strict=True
        ):
            source = teacher.blocks[t_index]
            if block.attn is not None:
                _copy_norm(block.ln_1, source.ln_1, hidden)
                _copy_attention(block.attn, source.attn, hidden, heads)
            if block.mlp is not None:
                _copy_norm(block.ln_2, source.ln_2, hidden)
                _copy_mlp(block.mlp, source.mlp, hidden, neurons)


def _inherit_mixers(teacher: TextTransformer, student: TextTransformer, tower: str) -> None:
    """Text-RepMixer blocks: every k-th teacher mixer, leading channel slices (hidden must be leading)."""
    ls, lt = len(student.mixers), len(teacher.mixers)
    _check(ls <= lt, tower, f"student has {ls} convolutional mixer blocks, teacher {lt}")
    for block, t_index in zip(student.mixers, every_kth(lt, ls) if ls else [], strict=True):
        _copy_leading(block, teacher.mixers[t_index], tower)


def _inherit_hybrid(teacher: HybridVisionTower, student: HybridVisionTower, tower: str) -> dict:
    """MCi towers: stem and final convolution by leading slices; every k-th block within each stage."""
    _check(
        len(student.stages) == len(teacher.stages),
        tower,
        "the towers have different numbers of stages",
    )
    _copy_leading(student.stem, teacher.stem, tower)
    kept = []
    for i, (s_stage, t_stage) in enumerate(zip(student.stages, teacher.stages, strict=True)):
        _copy_leading(s_stage.downsample, t_stage.downsample, tower)
        _copy_leading(s_stage.pos_embed, t_stage.pos_embed, tower)
        ls, lt = len(s_stage.blocks), len(t_stage.blocks)
        _check(ls <= lt, tower, f"stage {i}: student has {ls} blocks, teacher {lt}")
        chosen = every_kth(lt, ls)
        for block, t_index in zip(s_stage.blocks, chosen, strict=True):
            source = t_stage.blocks[t_index]
            if hasattr(block, "attn"):
                _check(block.attn.head_dim == source.attn.head_dim, tower, "head widths differ")
                heads = torch.arange(block.attn.heads)
                hidden = torch.arange(block.norm.num_features)
                _copy_attention(block.attn, source.attn, hidden, heads)
                rest = {k: v for k, v in block.named_children() if k != "attn"}
                for name, child in rest.items():
                    _copy_leading(child, getattr(source, name), tower)
                for name in ("layer_scale_1", "layer_scale_2"):
                    _copy(
                        getattr(block, name), getattr(source, name)[: getattr(block, name).shape[0]]
                    )
            else:
                _copy_leading(block, source, tower)
        kept.append(chosen)
    _copy_leading(student.final_conv, teacher.final_conv, tower)
    _copy(student.proj.weight, _leading(teacher.proj.weight, student.proj.weight.shape))
    _copy(student.proj.bias, teacher.proj.bias[: student.proj.bias.shape[0]])
    return {"stage_blocks": kept, "method": "leading (convolutional tower)"}


def importance_scores(model: CLIP, batch: dict, score: str = "magnitude") -> dict[str, dict]:
    """Per transformer tower: importance of hidden channels, and of heads and neurons per layer.

    ``magnitude``: mean |activation| of each head's output, each neuron's activation and each
    hidden channel of every block's output, over the batch. ``taylor``: |Σ activation·gradient|
    of the model's own CLIP loss on the batch (first-order estimate of the loss change when
    the unit is removed), accumulated the same way.
    """
    if score not in SCORES:
        raise ValueError(
            f"unknown importance score {score!r}; expected one of: {', '.join(SCORES)}"
        )
    towers = {
        name: tower
        for name, tower in (("visual", model.visual), ("text", model.text))
        if isinstance(tower, (VisionTransformer, TextTransformer))
    }
    records: dict[tuple[str, str, int], torch.Tensor] = {}
    handles = []

    def keep(key):
        def hook(module, args, output=None):
            value = args[0] if output is None else output
            if score == "taylor":
                value.retain_grad()
            records[key] = value

        return hook

    for name, tower in towers.items():
        for i, block in enumerate(tower.blocks):
            if block.attn is not None:
                handles.append(block.attn.out.register_forward_pre_hook(keep((name, "heads", i))))
            if block.mlp is not None:
                handles.append(block.mlp.proj.register_forward_pre_hook(keep((name, "neurons", i))))
            handles.append(block.register_forward_hook(keep((name, "hidden", i))))
    was_training = model.training
    model.eval()
    try:
        with torch.set_grad_enabled(score == "taylor"):
            image, text, scale = model(_at_size(batch["image"], model.visual), batch["text"])
            if score == "taylor":
                model.zero_grad(set_to_none=True)
                clip_loss(image, text, scale).backward()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    def unit_scores(value: torch.Tensor) -> torch.Tensor:  # (B, T, C) → (C,)
        value = value.detach() * value.grad if score == "taylor" else value.detach()
        flat = value.reshape(-1, value.shape[-1])
        return flat.sum(0).abs() if score == "taylor" else flat.abs().mean(0)

    out: dict[str, dict] = {name: {"heads": {}, "neurons": {}, "hidden": None} for name in towers}
    for (name, kind, i), value in records.items():
        if kind == "hidden":
            s = unit_scores(value)
            prev = out[name]["hidden"]
            out[name]["hidden"] = s if prev is None else prev + s
        elif kind == "heads":
            attn = towers[name].blocks[i].attn
            per_channel = unit_scores(value).reshape(attn.heads, attn.head_dim)
            out[name]["heads"][i] = per_channel.sum(-1)
        else:
            out[name]["neurons"][i] = unit_scores(value)
    return out


def _at_size(images: torch.Tensor, tower: nn.Module) -> torch.Tensor:
    """The calibration pictures (the student's data, at its size) resized to the size ``tower``
    takes, e.g. a 384-px student's batch for a 336-px teacher (bicubic, as the data is)."""
    size = getattr(tower, "image_size", None)
    if size is None or images.shape[-2:] == (size, size):
        return images
    return nn.functional.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)


def inherit(
    teacher: CLIP,
    student: CLIP,
    *,
    method: str = "leading",
    towers: tuple[str, ...] = TOWERS,
    image_layers: list[int] | None = None,
    text_layers: list[int] | None = None,
    calibration: dict | None = None,
    score: str = "magnitude",
) -> dict:
    """Initialise ``student`` in place from ``teacher``; returns what each tower kept.

    Args:
        method: ``"leading"`` (TinyCLIP's slices) or ``"importance"`` (needs ``calibration``).
        towers: which towers inherit (``"image"``, ``"text"``); the others keep the student's
            own initialisation, and their entry in the report is None.
        image_layers, text_layers: teacher blocks for the student's blocks; every k-th if None.
        calibration: a batch (``image``, ``text``) to score importance on.
        score: ``"magnitude"`` or ``"taylor"``.

    The logit scale (and bias) carry over where both models' logits are of one kind, softmax or
    sigmoid (a bias); a sigmoid student of a softmax teacher keeps its own start.

    Raises:
        InheritError: a student wider or deeper than its teacher, towers of different families,
            or a text tower whose teacher reads text by another tokenizer.
    """
    if method not in METHODS:
        raise ValueError(
            f"unknown inheritance method {method!r}; expected one of: {', '.join(METHODS)}"
        )
    unknown = sorted(set(towers) - set(TOWERS))
    if unknown:
        raise ValueError(f"unknown towers {unknown}; expected some of: {', '.join(TOWERS)}")
    if "text" in towers:  # before importance scoring runs the teacher
        _check_tokenizers(teacher, student)
    scores = {}
    if method == "importance":
        if calibration is None:
            raise ValueError("importance inheritance needs a calibration batch")
        scores = importance_scores(teacher, calibration, score)
    report = {"method": method, "score": score if method == "importance" else None}
    layers = {"visual": image_layers, "text": text_layers}
    for name in ("visual", "text"):
        t_tower, s_tower = getattr(teacher, name), getattr(student, name)
        label = "image" if name == "visual" else "text"
        if label not in towers:
            report[name] = None  # its own initialisation
            continue
        if isinstance(s_tower, HybridVisionTower) or isinstance(t_tower, HybridVisionTower):
            _check(
                type(s_tower) is type(t_tower),
                label,
                f"a {type(s_tower).__name__} cannot inherit from a {type(t_tower).__name__}",
            )
            with torch.no_grad():
                report[name] = _inherit_hybrid(t_tower, s_tower, label)
            continue
        plan = plan_transformer(t_tower, s_tower, label, layers[name], scores.get(name))
        apply_transformer(t_tower, s_tower, plan, label)
        report[name] = plan.summary()
    if (student.logit_bias is None) == (teacher.logit_bias is None):
        with torch.no_grad():  # logits of one kind (softmax, or sigmoid with a bias) carry over
            student.logit_scale.copy_(teacher.logit_scale)
            if student.logit_bias is not None:
                student.logit_bias.copy_(teacher.logit_bias)
    return report
