"""EMMA, masked CoTEX, the tasks' named losses and ensembles, on tiny configurations."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from timm.optim import create_optimizer_v2

from affectkit import metrics
from affectkit.labels import ABAW_EXPR, AFFECTNET8, FER2013, LSD
from affectkit.models.backbone import create_backbone
from affectkit.models.cotex import MaskedCoTEX
from affectkit.models.dan import DAN, ExpressionBranch
from affectkit.models.emma import EMMA
from affectkit.models.ensemble import Ensemble, average_members, retune_au_thresholds
from affectkit.tasks import CoTEXTask, MTLTask

IMG = 32


def vit():
    torch.manual_seed(0)
    return create_backbone("vit_tiny_patch16_224", img_size=IMG)


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    va = torch.rand(n, 2, generator=g) * 2 - 1
    va[0] = -5  # unlabelled VA
    expression = torch.randint(0, 8, (n,), generator=g)
    expression[1] = -1
    au = torch.randint(0, 2, (n, 12), generator=g).float()
    au[2] = -1
    au[3, :5] = -1
    return {"image": torch.randn(n, 3, IMG, IMG, generator=g), "va": va,
            "expression": expression, "au": au}


def dan_branch():
    torch.manual_seed(1)
    return ExpressionBranch(DAN(), AFFECTNET8)


@pytest.fixture(scope="module")
def emma():
    return EMMA(vit(), dan_branch())


def test_emma_shapes_and_finite_losses(emma):
    b = batch()
    emma.train()
    out = emma(b["image"])
    assert out["au_logits"].shape == (6, 12) and out["expr_logits"].shape == (6, 8)
    assert out["va"].shape == (6, 2) and out["va"].abs().max() <= 1
    assert out["expr_scores_cnn"].shape == (6, 8)
    named = MTLTask()(out, b)
    assert set(named) == {"au_loss", "expr_loss", "va_loss", "loss"}
    assert all(torch.isfinite(v) for v in named.values())
    named["loss"].backward()


def test_emma_invalid_labels_contribute_nothing(emma):
    b = batch()
    with torch.no_grad():
        out = emma(b["image"])
    task = MTLTask()
    full = task(out, b)
    # outputs on unlabelled entries may be anything: no loss moves
    moved = {k: v.clone() for k, v in out.items()}
    moved["va"][0] = 0.9            # row 0: VA unlabelled
    moved["expr_logits"][1] += 5.0  # row 1: expression unlabelled
    moved["au_logits"][2] -= 3.0    # row 2: every AU unlabelled
    moved["au_logits"][3, :5] += 3.0  # row 3: first five AUs unlabelled
    again = task(moved, b)
    for name in ("va_loss", "expr_loss", "au_loss", "loss"):
        assert torch.allclose(again[name], full[name]), name
    nothing = {"va": torch.full_like(b["va"], -5.0),
               "expression": torch.full_like(b["expression"], -1),
               "au": torch.full_like(b["au"], -1.0)}
    assert all(v.item() == 0 for v in task(out, nothing).values())


def test_emma_stop_gradient(emma):
    emma.zero_grad()
    b = batch()
    out = emma(b["image"])
    MTLTask(au_weight=0, expr_weight=0)(out, b)["loss"].backward()
    backbone_grads = [p.grad for p in emma.backbone.parameters() if p.grad is not None]
    assert all(g.abs().max() == 0 for g in backbone_grads)
    assert emma.au_head.weight.grad is None or emma.au_head.weight.grad.abs().max() == 0
    assert emma.va_head[0].weight.grad.abs().max() > 0
    # without stop-gradient the VA loss reaches the backbone
    emma.zero_grad()
    emma.stop_gradient = False
    try:
        out = emma(b["image"])
        MTLTask(au_weight=0, expr_weight=0)(out, b)["loss"].backward()
        assert emma.backbone.model.patch_embed.proj.weight.grad.abs().max() > 0
    finally:
        emma.stop_gradient = True
        emma.zero_grad()


def test_emma_frozen_branch_unchanged_after_training_step():
    model = EMMA(vit(), dan_branch())
    branch_state = {k: v.clone() for k, v in model.expr_branch.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for seed in range(2):
        b = batch(seed=seed)
        loss = MTLTask()(model(b["image"]), b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not any(p.requires_grad for p in model.expr_branch.parameters())
    for k, v in model.expr_branch.state_dict().items():
        assert torch.equal(v, branch_state[k]), f"{k} changed (BatchNorm drift?)"
    assert model.backbone.model.patch_embed.proj.weight.requires_grad


def test_emma_layer_decay_groups():
    model = EMMA(vit(), None)
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05,
                                         layer_decay=0.65)
    scales = {round(g.get("lr_scale", 1.0), 6) for g in opt.param_groups}
    assert len(scales) > 2, "layer decay silently off"


@pytest.mark.parametrize("labels", [LSD, ABAW_EXPR])
def test_cotex_views_masks_and_loss(labels):
    model = MaskedCoTEX(vit(), len(labels), mask_ratio=0.75)
    a, b = model.views
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    data = batch()
    data["expression"] = data["expression"] % len(labels)
    model.train()
    out = model(data["image"])
    assert out["expr_logits_1"].shape == (6, len(labels))
    # same weights, different random masks -> different predictions
    assert not torch.allclose(out["expr_logits_1"], out["expr_logits_2"])
    named = CoTEXTask(js_weight=0.5)(out, data)
    assert set(named) == {"ce_1", "ce_2", "js_loss", "loss"}
    assert named["js_loss"] > 0
    assert torch.allclose(named["loss"], named["ce_1"] + named["ce_2"] + 0.5 * named["js_loss"])
    named["loss"].backward()
    # eval: no masking, views identical at init -> averaged probs equal each view's
    model.eval()
    with torch.no_grad():
        ev = model(data["image"])
    # no optimiser step yet: unmasked views with the same weights agree exactly
    assert torch.allclose(ev["expr_logits_1"], ev["expr_logits_2"], atol=1e-6)
    p1 = torch.softmax(ev["expr_logits_1"], -1)
    p2 = torch.softmax(ev["expr_logits_2"], -1)
    assert torch.allclose(ev["expr_probs"], (p1 + p2) / 2)
    assert torch.allclose(ev["expr_probs"].sum(-1), torch.ones(6))


def test_cotex_eval_is_deterministic_and_unmasked():
    model = MaskedCoTEX(vit(), 6, mask_ratio=0.9).eval()
    x = batch()["image"]
    with torch.no_grad():
        a, b = model(x)["expr_probs"], model(x)["expr_probs"]
    assert torch.equal(a, b)


def test_cotex_rejects_cnn_and_bad_ratio():
    with pytest.raises(ValueError, match="ViT"):
        MaskedCoTEX(create_backbone("resnet18"), 6, mask_ratio=0.5)
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedCoTEX(vit(), 6, mask_ratio=1.0)


def test_cnn_baseline_with_same_heads():
    torch.manual_seed(0)
    model = EMMA(create_backbone("resnet18"), None).train()
    b = batch()
    b["image"] = torch.randn(6, 3, 64, 64)
    out = model(b["image"])
    assert torch.isfinite(MTLTask()(out, b)["loss"])


def test_timm_cnn_expression_branch_in_emma():
    torch.manual_seed(0)
    branch = ExpressionBranch(timm.create_model("resnet18", num_classes=7), FER2013)
    model = EMMA(vit(), branch)
    out = model(batch()["image"])
    assert out["expr_scores_cnn"].shape == (6, 8)


def test_ensemble_averages_probabilities_and_retunes_thresholds():
    members = [EMMA(vit(), None).eval() for _ in range(2)]
    x = batch()["image"]
    ens = Ensemble(members)(x)
    with torch.no_grad():
        outs = [m(x) for m in members]
    assert torch.allclose(ens["va"], (outs[0]["va"] + outs[1]["va"]) / 2)
    want = (torch.sigmoid(outs[0]["au_logits"]) + torch.sigmoid(outs[1]["au_logits"])) / 2
    assert torch.allclose(ens["au_probs"], want)
    assert torch.allclose(ens["expr_probs"].sum(-1), torch.ones(6))
    with pytest.raises(ValueError, match="member 1"):
        average_members([{"va": torch.zeros(1)}, {"au_probs": torch.zeros(1)}])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (200, 12))
    probs = np.clip(labels * 0.3 + rng.random((200, 12)) * 0.6, 0, 1)
    th = retune_au_thresholds(probs, labels)
    assert th.shape == (12,)
    tuned = metrics.au_f1_per_au(labels, metrics.binarize_au(probs, th)).mean()
    fixed = metrics.au_f1_per_au(labels, metrics.binarize_au(probs, 0.5)).mean()
    assert tuned >= fixed
