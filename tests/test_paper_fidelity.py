"""The four places where the models once differed from the ABAW4 paper, pinned.

1. EMMA never runs with a random (unloaded) frozen AffectNet branch.
2. EMMA's VA head reads the paper's pre-softmax scores, the CNN's own logits unchanged.
3. vit-mtl / cnn-mtl are Table 1's fine-tuned baselines: the VA loss reaches the backbone.
4. CoTEX recipes: colour jitter on, cotex-expr at 232, the batch reading stated, JS over
   labelled rows by default.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from affectkit.config import ConfigError, check_paths, load_config
from affectkit.engine.build import build_model, build_task
from affectkit.labels import AFFECTNET8
from affectkit.losses import js_divergence
from affectkit.models import DAN, EMMA, ExpressionBranch, MultiTaskBaseline, create_backbone
from affectkit.tasks import CoTEXTask, MTLTask

IMG = 32


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, IMG, IMG, generator=g),
            "va": torch.rand(n, 2, generator=g) * 2 - 1,
            "expression": torch.randint(0, 8, (n,), generator=g),
            "au": torch.randint(0, 2, (n, 12), generator=g).float()}


def _vit():
    torch.manual_seed(0)
    return create_backbone("vit_tiny_patch16_224", img_size=IMG)


# ---------------------------------------------------------------- 1. no random branch


def test_emma_without_branch_checkpoint_is_a_config_error():
    cfg = load_config("emma-mtl", ["data.root=/x", "model.pretrained=null"])
    with pytest.raises(ConfigError, match="model.expr_branch_checkpoint") as err:
        check_paths(cfg)
    assert "affecnet8_epoch5_acc0.6209.pth" in str(err.value)
    with pytest.raises(ConfigError, match="model.expr_branch_checkpoint"):
        build_model(cfg, img_size=IMG)
    # an explicit null is refused at load time, naming the key and the file it wants
    with pytest.raises(ConfigError, match="model.expr_branch_checkpoint.*AffectNet weights"):
        load_config("emma-mtl", ["model.expr_branch_checkpoint=null"])
    # no branch at all is a valid EMMA (and needs no checkpoint)
    assert load_config("emma-mtl", ["model.expr_branch=null"]).model.expr_branch_checkpoint \
        is None


def test_dry_run_without_branch_checkpoint_exits_non_zero(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "affectkit.cli", "train", "emma-mtl", f"data.root={tmp_path}",
         "model.pretrained=null", "--dry-run"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "model.expr_branch_checkpoint" in proc.stdout + proc.stderr


def test_emma_loads_its_branch_from_the_checkpoint(tmp_path):
    torch.manual_seed(3)
    dan = DAN()
    path = tmp_path / "affecnet8.pth"
    torch.save({"model_state_dict": dan.state_dict()}, path)
    cfg = load_config("emma-mtl", ["data.root=/x", "model.pretrained=null",
                                   "model.backbone=vit_tiny_patch16_224",
                                   f"model.expr_branch_checkpoint={path}"])
    model = build_model(cfg, img_size=IMG)
    loaded = model.expr_branch.cnn.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in dan.state_dict().items())


# ---------------------------------------------------------------- 2. VA reads logits


class _FixedCNN(torch.nn.Module):
    """A 'CNN' whose 8 AffectNet logits are known: the VA head must see them as they are."""

    input_size = IMG

    def __init__(self):
        super().__init__()
        self.register_buffer("out", torch.linspace(-3, 4, 8))

    def forward(self, x):
        return self.out.expand(len(x), -1)


@pytest.mark.parametrize("va_inputs", ["logits", "probs"])
def test_va_head_reads_the_scores(va_inputs):
    branch = ExpressionBranch(_FixedCNN(), AFFECTNET8)
    model = EMMA(_vit(), branch, va_inputs=va_inputs).eval()
    seen = {}
    model.va_head.register_forward_hook(lambda m, i, o: seen.setdefault("z", i[0]))
    with torch.no_grad():
        out = model(_batch()["image"])
    z = seen["z"]
    assert z.shape == (6, 12 + 8 + 8)  # p_AU, p_EXP1, the CNN's own 8 AffectNet scores
    cnn = torch.linspace(-3, 4, 8).expand(6, -1)
    if va_inputs == "logits":
        torch.testing.assert_close(z[:, :12], out["au_logits"])
        torch.testing.assert_close(z[:, 12:20], out["expr_logits"])
        torch.testing.assert_close(z[:, 20:], cnn)  # unchanged: no renormalising, no 0 column
    else:
        torch.testing.assert_close(z[:, :12], torch.sigmoid(out["au_logits"]))
        torch.testing.assert_close(z[:, 12:20], torch.softmax(out["expr_logits"], -1))
        torch.testing.assert_close(z[:, 20:], torch.softmax(cnn, -1))  # all 8, Contempt too
    torch.testing.assert_close(out["expr_logits_cnn"], cnn)


def test_va_inputs_config_reaches_the_model(tmp_path):
    path = tmp_path / "dan.pth"
    torch.save(DAN().state_dict(), path)
    common = ["data.root=/x", "model.pretrained=null", "model.backbone=vit_tiny_patch16_224",
              f"model.expr_branch_checkpoint={path}"]
    assert build_model(load_config("emma-mtl", common), IMG).va_inputs == "logits"
    assert build_model(load_config("emma-mtl", [*common, "model.va_inputs=probs"]),
                       IMG).va_inputs == "probs"
    with pytest.raises(ConfigError, match="model.va_inputs"):
        load_config("emma-mtl", [*common, "model.va_inputs=softmax"])


# ---------------------------------------------------------------- 3. Table 1 baselines


def _va_grad_reaches_backbone(model) -> bool:
    model.train()
    model.zero_grad()
    b = _batch()
    MTLTask(au_weight=0, expr_weight=0)(model(b["image"]), b)["loss"].backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    return any(g.abs().max() > 0 for g in grads)


def test_va_loss_reaches_the_backbone_in_the_baseline_not_in_emma():
    cfg = load_config("vit-mtl", ["data.root=/x", "model.pretrained=null",
                                  "model.backbone=vit_tiny_patch16_224"])
    baseline = build_model(cfg, img_size=IMG)
    assert isinstance(baseline, MultiTaskBaseline)
    assert _va_grad_reaches_backbone(baseline)
    emma = EMMA(_vit(), ExpressionBranch(DAN(), AFFECTNET8))
    assert not _va_grad_reaches_backbone(emma)


def test_cnn_baseline_is_fine_tuned_from_features():
    cfg = load_config("cnn-mtl", ["data.root=/x", "model.pretrained=null",
                                  "model.backbone=resnet18"])
    model = build_model(cfg, img_size=IMG)
    assert isinstance(model, MultiTaskBaseline) and model.va_head.in_features == 512
    assert _va_grad_reaches_backbone(model)
    with pytest.raises(ConfigError, match="model.stop_gradient"):
        load_config("cnn-mtl", ["model.stop_gradient=true"])


# ---------------------------------------------------------------- 4. CoTEX recipe


def test_cotex_recipes_follow_section_4_2():
    lsd, expr = load_config("cotex-lsd"), load_config("cotex-expr")
    for cfg in (lsd, expr):
        assert cfg.data.jitter > 0 and cfg.data.hue > 0  # colour jitter in all training
        assert (cfg.optim.batch_size, cfg.optim.accum_steps) == (1024, 4)  # effective 4096
        assert cfg.model.js_rows == "labelled"
    assert (lsd.data.resize, expr.data.resize) == (228, 232)


def test_js_uses_labelled_rows_unless_all():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    target = torch.tensor([0, -1, 2, -1])
    out = {"expr_logits_1": a, "expr_logits_2": b}
    labelled = CoTEXTask(js_rows="labelled")(out, {"expression": target})["js_loss"]
    every = CoTEXTask(js_rows="all")(out, {"expression": target})["js_loss"]
    torch.testing.assert_close(labelled, js_divergence(a[[0, 2]], b[[0, 2]]))
    torch.testing.assert_close(every, js_divergence(a, b))
    none = CoTEXTask()(out, {"expression": torch.full((4,), -1)})["js_loss"]
    assert none.item() == 0
    cfg = load_config("cotex-lsd", ["data.root=/x", "model.js_rows=all"])
    assert build_task(cfg).js_rows == "all"
