"""Every registered model and attention variant: shapes, gradients and the variants' defining properties."""

import math

import pytest
import torch

from compress.models import build_model, count_params, model_config, model_names
from compress.models.attention import Attention, ClippedSoftmax, attention_variants, build_attention
from tests.helpers import model_inputs

VARIANTS = [
    {"kind": "softmax"},
    {"kind": "clipped", "alpha": 4.0},
    {"kind": "clipped", "gamma": -0.03, "zeta": 1.03},
    {"kind": "gated", "gate": "token", "gate_init": 0.25},
    {"kind": "gated", "gate": "head"},
    {"kind": "gated", "gate": "pooled"},
]


def test_every_attention_variant_is_covered():
    assert {v["kind"] for v in VARIANTS} == set(attention_variants.names())


@pytest.mark.parametrize("name", model_names())
def test_every_model_forward_backward(name):
    torch.manual_seed(0)
    model = build_model(name)
    images, tokens = model_inputs(model, batch=1 if count_params(model) > 5e7 else 2)
    image_emb, text_emb, scale = model(images, tokens)
    dim = model_config(name)["embed_dim"]
    assert image_emb.shape == (images.shape[0], dim) and text_emb.shape == (images.shape[0], dim)
    assert torch.allclose(image_emb.norm(dim=-1), torch.ones(images.shape[0]), atol=1e-5)
    assert torch.allclose(text_emb.norm(dim=-1), torch.ones(images.shape[0]), atol=1e-5)
    log_scale = model_config(name).get("logit_scale", math.log(1 / 0.07))  # SigLIP's: log 10
    assert scale.item() == pytest.approx(math.exp(log_scale), rel=1e-5)
    bias = model.logit_bias if model.logit_bias is not None else 0.0  # sigmoid-trained models
    (image_emb.sum() + text_emb.sum() + scale + bias).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_every_variant_in_both_towers(spec):
    torch.manual_seed(0)
    model = build_model("tiny", image_attention=spec, text_attention=spec)
    images, tokens = model_inputs(model, batch=3)
    image_emb, text_emb, _ = model(images, tokens)
    assert image_emb.shape == text_emb.shape == (3, 32)
    (image_emb[:, 0].sum() + text_emb[:, 0].sum()).backward()
    assert all(p.grad is not None for p in [*model.visual.parameters(), *model.text.parameters()])


def test_real_size_parameter_counts():
    """ViT-B/16 matches open_clip's ViT-B-16 exactly; TinyCLIP ViT-8M/16's image tower is ~8M."""
    assert count_params(build_model("vit_b16")) == 149_620_737
    tiny_clip = build_model("tinyclip_vit_8m_16")
    assert 7.5e6 < count_params(tiny_clip.visual) < 8.5e6
    assert len(tiny_clip.visual.blocks) == 10 and len(tiny_clip.text.blocks) == 3


def test_clipped_softmax_with_gamma_0_zeta_1_is_softmax():
    scores = torch.randn(2, 4, 7, 7) * 5
    assert torch.equal(ClippedSoftmax(0.0, 1.0)(scores), scores.softmax(-1))
    torch.manual_seed(0)
    plain = build_attention(16, 2, 7, False, {"kind": "softmax"})
    clipped = build_attention(16, 2, 7, False, {"kind": "clipped", "gamma": 0.0, "zeta": 1.0})
    clipped.load_state_dict(plain.state_dict())
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(clipped(x), plain(x), rtol=0, atol=0)


def test_clipped_softmax_rows_reach_exact_zeros_and_ones():
    probs = ClippedSoftmax(-0.1, 1.1)(torch.tensor([[8.0, 0.0, 0.0, 0.0]]))
    assert (probs[0, 1:] == 0).all() and probs[0, 0] == 1.0
    plain = torch.tensor([[8.0, 0.0, 0.0, 0.0]]).softmax(-1)
    assert (plain > 0).all() and plain[0, 0] < 1  # softmax needs infinite logits for the same


