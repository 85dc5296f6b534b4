"""Automatic weight inheritance: L0 masks, a Lagrangian sparsity target, pruning (TinyCLIP, Wu et al. 2023).

Hard-concrete gates (Louizos et al. 2018), grouped as in CoFi (Xia et al. 2022), mask each
transformer tower's attention heads (per layer), MLP neurons (per layer), hidden (residual)
width (one mask per tower) and whole layers. They act on an unmodified
:class:`~compress.models.clip.CLIP` through forward hooks; a Lagrangian term drives the expected
sparsity to a target that ramps up over training; :meth:`AutoInheritance.prune`
then builds the smaller model, with the kept fractional mask values folded into its weights, so
that it computes exactly what the masked model computes in eval mode.

An attention pool (SigLIP's, PE-Core's ``pool: map``) reads the kept hidden channels and writes
only those, keeping its heads, their width and its MLP; rotary position embeddings (PE-Core's)
stay as they are, since heads are pruned whole and keep their width. A tower without an output
projection (SigLIP's image tower) emits its width as the embedding, so its width is not masked.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from compress.models import build_from_config, count_params
from compress.models.attention import HeadGate
from compress.models.clip import CLIP
from compress.models.towers import (
    AttentionPool,
    ConvStem,
    QuickGELU,
    TextTransformer,
    VisionTransformer,
)

# hard-concrete temperature and stretch interval (Louizos et al. 2018)
BETA, GAMMA, ZETA = 2 / 3, -0.1, 1.1
# log α at the start: P(z ≠ 0) = σ(5 + 1.6) ≈ 0.9986 and z_det = 1, so masks start on (a group
# of n keeps round(0.9986·n): all of up to 367 entries, 767 of 768, 3068 of 3072)
LOG_ALPHA_INIT = 5.0
# a kept entry whose deterministic z would clamp to 0 (rare: its group's log α's are all small)
# keeps this tiny value instead, so a group always keeps exactly round(Σ P(z ≠ 0)) entries
KEEP_FLOOR = 1e-3
# Adam learning rates × ramp length (measured on tiny and demo_teacher): log α may travel ~15 over
# the ramp, to track the target with headroom (also under a decaying schedule), and the λ's move
# ten times faster, so the controller answers before the masks overshoot
MASK_LR_X_RAMP, LAMBDA_LR_X_RAMP, MIN_RAMP = 15.0, 150.0, 100
TOWERS = ("visual", "text")


class HardConcrete(nn.Module):
    """``n`` hard-concrete gates z ∈ [0, 1] with learnable log α; exact zeros have nonzero probability.

    Training samples: s = σ((log u − log(1 − u) + log α)/β), z = clamp(s·(ζ − γ) + γ, 0, 1).
    Deterministic (eval) gates: z = clamp(σ(log α)·(ζ − γ) + γ, 0, 1) on the round(Σ P(z ≠ 0))
    entries with the largest log α (at least ``KEEP_FLOOR``), 0 elsewhere.
    """

    def __init__(self, n: int, min_keep: int = 0) -> None:
        super().__init__()
        self.n, self.min_keep = n, min_keep
        self.log_alpha = nn.Parameter(torch.full((n,), LOG_ALPHA_INIT))

    def keep_prob(self) -> torch.Tensor:
        """P(z ≠ 0) per entry, differentiable in log α."""
        return torch.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA))

    def sample(self) -> torch.Tensor:
        u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / BETA)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def deterministic(self) -> torch.Tensor:
        z = (torch.sigmoid(self.log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
        k = max(round(self.keep_prob().sum().item()), min(self.min_keep, self.n))
        keep = torch.zeros(self.n, dtype=torch.bool, device=z.device)
        keep[self.log_alpha.argsort(descending=True, stable=True)[:k]] = True
        return torch.where(keep, z.clamp(min=KEEP_FLOOR), torch.zeros_like(z))

    def forward(self) -> torch.Tensor:
        return self.sample() if self.training else self.deterministic()

    def extra_repr(self) -> str:
        return f"n={self.n}"


class _GradReverse(torch.autograd.Function):
    """Identity forward, negated gradient backward: the λ's ascend while everything else descends."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def masked_layer_norm(ln: nn.LayerNorm, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """LayerNorm whose mean and variance run over the kept channels only (``keep`` is 0/1, (width,));
    dropped channels come out 0, so the result equals a LayerNorm over the kept channels alone."""
    n = keep.sum().clamp(min=1.0)
    mean = (x * keep).sum(-1, keepdim=True) / n
    centred = (x - mean) * keep
    var = centred.square().sum(-1, keepdim=True) / n
    y = centred * torch.rsqrt(var + ln.eps)
    if ln.weight is not None:
        y = y * ln.weight
    if ln.bias is not None:
        y = y + ln.bias
    return y * keep


def _check_tower(name: str, tower: nn.Module) -> None:
    ok = isinstance(tower, VisionTransformer) or (
        isinstance(tower, TextTransformer) and len(tower.mixers) == 0
    )
    if not ok:
        kind = type(tower).__name__
        kind += " with mixer blocks" if isinstance(tower, TextTransformer) else ""
        raise ValueError(
            f"auto inheritance supports transformer towers only; model.{name} is a {kind}"
        )
    for i, block in enumerate(tower.blocks):
        gate = block.attn.gate if block.attn is not None else None
        if gate is not None and not isinstance(gate, HeadGate) and not hasattr(gate, "proj"):
            raise ValueError(f"model.{name}.blocks[{i}]: unsupported gate {type(gate).__name__}")


def _width(tower: nn.Module) -> int:
    """The residual width (the final norm's: not every tower has an output projection)."""
    final = tower.ln_post if isinstance(tower, VisionTransformer) else tower.ln_final
    return final.normalized_shape[0]


def _embed_dim(tower: nn.Module) -> int:
    return tower.proj.out_features if isinstance(tower.proj, nn.Linear) else _width(tower)


def _pool_by_width(pool: AttentionPool | None) -> list[torch.Tensor]:
    """The attention pool's tensors with one hidden-width dimension (the rest stay whole)."""
    if pool is None:
        return []
    mlp = pool.mlp
    return [
        pool.latent,
        pool.q.weight,
        pool.kv.weight,
        pool.out.weight,
        pool.out.bias,
        *pool.ln.parameters(),
        mlp.fc.weight,
        mlp.proj.weight,
        mlp.proj.bias,
    ]


def _numel(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() for t in tensors if t is not None)


class TowerMasks(nn.Module):
    """The masks of one transformer tower, its expected parameter count, and the hooks that apply them."""

    def __init__(self, tower: nn.Module, prune_hidden: bool) -> None:
        super().__init__()
        self.vision = isinstance(tower, VisionTransformer)
        self.width = _width(tower)
        prune_hidden = prune_hidden and isinstance(tower.proj, nn.Linear)  # else width = embedding
        self.hidden = HardConcrete(self.width, min_keep=1) if prune_hidden else None
        self.layers = HardConcrete(len(tower.blocks))
        self.heads = nn.ModuleList(
            HardConcrete(b.attn.heads if b.attn is not None else 0) for b in tower.blocks
        )
        self.neurons = nn.ModuleList(
            HardConcrete(b.mlp.fc.out_features if b.mlp is not None else 0) for b in tower.blocks
        )
        self.head_dims = [b.attn.head_dim if b.attn is not None else 0 for b in tower.blocks]
        self._costs(tower)
        ones = self._params(lambda g: torch.ones(g.n, dtype=torch.float64))
        # what no mask touches, e.g. the conv stem's first layers
        self.constant = count_params(tower) - round(ones.item())
        self._z: dict | None = None
        self._handles: list = []

    def _costs(self, tower: nn.Module) -> None:
        """Parameter counts per hidden channel, per head and per neuron, read off the modules."""
        d = self.width
        if self.vision:
            stem = tower.patch_embed
            stem = stem.layers[-1] if isinstance(stem, ConvStem) else stem  # writes the width
            embeds = [*stem.parameters(), tower.class_token, tower.pos_embed]
            final = [
                *tower.ln_pre.parameters(),
                *tower.ln_post.parameters(),
                *_pool_by_width(tower.attn_pool),
            ]
        else:
            embeds = [tower.token_embed.weight, tower.pos_embed]
            final = [*tower.ln_final.parameters()]
        proj = getattr(tower.proj, "weight", None)
        self.per_channel = _numel(*embeds, *final, proj) // d
        self.attn_cost, self.mlp_cost = [], []
        for block in tower.blocks:
            attn, mlp = block.attn, block.mlp
            if attn is not None:
                gate, gate_w, gate_b = attn.gate, None, None
                if isinstance(gate, HeadGate):
                    gate_b = gate.logit  # (heads,)
                elif gate is not None:
                    gate_w, gate_b = gate.proj.weight, gate.proj.bias  # (heads, dim), (heads,)
                h = attn.heads
                self.attn_cost.append(
                    (
                        _numel(attn.qkv.weight, attn.out.weight, gate_w)
                        // (h * d),  # per head·channel
                        _numel(attn.qkv.bias, gate_b) // h,  # per head
                        _numel(attn.out.bias, *block.ln_1.parameters()) // d,  # per channel
                    )
                )
            else:
                self.attn_cost.append(None)
            if mlp is not None:
                m = mlp.fc.out_features
                self.mlp_cost.append(
                    (
                        _numel(mlp.fc.weight, mlp.proj.weight) // (m * d),
                        _numel(mlp.fc.bias) // m,
                        _numel(mlp.proj.bias, *block.ln_2.parameters()) // d,
                    )
                )
            else:
                self.mlp_cost.append(None)

    def _params(self, keep: Callable[[HardConcrete], torch.Tensor]) -> torch.Tensor:
        """Parameter count of the pruned tower as a function of per-entry keep probabilities
        (independent masks: expectations of products are products of expectations)."""
        d = keep(self.hidden).sum() if self.hidden is not None else torch.tensor(float(self.width))
        d = d.double()
        layer = keep(self.layers).double()
        total = self.per_channel * d
        for i, (heads, neurons) in enumerate(zip(self.heads, self.neurons, strict=True)):
            for group, cost in ((heads, self.attn_cost[i]), (neurons, self.mlp_cost[i])):
                if cost is None:
                    continue
                p = keep(group).double()
                count, exists = p.sum(), 1 - (1 - p).prod()  # E[kept], P(any kept)
                per_both, per_unit, per_channel = cost
                total = total + layer[i] * (
                    per_both * count * d + per_unit * count + per_channel * exists * d
                )
        return total

    def expected_params(self, masks: str = "expected") -> torch.Tensor:
        keep = {
            "expected": lambda g: g.keep_prob(),
            "ones": lambda g: torch.ones(g.n, dtype=torch.float64),
            "deterministic": lambda g: (g.deterministic() > 0).double(),
        }[masks]
        return self._params(keep) + self.constant

    def draw(self) -> dict:
        """One set of masks: sampled in training mode, deterministic in eval mode."""
        z_layer = self.layers()
        z_heads = [g() for g in self.heads]
        z_neurons = [g() for g in self.neurons]
        hidden = self.hidden() if self.hidden is not None else None
        return {
            "hidden": hidden,
            "kept": (hidden > 0).to(hidden.dtype) if hidden is not None else None,
            "heads": z_heads,
            "neurons": z_neurons,
            # a sub-layer whose heads (neurons) are all off is gone, bias included
            "attn": [z_layer[i] * (z > 0).any() for i, z in enumerate(z_heads)],
            "mlp": [z_layer[i] * (z > 0).any() for i, z in enumerate(z_neurons)],
            "layer": z_layer,
        }

    # ---- hooks ----------------------------------------------------------------------------------

    def check(self, tower: nn.Module) -> None:
        """Raise unless ``tower`` has the shapes these masks were made for."""
        ours = [(h.n, m.n) for h, m in zip(self.heads, self.neurons, strict=True)]
        theirs = [
            (b.attn.heads if b.attn else 0, b.mlp.fc.out_features if b.mlp else 0)
            for b in tower.blocks
        ]
        if _width(tower) != self.width or theirs != ours:
            raise ValueError("the model's shapes differ from those the masks were made for")

    def attach(self, tower: nn.Module) -> None:
        self.check(tower)
        hook = self._handles.append

        def draw(module, args):
            self._z = self.draw()

        hook(tower.register_forward_pre_hook(draw))
        if self.hidden is not None:
            if self.vision and isinstance(tower.ln_pre, nn.LayerNorm):
                # ln_pre opens the residual stream: it writes z_hidden · LN_K(x)
                hook(tower.ln_pre.register_forward_hook(self._ln_hook(opens_stream=True)))
            else:  # no ln_pre: scale the embeddings as they enter the first block
                final = tower.ln_post if self.vision else tower.ln_final
                first = tower.blocks[0] if len(tower.blocks) else final
                hook(first.register_forward_pre_hook(self._embed_hook))
            final = tower.ln_post if self.vision else tower.ln_final
            hook(final.register_forward_hook(self._ln_hook()))
            pool = tower.attn_pool if self.vision else None
            if pool is not None:  # its residual reads and writes the kept channels only
                hook(pool.ln.register_forward_hook(self._ln_hook()))
                hook(pool.register_forward_hook(self._kept_hook))
        for i, block in enumerate(tower.blocks):
            if block.attn is not None:
                if self.hidden is not None:
                    hook(block.ln_1.register_forward_hook(self._ln_hook()))
                hook(block.attn.out.register_forward_pre_hook(self._unit_hook("heads", i)))
                hook(block.attn.out.register_forward_hook(self._output_hook("attn", i)))
            if block.mlp is not None:
                if self.hidden is not None:
                    hook(block.ln_2.register_forward_hook(self._ln_hook()))
                hook(block.mlp.proj.register_forward_pre_hook(self._unit_hook("neurons", i)))
                hook(block.mlp.proj.register_forward_hook(self._output_hook("mlp", i)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._z = [], None

    def _kept_hook(self, module, args, output):
        return output * self._z["kept"]

    def _embed_hook(self, module, args):
        return (args[0] * self._z["hidden"], *args[1:])

    def _ln_hook(self, opens_stream: bool = False):
        """LayerNorm over the kept channels; the one that opens the residual stream also scales
        its output by z_hidden."""

        def hook(module, args, output):
            y = masked_layer_norm(module, args[0], self._z["kept"])
            return y * self._z["hidden"] if opens_stream else y

        return hook

    def _unit_hook(self, group: str, i: int):
        """Scale each head's slice (each neuron) of the input of ``attn.out`` (``mlp.proj``)."""
        repeat = self.head_dims[i] if group == "heads" else 1

        def hook(module, args):
            z = self._z[group][i].repeat_interleave(repeat)  # (heads · head_dim,) or (neurons,)
            return (args[0] * z, *args[1:])

        return hook

    def _output_hook(self, sublayer: str, i: int):
        """A sub-layer's output, scaled by its layer gate and z_hidden (dropped channels stay 0)."""

        def hook(module, args, output):
            output = output * self._z[sublayer][i]
            return output * self._z["hidden"] if self._z["hidden"] is not None else output

        return hook

    # ---- pruning --------------------------------------------------------------------------------

    @torch.no_grad()
    def plan(self) -> dict:
        """The deterministic masks as kept indices and the values to fold in."""
        was_training = self.training
        self.eval()
        z = self.draw()
        self.train(was_training)
        if z["hidden"] is not None:
            channels = z["hidden"].nonzero().flatten()
            hidden = (channels, z["hidden"][channels])
        else:
            device = self.layers.log_alpha.device
            hidden = (
                torch.arange(self.width, device=device),
                torch.ones(self.width, device=device),
            )
        blocks = []
        for i in range(self.layers.n):
            entry = {"index": i, "layer": z["layer"][i]}
            for group, sublayer in (("heads", "attn"), ("neurons", "mlp")):
                kept = z[group][i].nonzero().flatten()
                entry[group] = (kept, z[group][i][kept]) if z[sublayer][i] > 0 else None
            if entry["heads"] is not None or entry["neurons"] is not None:
                blocks.append(entry)
        return {"hidden": hidden, "blocks": blocks, "layers": self.layers.n}


def _unmasked_plan(tower: nn.Module) -> dict:
    """A plan that keeps everything (for a tower without masks)."""
    device = next(tower.parameters()).device

    def everything(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.arange(n, device=device), torch.ones(n, device=device)

    blocks = []
    for i, block in enumerate(tower.blocks):
        entry = {"index": i, "layer": torch.tensor(1.0, device=device)}
        entry["heads"] = everything(block.attn.heads) if block.attn is not None else None
        entry["neurons"] = everything(block.mlp.fc.out_features) if block.mlp is not None else None
        if entry["heads"] is not None or entry["neurons"] is not None:
            blocks.append(entry)
    return {"hidden": everything(_width(tower)), "blocks": blocks, "layers": len(tower.blocks)}


def _act(tower: nn.Module) -> str:
    mlps = [b.mlp for b in tower.blocks if b.mlp is not None]
    pool = getattr(tower, "attn_pool", None)
    act = mlps[0].act if mlps else pool.mlp.act if pool is not None else None
    if isinstance(act, QuickGELU):
        return "quick_gelu"
    return "gelu_tanh" if getattr(act, "approximate", "none") == "tanh" else "gelu"


def _pruned_pool(pool: AttentionPool, K: torch.Tensor) -> tuple[dict, dict]:
    """(config keys, state dict) of an attention pool on the kept hidden channels ``K``. Its
    query is the learned latent's projection, a constant: the dropped channels' share of it
    folds into the bias."""
    dropped = torch.ones(len(pool.ln.weight), dtype=torch.bool, device=K.device)
    dropped[K] = False
    latent = pool.latent.view(-1)  # (width,)
    sd = {
        "latent": pool.latent[..., K],
        "q.weight": pool.q.weight[:, K],
        "q.bias": pool.q.bias + pool.q.weight[:, dropped] @ latent[dropped],
        "kv.weight": pool.kv.weight[:, K],
        "kv.bias": pool.kv.bias,
        "out.weight": pool.out.weight[K],
        "out.bias": pool.out.bias[K],
        "ln.weight": pool.ln.weight[K],
        "ln.bias": pool.ln.bias[K],
        "mlp.fc.weight": pool.mlp.fc.weight[:, K],
        "mlp.fc.bias": pool.mlp.fc.bias,
        "mlp.proj.weight": pool.mlp.proj.weight[K],
        "mlp.proj.bias": pool.mlp.proj.bias[K],
    }
    cfg = {
        "pool": "map",
        "pool_heads": pool.heads,
        "pool_head_dim": pool.head_dim,
        "pool_mlp_hidden": pool.mlp.fc.out_features,
    }
    return cfg, {f"attn_pool.{name}": t for name, t in sd.items()}


def _pruned_block(block: nn.Module, entry: dict, K: torch.Tensor, z_hidden: torch.Tensor) -> dict:
    """State dict of one pruned block (kept hidden channels ``K``); the layer gate and z_hidden fold
    into the rows that write the residual stream, head (neuron) gates into the columns of
    ``attn.out`` (``mlp.proj``)."""
    sd = {}
    write = entry["layer"] * z_hidden  # (|K|,): how much a sub-layer writes each kept channel
    if entry["heads"] is not None:
        attn, (heads, z) = block.attn, entry["heads"]
        H, hd, D = attn.heads, attn.head_dim, attn.out.out_features
        for name, p in block.ln_1.named_parameters():
            sd[f"ln_1.{name}"] = p[K]
        qkv = attn.qkv.weight.view(3, H, hd, D)[:, heads][..., K]  # (3, heads', hd, |K|)
        sd["attn.qkv.weight"] = qkv.reshape(-1, len(K))
        if attn.qkv.bias is not None:
            sd["attn.qkv.bias"] = attn.qkv.bias.view(3, H, hd)[:, heads].reshape(-1)
        out = attn.out.weight.view(D, H, hd)[K][:, heads]  # (|K|, heads', hd)
        sd["attn.out.weight"] = (out * z.view(1, -1, 1) * write.view(-1, 1, 1)).reshape(len(K), -1)
        sd["attn.out.bias"] = attn.out.bias[K] * write
        if isinstance(attn.gate, HeadGate):
            sd["attn.gate.logit"] = attn.gate.logit[heads]
        elif attn.gate is not None:
            sd["attn.gate.proj.weight"] = attn.gate.proj.weight[heads][:, K]
            sd["attn.gate.proj.bias"] = attn.gate.proj.bias[heads]
    if entry["neurons"] is not None:
        mlp, (neurons, z) = block.mlp, entry["neurons"]
        for name, p in block.ln_2.named_parameters():
            sd[f"ln_2.{name}"] = p[K]
        sd["mlp.fc.weight"] = mlp.fc.weight[neurons][:, K]
        sd["mlp.fc.bias"] = mlp.fc.bias[neurons]
        sd["mlp.proj.weight"] = mlp.proj.weight[K][:, neurons] * z * write[:, None]
        sd["mlp.proj.bias"] = mlp.proj.bias[K] * write
    return sd


def _pruned_tower(tower: nn.Module, plan: dict) -> tuple[dict, dict]:
    """(config section, state dict) of the pruned tower."""
    K, z = plan["hidden"]
    blocks = plan["blocks"]
    sd: dict[str, torch.Tensor] = {}
    heads = [len(b["heads"][0]) if b["heads"] is not None else 0 for b in blocks]
    hidden = [len(b["neurons"][0]) if b["neurons"] is not None else 0 for b in blocks]
    cfg = {"width": len(K), "layers": len(blocks), "heads": heads, "mlp_hidden": hidden}
    head_dims = [b.attn.head_dim for b in tower.blocks if b.attn is not None]
    if head_dims:
        cfg["head_dim"] = head_dims[0]
    cfg["act"] = _act(tower)
    if isinstance(tower, VisionTransformer):
        stem = tower.patch_embed
        if isinstance(stem, ConvStem):
            last = len(stem.layers) - 1
            for name, t in stem.state_dict().items():
                sd[f"patch_embed.{name}"] = t[K] if name.startswith(f"layers.{last}.") else t
            cfg.update(stem="conv", patch_size=stem.patch_size, **stem.spec)
        else:
            sd["patch_embed.weight"] = stem.weight[K]
            if stem.bias is not None:
                sd["patch_embed.bias"] = stem.bias[K]
            cfg.update(
                stem="patch", patch_size=stem.kernel_size[0], patch_bias=stem.bias is not None
            )
        cfg["image_size"] = tower.image_size
        cfg["class_token"] = tower.class_token is not None
        if tower.class_token is not None:
            sd["class_token"] = tower.class_token[K]
        sd["pos_embed"] = tower.pos_embed[:, K]
        if tower.rope is not None:  # heads keep their width, so the same tables
            cfg.update(rope=dict(tower.rope.spec), head_dim=tower.rope.head_dim)
        cfg["pool"] = "token"
        if tower.attn_pool is not None:
            pool_cfg, pool_sd = _pruned_pool(tower.attn_pool, K)
            cfg.update(pool_cfg)
            sd.update(pool_sd)
        pre_norm = isinstance(tower.ln_pre, nn.LayerNorm)
        if pre_norm:
            for name, p in tower.ln_pre.named_parameters():  # ln_pre writes z_hidden · LN_K(x)
                sd[f"ln_pre.{name}"] = p[K] * z
        else:  # no pre-norm: the embeddings enter the residual stream directly, scaled by z_hidden
            conv = "patch_embed"  # the convolution that writes the width
            if isinstance(stem, ConvStem):
                conv = f"patch_embed.layers.{len(stem.layers) - 1}"
            for name in (f"{conv}.weight", f"{conv}.bias", "class_token"):  # channel first
                if name in sd:
                    sd[name] = sd[name] * z.view(-1, *[1] * (sd[name].dim() - 1))
            sd["pos_embed"] = sd["pos_embed"] * z
        cfg.update(ln_pre=pre_norm, ln_eps=tower.ln_post.eps)
        final = "ln_post"
    else:
        # the text tower's embeddings enter the residual stream directly, scaled by z_hidden
        sd["token_embed.weight"] = tower.token_embed.weight[:, K] * z
        sd["pos_embed"] = tower.pos_embed[:, K] * z
        causal = [b.attn.mask is not None for b in tower.blocks if b.attn is not None]
        cfg.update(
            context_length=tower.context_length,
            vocab_size=tower.token_embed.num_embeddings,
            eot_id=tower.eot_id,
            causal=causal[0] if causal else True,
            mixer_layers=0,
            pool=tower.pool,
            ln_eps=tower.ln_final.eps,
        )
        final = "ln_final"
    for j, entry in enumerate(blocks):
        block = tower.blocks[entry["index"]]
        for name, t in _pruned_block(block, entry, K, z).items():
            sd[f"blocks.{j}.{name}"] = t
    for name, p in getattr(tower, final).named_parameters():
        sd[f"{final}.{name}"] = p[K]
    if not isinstance(tower.proj, nn.Linear):  # the pooled features are the embedding
        cfg["proj"] = False
        return cfg, sd
    sd["proj.weight"] = tower.proj.weight[:, K]
    if tower.proj.bias is not None:
        sd["proj.bias"] = tower.proj.bias
        cfg["proj_bias"] = True
    return cfg, sd


def _summary(plan: dict, tower: nn.Module) -> dict:
    heads, neurons = [0] * plan["layers"], [0] * plan["layers"]
    for b in plan["blocks"]:
        heads[b["index"]] = len(b["heads"][0]) if b["heads"] is not None else 0
        neurons[b["index"]] = len(b["neurons"][0]) if b["neurons"] is not None else 0
    return {
        "hidden": [len(plan["hidden"][0]), _width(tower)],
        "layers": [b["index"] for b in plan["blocks"]],
        "heads": heads,
        "neurons": neurons,
    }


class AutoInheritance(nn.Module):
    """Learnable L0 masks over heads, neurons, hidden width and layers of a CLIP model's
    transformer towers, a Lagrangian sparsity controller, and the pruning that ends it.

    The λ's are parameters of this module: put :meth:`param_groups` in the training optimizer
    (Adam-style; no weight decay); a gradient reversal makes the λ's ascend. Masks are sampled in
    training mode and deterministic in eval mode: call ``.train()`` / ``.eval()`` on this object
    as on the model. Only transformer towers are supported (no hybrid image tower, no Text-RepMixer).

    Args:
        model: the CLIP model to inherit from (read for shapes only).
        target: final sparsity, the fraction of the model's parameters to remove, in (0, 1).
        ramp_steps: steps over which the target ramps linearly from 0 to ``target``.
        towers: which towers to mask.
        prune_hidden: also mask the hidden (residual) width of each tower.

    Example:
        >>> from compress.distill.losses import clip_loss
        >>> from compress.models import build_model
        >>> model = build_model("tiny")
        >>> inherit = AutoInheritance(model, target=0.5, ramp_steps=100)
        >>> inherit.attach(model)
        >>> opt = torch.optim.AdamW([{"params": model.parameters()}, *inherit.param_groups()], lr=1e-4)
        >>> for step in range(200):  # doctest: +SKIP
        ...     loss = clip_loss(*model(images, tokens)) + inherit.penalty(step)[0]
        ...     opt.zero_grad(); loss.backward(); opt.step()
        >>> inherit.detach()
        >>> small, config, report = inherit.prune(model, {"image": None, "text": None})
    """

    def __init__(
        self,
        model: CLIP,
        target: float,
        ramp_steps: int,
        towers: tuple[str, ...] = TOWERS,
        prune_hidden: bool = True,
    ) -> None:
        super().__init__()
        if not 0 < target < 1:
            raise ValueError(f"target sparsity must be in (0, 1), got {target}")
        if ramp_steps < 0:
            raise ValueError(f"ramp_steps must be >= 0, got {ramp_steps}")
        if not towers or any(t not in TOWERS for t in towers):
            raise ValueError(f"towers must be a non-empty subset of {TOWERS}, got {towers}")
        for name in TOWERS:  # pruning rebuilds both towers, masked or not
            _check_tower(name, getattr(model, name))
        self.target, self.ramp_steps = float(target), int(ramp_steps)
        self.masks = nn.ModuleDict({t: TowerMasks(getattr(model, t), prune_hidden) for t in towers})
        self.full_params = count_params(model)
        self.rest = self.full_params - sum(count_params(getattr(model, t)) for t in towers)
        self.lambda1 = nn.Parameter(torch.tensor(0.0))
        self.lambda2 = nn.Parameter(torch.tensor(0.0))

    def attach(self, model: CLIP) -> None:
        """Install the mask hooks on ``model`` (the same architecture as at construction)."""
        self.detach()
        for name, masks in self.masks.items():
            masks.attach(getattr(model, name))

    def detach(self) -> None:
        """Remove the hooks: the model computes as if never masked."""
        for masks in self.masks.values():
            masks.detach()

    def param_groups(self, lr: float | None = None) -> list[dict]:
        """Optimizer groups for the masks and the λ's, without weight decay.

        Their learning rates scale with 1 / ``ramp_steps`` (at least 100), so runs of any length
        behave alike; ``lr`` (the model's) is accepted for the trainer's interface and not used.
        """
        ramp = max(self.ramp_steps, MIN_RAMP)
        return [
            {
                "params": list(self.masks.parameters()),
                "lr": MASK_LR_X_RAMP / ramp,
                "weight_decay": 0.0,
            },
            {
                "params": [self.lambda1, self.lambda2],
                "lr": LAMBDA_LR_X_RAMP / ramp,
                "weight_decay": 0.0,
            },
        ]

    def expected_params(self, masks: str = "expected") -> torch.Tensor:
        """The model's parameter count after pruning, differentiable in the masks' log α.

        ``masks``: ``"expected"`` (from P(z ≠ 0)), ``"deterministic"`` (the eval masks, 0/1) or
        ``"ones"`` (nothing pruned: the full count).
        """
        return sum(m.expected_params(masks) for m in self.masks.values()) + self.rest

    def expected_sparsity(self) -> torch.Tensor:
        """1 − E[params after pruning] / params now, over the whole model."""
        return 1 - self.expected_params() / self.full_params

    def target_at(self, step: int) -> float:
        if self.ramp_steps == 0:
            return self.target
        return self.target * min(1.0, step / self.ramp_steps)

    def penalty(self, step: int) -> tuple[torch.Tensor, dict]:
        """λ1·(ŝ − t) + λ2·(ŝ − t)², to add to the loss; ŝ the expected sparsity, t the ramped target.

        Returns the term and ``{"target", "expected_sparsity", "lambda1", "lambda2"}``.
        """
        target = self.target_at(step)
        sparsity = self.expected_sparsity()
        gap = sparsity - target
        lambda1, lambda2 = _GradReverse.apply(self.lambda1), _GradReverse.apply(self.lambda2)
        term = lambda1 * gap + lambda2 * gap.square()
        stats = {
            "target": target,
            "expected_sparsity": sparsity.item(),
            "lambda1": self.lambda1.item(),
            "lambda2": self.lambda2.item(),
        }
        return term.float(), stats

    @torch.no_grad()
    def prune(self, model: CLIP, attention: dict) -> tuple[CLIP, dict, dict]:
        """The smaller model that computes what ``model`` masked by the deterministic masks computes.

        ``attention`` holds the specs ``model`` was built with (``{"image": …, "text": …}``, as in
        its :class:`~compress.models.ModelRecord`); the pruned model is built with the same.

        Returns:
            (pruned model, its architecture dict for ``build_from_config``, report: kept hidden
            channels ``[kept, total]``, kept layer indices, heads and neurons per parent layer,
            per tower; ``params_before``, ``params_after`` and ``sparsity``).
        """
        sections, states, report = {}, {}, {}
        for name in TOWERS:
            tower = getattr(model, name)
            if name in self.masks:
                self.masks[name].check(tower)
                plan = self.masks[name].plan()
            else:
                plan = _unmasked_plan(tower)
            sections[name], states[name] = _pruned_tower(tower, plan)
            report[name] = _summary(plan, tower)
        vision = {**sections["visual"], **model.preprocess}
        vision = {k: list(v) if isinstance(v, tuple) else v for k, v in vision.items()}
        config = {
            "description": f"pruned by AutoInheritance to target sparsity {self.target:g}",
            "embed_dim": _embed_dim(model.visual),
            "vision": vision,
            "text": sections["text"],
        }
        state = {f"{t}.{k}": v for t in TOWERS for k, v in states[t].items()}
        state["logit_scale"] = model.logit_scale.detach()
        if model.logit_bias is not None:  # a sigmoid-trained model keeps its bias
            config["logit_bias"] = float(model.logit_bias)
            state["logit_bias"] = model.logit_bias.detach()
        pruned = build_from_config(config, attention["image"], attention["text"])
        pruned.load_state_dict({k: v.detach().clone() for k, v in state.items()})
        pruned.to(model.logit_scale.device).train(model.training)
        before, after = count_params(model), count_params(pruned)
        report.update(params_before=before, params_after=after, sparsity=1 - after / before)
        return pruned, config, report
