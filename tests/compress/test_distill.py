"""Distillation: loss values by hand, weight inheritance slice by slice, and the distill stage
(progressive stages, resume after a kill, 2-process DDP equal to one process)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from compress.distill.inherit import InheritError, importance_scores, inherit, plan_transformer
from compress.distill.losses import (
    AffinityMimicking,
    CLIPLoss,
    SigmoidLoss,
    affinity_targets,
    clip_loss,
    soft_cross_entropy,
)
from compress.io import sha256_file
from compress.models import (
    ModelRecord,
    build_from_config,
    build_model,
    count_params,
    load_model,
    model_config,
    save_model,
)
from compress.tokenizer import EOT_ID
from edgeclip.pipeline import run_pipeline
from edgeclip.recipe import load_recipe
from edgeclip.recipe.loading import parse_recipe
from edgeclip.recipe.sections import RecipeError
from edgeclip.stages import STAGES
from tests.helpers import DISTILL_TRAIN, MCI_VIT, ROOT, distill_recipe, torchrun_edgeclip

EYE = torch.eye(2)


# -- losses -----------------------------------------------------------------------------------


def test_soft_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [1/4, 3/4]
    targets = torch.tensor([[0.5, 0.5]])
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_affinity_mimicking_by_hand():
    """Student I = T = identity at scale 1, teacher the same at scale 2 (2 × 2 case).

    Student rows softmax([1, 0]); teacher targets p = softmax([2, 0]) = [e²/(1+e²), 1/(1+e²)].
    softCE = −[p₀·log(e/(1+e)) + p₁·log(1/(1+e))] = log(1+e) − p₀, the same in both directions.
    """
    e = math.e
    expected = math.log(1 + e) - e**2 / (1 + e**2)
    loss = AffinityMimicking(alpha=1.0)
    value = loss((EYE, EYE, torch.tensor(1.0)), [(EYE, EYE, torch.tensor(2.0))])
    assert value.item() == pytest.approx(expected, rel=1e-6)
    fixed = AffinityMimicking(alpha=1.0, student_scale=1.0, teacher_scale=2.0)
    value = fixed((EYE, EYE, torch.tensor(7.0)), [(EYE, EYE, torch.tensor(9.0))])
    assert value.item() == pytest.approx(expected, rel=1e-6)  # the fixed scales win


def test_alpha_mixes_affinity_and_clip():
    torch.manual_seed(0)
    s_img, s_txt = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    t_img, t_txt = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    student, teacher = (s_img, s_txt, torch.tensor(10.0)), (t_img, t_txt, torch.tensor(20.0))
    pure_clip = clip_loss(*student)
    pure_aff = AffinityMimicking(alpha=1.0)(student, [teacher])
    assert AffinityMimicking(alpha=0.0)(student, [teacher]).item() == pytest.approx(
        pure_clip.item()
    )
    mixed = AffinityMimicking(alpha=0.25)(student, [teacher])
    assert mixed.item() == pytest.approx(0.25 * pure_aff.item() + 0.75 * pure_clip.item(), rel=1e-6)
    assert CLIPLoss()(student).item() == pytest.approx(pure_clip.item())


def test_a_sigmoid_base_mixes_in_as_the_clip_loss_does():
    """(1 − α) of the sigmoid loss by hand beside α of affinity mimicking, the student's logit
    bias last of its embeddings and reached by the gradient; the affinities ignore the bias."""
    torch.manual_seed(0)
    s_img, s_txt = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    t_img, t_txt = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-3.0, requires_grad=True)
    teacher = (t_img, t_txt, torch.tensor(20.0))
    z = scale * s_img @ s_txt.T + bias.detach()
    labels = 2 * torch.eye(4) - 1
    by_hand = -F.logsigmoid(labels * z).sum() / 4
    affinity = AffinityMimicking(alpha=1.0)((s_img, s_txt, scale), [teacher])
    mixed = AffinityMimicking(alpha=0.25, base="sigmoid")((s_img, s_txt, scale, bias), [teacher])
    assert mixed.item() == pytest.approx(0.25 * affinity.item() + 0.75 * by_hand.item(), rel=1e-5)
    mixed.backward()
    assert bias.grad is not None and bias.grad != 0
    pure = AffinityMimicking(alpha=1.0, base="sigmoid")((s_img, s_txt, scale, bias), [teacher])
    assert pure.item() == pytest.approx(affinity.item(), rel=1e-6)  # a bias moves no softmax
    assert SigmoidLoss()((s_img, s_txt, scale, bias)).item() == pytest.approx(by_hand.item())
    with pytest.raises(ValueError, match="logit bias"):
        AffinityMimicking(alpha=0.5, base="sigmoid")((s_img, s_txt, scale), [teacher])


def test_ensemble_targets_are_the_mean_of_the_members_softmaxes():
    a = (EYE, EYE, torch.tensor(1.0))
    b = (EYE, EYE.flip(0), torch.tensor(3.0))  # the second teacher pairs image 0 with text 1
    i2t, t2i = affinity_targets([a, b])
    e, e3 = math.e, math.e**3
    row0 = [0.5 * (e / (1 + e) + 1 / (1 + e3)), 0.5 * (1 / (1 + e) + e3 / (1 + e3))]
    torch.testing.assert_close(i2t[0], torch.tensor(row0))
    torch.testing.assert_close(i2t.sum(-1), torch.ones(2))
    torch.testing.assert_close(t2i.sum(-1), torch.ones(2))


def test_learnable_teacher_scale_starts_at_the_teachers_and_learns():
    loss = AffinityMimicking(teacher_scale="learnable")
    student = (EYE, EYE, torch.tensor(1.0))
    value = loss(student, [(EYE, EYE, torch.tensor(2.0))])
    assert loss.teacher_log_scale.exp().item() == pytest.approx(2.0)
    value.backward()
    assert loss.teacher_log_scale.grad is not None and loss.teacher_log_scale.grad != 0


# -- inheritance ------------------------------------------------------------------------------


def test_leading_inheritance_copies_exact_teacher_slices():
    torch.manual_seed(0)
    teacher, student = build_model("demo_teacher"), build_model("demo_student")
    report = inherit(teacher, student, text_layers=[0, 2])
    assert report["visual"]["layers"] == [0, 1, 2, 3] and report["text"]["layers"] == [0, 2]
    tv, sv = teacher.visual, student.visual
    w = sv.proj.in_features  # 64 of 128 hidden channels
    s_qkv = sv.blocks[3].attn.qkv.weight.reshape(3, 2, 32, w)
    t_qkv = tv.blocks[3].attn.qkv.weight.reshape(3, 4, 32, 128)
    for part in range(3):  # q, k and v each take the teacher's leading heads
        assert torch.equal(s_qkv[part], t_qkv[part, :2, :, :w])
    assert torch.equal(sv.blocks[3].attn.out.weight, tv.blocks[3].attn.out.weight[:w, :64])
    assert torch.equal(sv.blocks[3].mlp.fc.weight, tv.blocks[3].mlp.fc.weight[:256, :w])
    assert torch.equal(sv.blocks[3].mlp.proj.weight, tv.blocks[3].mlp.proj.weight[:w, :256])
    st, tt = student.text.blocks[1], teacher.text.blocks[2]  # the explicit layer list
    assert torch.equal(st.mlp.fc.weight, tt.mlp.fc.weight[:96, :24])
    assert torch.equal(sv.pos_embed, tv.pos_embed[:, :w])
    assert torch.equal(sv.ln_post.weight, tv.ln_post.weight[:w])
    assert torch.equal(student.text.token_embed.weight, teacher.text.token_embed.weight[:, :24])
    assert torch.equal(sv.proj.weight, tv.proj.weight[:, :w])
    assert count_params(teacher) / count_params(student) >= 5


def test_importance_inheritance_takes_the_chosen_heads_for_q_k_and_v():
    torch.manual_seed(0)
    teacher, student = build_model("demo_teacher"), build_model("demo_student")
    scores = {
        "hidden": torch.arange(128.0).flip(0),  # prefers the first channels: the leading ones
        "heads": {0: torch.tensor([0.0, 5.0, 1.0, 9.0]), 2: torch.tensor([7.0, 0.0, 8.0, 1.0])},
        "neurons": {},
    }
    plan = plan_transformer(teacher.visual, student.visual, "image", [0, 2, 3, 3], scores)
    assert [h.tolist() for h in plan.heads] == [[1, 3], [0, 2], [0, 1], [0, 1]]
    from compress.distill.inherit import apply_transformer

    apply_transformer(teacher.visual, student.visual, plan, "image")
    s_qkv = student.visual.blocks[0].attn.qkv.weight.reshape(3, 2, 32, 64)
    t_qkv = teacher.visual.blocks[0].attn.qkv.weight.reshape(3, 4, 32, 128)
    for part in range(3):
        assert torch.equal(s_qkv[part, 0], t_qkv[part, 1, :, :64])
        assert torch.equal(s_qkv[part, 1], t_qkv[part, 3, :, :64])
    s_bias = student.visual.blocks[0].attn.qkv.bias.reshape(3, 2, 32)
    assert torch.equal(s_bias[:, 1], teacher.visual.blocks[0].attn.qkv.bias.reshape(3, 4, 32)[:, 3])
    out = teacher.visual.blocks[0].attn.out.weight[:64].reshape(64, 4, 32)
    assert torch.equal(student.visual.blocks[0].attn.out.weight, out[:, [1, 3]].reshape(64, 64))


@pytest.mark.parametrize("score", ["magnitude", "taylor"])
def test_importance_scores_cover_every_unit(score):
    torch.manual_seed(0)
    model = build_model("tiny")
    tokens = torch.randint(1, 1000, (4, 16))
    tokens[:, 6] = EOT_ID
    scores = importance_scores(model, {"image": torch.rand(4, 3, 32, 32), "text": tokens}, score)
    for tower in ("visual", "text"):
        assert scores[tower]["hidden"].shape == (32,) and (scores[tower]["hidden"] >= 0).all()
        assert sorted(scores[tower]["heads"]) == [0, 1] and scores[tower]["heads"][0].shape == (2,)
        assert scores[tower]["neurons"][1].shape == (64,)
    assert all(p.grad is None for p in model.parameters()) or score == "taylor"
    if score == "magnitude":  # a student's pictures of another size are scored at the model's
        images = torch.rand(4, 3, 48, 48)
        resized = torch.nn.functional.interpolate(images, (32, 32), mode="bicubic")
        other = importance_scores(model, {"image": images, "text": tokens}, score)
        same = importance_scores(model, {"image": resized, "text": tokens}, score)
        assert torch.equal(other["visual"]["hidden"], same["visual"]["hidden"])


def test_real_size_tinyclip_inherits_from_vit_b16():
    torch.manual_seed(0)
    teacher, student = build_model("vit_b16"), build_model("tinyclip_vit_8m_16")
    report = inherit(teacher, student)
    assert report["visual"]["layers"] == list(range(10)) and report["text"]["layers"] == [0, 4, 8]
    s_qkv = student.visual.blocks[9].attn.qkv.weight.reshape(3, 4, 64, 256)
    t_qkv = teacher.visual.blocks[9].attn.qkv.weight.reshape(3, 12, 64, 768)
    assert torch.equal(s_qkv, t_qkv[:, :4, :, :256])
    assert torch.equal(
        student.text.blocks[2].mlp.fc.weight, teacher.text.blocks[8].mlp.fc.weight[:1024, :256]
    )
    images, tokens = torch.rand(1, 3, 224, 224), torch.randint(1, 1000, (1, 77))
    tokens[0, 9] = EOT_ID
    with torch.no_grad():
        assert student(images, tokens)[0].shape == (1, 512)


def _pe_pair() -> tuple:
    """A tiny_pe student (2 blocks × 2 heads of 16, width 32) and a teacher twice as wide and
    deep with the same head width (4 blocks × 4 heads of 16, width 64) in both towers."""
    config = model_config("tiny_pe")
    wide = {"width": 64, "layers": 4, "heads": 4}
    teacher = {**config, "vision": {**config["vision"], **wide}, "text": {**config["text"], **wide}}
    return build_from_config(teacher), build_from_config(config)


def _pe_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(1, 1000, (4, 16))
    tokens[:, 6] = EOT_ID
    return torch.rand(4, 3, 32, 32), tokens


@pytest.mark.parametrize("method", ["leading", "importance"])
def test_pe_core_student_inherits_blocks_and_attention_pool(method):
    """Heads whole (q, k, v at their full width: the rotary tables' own), the attention pool's
    leading heads and channels per head, the biased projection; the rotary tables rebuilt."""
    torch.manual_seed(0)
    teacher, student = _pe_pair()
    images, tokens = _pe_inputs()
    calibration = {"image": images, "text": tokens} if method == "importance" else None
    report = inherit(teacher, student, method=method, calibration=calibration)
    tv, sv = teacher.visual, student.visual
    hidden = torch.tensor(report["visual"]["hidden"])
    assert report["visual"]["layers"] == [0, 2] and len(hidden) == 32
    if method == "leading":
        assert torch.equal(hidden, torch.arange(32))
    for s_block, t_index, heads in zip(
        sv.blocks, report["visual"]["layers"], report["visual"]["heads"], strict=True
    ):
        t_qkv = tv.blocks[t_index].attn.qkv.weight.reshape(3, 4, 16, 64)
        s_qkv = s_block.attn.qkv.weight.reshape(3, 2, 16, 32)
        assert torch.equal(s_qkv, t_qkv[:, heads][..., hidden])
    pool, t_pool = sv.attn_pool, tv.attn_pool  # 4 heads of 8 from 4 heads of 16
    assert torch.equal(pool.latent, t_pool.latent[..., hidden])
    assert torch.equal(
        pool.q.weight, t_pool.q.weight.reshape(4, 16, 64)[:, :8][..., hidden].reshape(32, 32)
    )
    kv = t_pool.kv.weight.reshape(2, 4, 16, 64)[:, :, :8][..., hidden].reshape(64, 32)
    assert torch.equal(pool.kv.weight, kv)
    assert torch.equal(
        pool.out.weight, t_pool.out.weight[hidden].reshape(32, 4, 16)[..., :8].reshape(32, 32)
    )
    assert torch.equal(pool.mlp.fc.weight, t_pool.mlp.fc.weight[:128][:, hidden])
    assert torch.equal(sv.proj.weight, tv.proj.weight[:, hidden])
    assert torch.equal(sv.proj.bias, tv.proj.bias)
    assert torch.equal(sv.rope.cos, tv.rope.cos) and torch.equal(sv.rope.sin, tv.rope.sin)
    with torch.no_grad():
        embeddings = student(images, tokens)[:2]
    assert all(torch.isfinite(e).all() for e in embeddings)


@pytest.mark.parametrize("name", ["tiny_pe", "tiny_siglip"])
def test_a_student_of_its_teachers_shape_inherits_every_weight(name):
    """Attention pools, class token or none, projection or none: nothing keeps its own init."""
    torch.manual_seed(0)
    teacher, student = build_model(name), build_model(name)
    inherit(teacher, student)
    for (key, t), s in zip(
        teacher.state_dict().items(), student.state_dict().values(), strict=True
    ):
        assert torch.equal(t, s), key


def test_pe_core_student_keeps_its_teachers_head_width():
    teacher, _ = _pe_pair()
    config = model_config("tiny_pe")
    narrow_heads = {**config, "vision": {**config["vision"], "heads": 4}}  # 4 heads of 8
    with pytest.raises(InheritError, match="student head_dim 8 differs from the teacher's 16"):
        inherit(teacher, build_from_config(narrow_heads))
    no_rope = {**config, "vision": {**config["vision"], "rope": None}}
    with pytest.raises(InheritError, match="one has rotary position embeddings .rope., one not"):
        inherit(teacher, build_from_config(no_rope))


@pytest.mark.parametrize(
    "teacher, student, message",
    [
        ("tiny", "demo_teacher", "student width 128 > teacher width 32"),
        ("tiny_student", "tiny", "student width 32 > teacher width 16"),
        ("tiny", "tiny_mobile", "a HybridVisionTower cannot inherit from a VisionTransformer"),
    ],
)
def test_incompatible_pairs_are_clear_errors(teacher, student, message):
    with pytest.raises(InheritError, match=message):
        inherit(build_model(teacher), build_model(student))


def test_hybrid_student_inherits_from_a_hybrid_teacher():
    torch.manual_seed(0)
    teacher, student = build_model("tiny_mobile"), build_model("tiny_mobile")
    inherit(teacher, student)
    for (name, t), s in zip(
        teacher.state_dict().items(), student.state_dict().values(), strict=True
    ):
        assert torch.equal(t, s), name


def test_mobileclip_b_style_towers_inherit_and_mismatches_are_named():
    """MobileCLIP-B's ViT (conv stem, no pre-norm, biased head) passes its slices on to a
    narrower student of the same build; a CLIP-style student is told why it cannot."""
    torch.manual_seed(0)
    teacher = build_from_config(MCI_VIT)
    narrow = {**MCI_VIT, "vision": {**MCI_VIT["vision"], "width": 16, "layers": 1}}
    student = build_from_config(narrow)
    inherit(teacher, student, image_layers=[1])
    s, t = student.visual, teacher.visual
    assert torch.equal(s.proj.bias, t.proj.bias)
    assert torch.equal(s.class_token, t.class_token[:16])
    assert torch.equal(s.patch_embed.layers[0].weight, t.patch_embed.layers[0].weight)
    assert torch.equal(s.blocks[0].ln_1.weight, t.blocks[1].ln_1.weight[:16])
    clip_style = {**narrow, "vision": {**narrow["vision"], "ln_pre": True}}
    with pytest.raises(InheritError, match="one has a pre-norm .ln_pre., one not"):
        inherit(teacher, build_from_config(clip_style))


# -- the distill stage ------------------------------------------------------------------------


def test_progressive_distillation_evaluates_every_stage(tmp_path, teacher_file):
    distill = (
        DISTILL_TRAIN
        + """\
stages:
  - {model: tiny, steps: 2, inherit: {method: leading}}
  - {model: tiny_student, steps: 3, inherit: {method: importance, calibration: 16}}
"""
    )
    run_dir = run_pipeline(
        load_recipe(distill_recipe(tmp_path, teacher_file, distill, True)), STAGES
    ).run_dir
    summary = json.loads((run_dir / "distill" / "done.json").read_text())["summary"]
    assert [s["model"] for s in summary["stages"]] == ["tiny", "tiny_student"]
    assert all("zs_colour" in s["metrics"]["zeroshot"] for s in summary["stages"])
    assert summary["stages"][1]["inherit"]["method"] == "importance"
    student, record = load_model(run_dir / "distill" / "model.pt")
    assert record.name == "tiny_student" and count_params(student) == summary["parameters"]
    teacher = run_dir / "teacher" / "model.pt"  # who it learnt from, by file and hash
    assert record.provenance == {
        "stage": "distill",
        "parent": "tiny",
        "inherit": "importance",
        "teachers": [{"model": "tiny", "file": str(teacher), "sha256": sha256_file(teacher)}],
    }
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert "teacher" in metrics and "zs_colour" in metrics["teacher"]["zeroshot"]


def test_a_sigmoid_base_gives_the_student_a_learned_bias(tmp_path, teacher_file):
    """With ``base: sigmoid`` the student gets a logit bias at SigLIP's start, and, its teacher's
    logits being softmax ones, keeps its own scale too; both learn; QAT then trains the bias of
    the fake-quant model with the same loss."""
    distill = DISTILL_TRAIN + "model: tiny_student\nsteps: 3\nloss: {alpha: 0.5, base: sigmoid}\n"
    path = distill_recipe(tmp_path, teacher_file, distill)
    qat = "qat: {steps: 2, batch_size: 16, warmup: 1, loss: {alpha: 0.5, base: sigmoid}}\n"
    path.write_text(path.read_text() + qat)
    run_dir = run_pipeline(load_recipe(path), STAGES).run_dir
    student, record = load_model(run_dir / "distill" / "model.pt")
    assert record.config["logit_bias"] == -10.0  # the start, in the architecture
    assert student.logit_bias is not None and student.logit_bias.item() != -10.0
    assert abs(student.logit_scale.item() - math.log(10.0)) < 0.1  # not the teacher's log(1/0.07)
    qat = torch.load(run_dir / "qat" / "model.pt", weights_only=True)["state_dict"]
    assert qat["logit_bias"].item() != student.logit_bias.item()


def test_a_sigmoid_loss_is_refused_where_it_cannot_mix():
    with pytest.raises(RecipeError, match="distill.loss.base: mixes into kind affinity"):
        parse_recipe("name: r\ndistill: {model: tiny, loss: {kind: clip, base: sigmoid}}")


@pytest.mark.slow
def test_auto_inheritance_prunes_to_its_target_sparsity(tmp_path, teacher_file):
    """Stage 0 copies the teacher; stage 1 learns L0 masks for 320 steps and prunes to ~40%."""
    distill = (
        DISTILL_TRAIN
        + """\
stages:
  - {model: tiny, steps: 1, inherit: {method: leading}}
  - {steps: 320, inherit: {method: auto, sparsity: 0.4, ramp: 0.5}}
"""
    )
    path = distill_recipe(tmp_path, teacher_file, distill, True)
    run_dir = run_pipeline(load_recipe(path), STAGES).run_dir
    stages = json.loads((run_dir / "distill" / "done.json").read_text())["summary"]["stages"]
    pruning = stages[1]["pruning"]
    assert abs(pruning["sparsity"] - 0.4) <= 0.02, pruning["sparsity"]
    student, record = load_model(run_dir / "distill" / "model.pt")
    assert count_params(student) == pruning["params_after"] < pruning["params_before"]
    assert record.name == "tiny-pruned" and "zs_colour" in stages[1]["metrics"]["zeroshot"]


@pytest.mark.slow
def test_pe_core_students_distil_prune_and_train_quantized(tmp_path):
    """PE-Core's layout through the stages (~30 s): a tiny_pe student inherits from a tiny_pe
    teacher, learned masks prune it (too few steps to reach the target: the plumbing, not the
    controller) into a model whose record rebuilds its rotary tables and pool, and QAT trains
    that with fake INT8."""
    torch.manual_seed(0)
    record = ModelRecord.named("tiny_pe")
    save_model(record.build(), record, tmp_path / "teacher.pt")
    distill = (
        DISTILL_TRAIN
        + """\
stages:
  - {model: tiny_pe, steps: 2, inherit: {method: importance, calibration: 16}}
  - {steps: 4, inherit: {method: auto, sparsity: 0.3, ramp: 0.5}}
"""
    )
    path = distill_recipe(tmp_path, tmp_path / "teacher.pt", distill)
    qat = "qat: {steps: 2, batch_size: 16, warmup: 1}\n"
    path.write_text(path.read_text().replace("model: tiny,", "model: tiny_pe,") + qat)
    run_dir = run_pipeline(load_recipe(path), STAGES).run_dir
    student, record = load_model(run_dir / "distill" / "model.pt")
    vision = record.config["vision"]
    assert record.name == "tiny_pe-pruned"
    assert vision["rope"] == model_config("tiny_pe")["vision"]["rope"]
    assert (vision["pool_heads"], vision["pool_head_dim"], vision["pool_mlp_hidden"]) == (4, 8, 128)
    assert torch.equal(student.visual.rope.cos, build_model("tiny_pe").visual.rope.cos)
    qat_state = torch.load(run_dir / "qat" / "model.pt", weights_only=True)["state_dict"]
    assert any("attn_pool" in key for key in qat_state)


def test_distillation_resumes_after_a_kill(tmp_path, teacher_file):
    distill = DISTILL_TRAIN + "model: tiny_student\nsteps: 6\nloss: {teacher_scale: learnable}\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = run_pipeline(
        load_recipe(distill_recipe(tmp_path / "a", teacher_file, distill)), STAGES
    ).run_dir
    path = distill_recipe(tmp_path / "b", teacher_file, distill)
    with pytest.raises(KeyboardInterrupt):  # killed after 3 steps; the last checkpoint is step 2
        run_pipeline(load_recipe(path), STAGES, stop_after=3)
    checkpoint = tmp_path / "b/runs/d/distill/stage0/checkpoint.pt"
    assert torch.load(checkpoint, weights_only=True)["step"] == 2
    resumed = run_pipeline(load_recipe(path), STAGES).run_dir
    a = torch.load(straight / "distill/model.pt", weights_only=True)["state_dict"]
    b = torch.load(resumed / "distill/model.pt", weights_only=True)["state_dict"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_two_process_distillation_matches_one_process(tmp_path, teacher_file):
    """A 2-process gloo run, each rank with half the global batch, gives the single-process student."""
    # fp32: runs compared for equality (see tests/helpers.py: write_tiny_recipe)
    distill = DISTILL_TRAIN + "model: tiny_student\nsteps: 3\nprecision: fp32\n"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = distill_recipe(tmp_path / "one", teacher_file, distill)
    double = distill_recipe(tmp_path / "two", teacher_file, distill)
    run_pipeline(load_recipe(single), STAGES)
    proc = torchrun_edgeclip(double, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trained = json.loads((tmp_path / "two/runs/d/distill/stage0/train.json").read_text())
    assert trained["world_size"] == 2
    a = torch.load(tmp_path / "one/runs/d/distill/model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "two/runs/d/distill/model.pt", weights_only=True)["state_dict"]
    for key in a:
        if key.endswith("qkv.bias"):  # the key bias has a zero true gradient (see test_pipeline)
            a[key], b[key] = a[key].view(3, -1)[[0, 2]], b[key].view(3, -1)[[0, 2]]
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_real_scale_recipe_runs_a_few_steps_at_real_size(tmp_path):
    """recipes/tinyclip_vit8m.yaml as written, on random open_clip ViT-B/16 weights and a few scenes."""
    recipe_file = ROOT / "recipes" / "tinyclip_vit8m.yaml"
    overrides = [
        f"runs_dir={tmp_path / 'runs'}",
        "teacher.pretrained=null",
        "data.train=scenes",
        "data.format=csv",
        "data.scenes={image_size: 64, train: 16, val: 8, retrieval: 8, zeroshot: 36, shard_size: 16}",
        "distill.steps=2",
        "distill.batch_size=4",
        "distill.warmup=1",
        "distill.num_workers=0",
        "eval.zeroshot=[zs_colour]",
        "eval.retrieval=[retrieval]",
        "export=null",
    ]
    run_dir = run_pipeline(load_recipe(recipe_file, overrides), STAGES).run_dir
    student, record = load_model(run_dir / "distill" / "model.pt")
    assert record.name == "tinyclip_vit_8m_16" and 8.0e6 < count_params(student.visual) < 8.5e6
    summary = json.loads((run_dir / "distill" / "done.json").read_text())["summary"]
    assert summary["stages"][0]["train"]["steps"] == 2
    assert summary["teacher_parameters"] == 149_620_737  # open_clip ViT-B-16, loaded by the loader
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert "zs_colour" in metrics["zeroshot"] and "zs_colour" in metrics["teacher"]["zeroshot"]


def test_incompatible_student_is_a_one_line_error(tmp_path, teacher_file):
    distill = DISTILL_TRAIN + "model: demo_teacher\nsteps: 2\n"
    path = distill_recipe(tmp_path, teacher_file, distill)
    proc = subprocess.run(
        [sys.executable, "-m", "edgeclip.cli", "run", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        "distill stage 0 (demo_teacher): cannot inherit the image tower: student width 128 > teacher width 32"
        in proc.stderr
    )