def test_alpha_sets_gamma_per_sequence_length():
    block = build_attention(16, 2, 65, False, {"kind": "clipped", "alpha": 4.0})
    assert block.probs.gamma == pytest.approx(-4.0 / 65)


def test_gates_start_at_gate_init_and_scale_head_outputs():
    for gate in ("token", "head", "pooled"):
        attn = build_attention(16, 2, 5, False, {"kind": "gated", "gate": gate, "gate_init": 0.25})
        x = torch.randn(2, 5, 16)
        if gate == "head":
            assert torch.allclose(attn.gate(x), torch.full((1, 2, 1, 1), 0.25))
        else:
            assert attn.gate(x).mean().item() == pytest.approx(0.25, abs=0.05)
    # A closed gate silences the head: output is just the output projection's bias.
    attn = build_attention(16, 2, 5, False, {"kind": "gated", "gate": "head"})
    with torch.no_grad():
        attn.gate.logit.fill_(-1e4)
    out = attn(torch.randn(2, 5, 16))
    assert torch.allclose(out, attn.out.bias.expand_as(out))


def test_causal_text_tower_ignores_tokens_after_eot():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    _, tokens = model_inputs(model, batch=1)
    changed = tokens.clone()
    changed[0, -1] = 123  # after EOT: must not change the pooled embedding
    torch.testing.assert_close(model.encode_text(tokens), model.encode_text(changed))
    changed[0, 1] = 456  # before EOT: must change it
    assert not torch.allclose(model.encode_text(tokens), model.encode_text(changed))


def test_eot_found_by_id_not_by_largest_id():
    """A tokenizer whose EOT is not its largest id: pooling must still pick the EOT position."""
    from compress.models.towers import TextTransformer

    torch.manual_seed(0)
    tower = TextTransformer(8, 100, 16, 1, 2, 2, 4, eot_id=5).eval()
    tokens = torch.tensor([[1, 99, 7, 5, 0, 0, 0, 0]])  # EOT (5) at position 3; the largest id at 1
    x = tower.token_embed(tokens) + tower.pos_embed
    for block in tower.blocks:
        x = block(x)
    expected = tower.proj(tower.ln_final(x)[:, 3])
    torch.testing.assert_close(tower(tokens), expected)


def test_attention_rejects_bad_options():
    with pytest.raises(ValueError, match="exactly one of gamma or alpha"):
        build_attention(16, 2, 5, False, {"kind": "clipped"})
    with pytest.raises(ValueError, match="gate_init"):
        build_attention(16, 2, 5, False, {"kind": "gated", "gate_init": 1.5})
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, 3, 5)
    with pytest.raises(KeyError, match="unknown attention"):
        build_attention(16, 2, 5, False, {"kind": "nope"})


def test_logit_scale_init():
    assert build_model("tiny").logit_scale.item() == pytest.approx(math.log(1 / 0.07))


@pytest.mark.parametrize(
    "text_attention, trims",
    [
        (None, True),
        ({"kind": "clipped", "alpha": 4.0}, True),
        ({"kind": "gated", "gate": "token"}, True),
        ({"kind": "gated", "gate": "pooled"}, False),  # a mean over every position, padding too
    ],
)
def test_training_drops_the_padding_tail_and_computes_the_same_text_embeddings(
    text_attention, trims
):
    torch.manual_seed(0)
    model = build_model("tiny", text_attention=text_attention)
    _, tokens = model_inputs(model, batch=4)  # EOT mid-sequence, zeros after it
    tower = model.text.train()
    assert tower.trims_padding == trims
    seen = []
    tower.blocks[0].register_forward_hook(lambda m, i, out: seen.append(out.shape[1]))
    trimmed = tower(tokens)
    tower.trims_padding = False
    assert torch.allclose(trimmed, tower(tokens), atol=1e-6)
    assert seen == [tokens.shape[1] // 2 + 1 if trims else tokens.shape[1], tokens.shape[1]]
