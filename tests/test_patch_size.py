"""Patch size: a ViT at another patch size than its name, and pretrained weights of patch
16 at 224 px resampled into a patch-8 48 px model (patch embedding and position grid)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed, resample_patch_embed

import affectkit.models.backbone as backbone_module
import affectkit.models.checkpoint as checkpoint_module
from affectkit.models.backbone import create_backbone
from affectkit.models.checkpoint import load_pretrained, save_mae_checkpoint

VIT = "vit_tiny_patch16_224"
D = 192  # ViT-Tiny width
GRID = 48 // 8  # 6x6 = 36 patch tokens


@pytest.fixture(scope="module")
def source_state() -> dict[str, torch.Tensor]:
    """A patch-16 224 px ViT-Tiny encoder, as pretraining would leave it."""
    torch.manual_seed(1)
    return timm.create_model(VIT, num_classes=0).state_dict()


def small(seed=2, **kw):
    torch.manual_seed(seed)
    return create_backbone(VIT, img_size=48, patch_size=8, pool="cls", **kw)


def test_patch8_vit_runs_36_tokens():
    bb = small().eval()
    assert tuple(bb.model.patch_embed.patch_size) == (8, 8)
    assert bb.model.patch_embed.proj.weight.shape == (D, 3, 8, 8)
    assert bb.model.pos_embed.shape == (1, 1 + GRID**2, D)
    assert bb.data_config["input_size"] == (3, 48, 48)
    x = torch.randn(2, 3, 48, 48)
    out = bb.forward_tokens(x)
    assert out["tokens"].shape == (2, 1 + 36, D) and out["keep_idx"].shape == (2, 36)
    assert bb(x).shape == (2, D)


def test_default_patch_size_is_the_models_own():
    bb = create_backbone(VIT, img_size=32)
    assert tuple(bb.model.patch_embed.patch_size) == (16, 16)


def test_cnn_refuses_a_patch_size():
    with pytest.raises(ValueError, match="resnet18 has no patches"):
        create_backbone("resnet18", patch_size=8)
    with pytest.raises(ValueError, match="resnet18 has no patches"):
        create_backbone("resnet18", img_size=64, patch_size=8)


def _check_resampled(bb, state):
    m = bb.model
    want_proj = resample_patch_embed(state["patch_embed.proj.weight"], [8, 8])
    assert m.patch_embed.proj.weight.shape == (D, 3, 8, 8)
    assert torch.allclose(m.patch_embed.proj.weight, want_proj)
    # pos_embed: CLS row kept, the 14x14 grid shrunk to 6x6 (antialiased, as timm does)
    want_pe = resample_abs_pos_embed(state["pos_embed"], [GRID, GRID], num_prefix_tokens=1)
    assert m.pos_embed.shape == (1, 1 + GRID**2, D)
    assert torch.equal(m.pos_embed[:, 0], state["pos_embed"][:, 0])
    assert torch.allclose(m.pos_embed, want_pe, atol=1e-6)
    # everything else loads as is
    assert torch.equal(m.patch_embed.proj.bias, state["patch_embed.proj.bias"])
    assert torch.equal(m.blocks[2].attn.qkv.weight, state["blocks.2.attn.qkv.weight"])
    assert bb.eval()(torch.randn(2, 3, 48, 48)).shape == (2, D)


def test_mae_checkpoint_of_patch16_loads_into_patch8(tmp_path, source_state):
    mae = dict(source_state, mask_token=torch.zeros(1, 1, 128),
               **{"decoder_embed.weight": torch.zeros(128, D)})
    path = save_mae_checkpoint(tmp_path / "mae.pth", mae)
    bb = small(pretrained=path)
    assert bb.load_report["missing"] == []
    assert {"mask_token", "decoder_embed.weight"} <= set(bb.load_report["dropped"])
    assert bb.data_config["mean"] == backbone_module.IMAGENET_MEAN
    _check_resampled(bb, source_state)


def test_timm_state_dict_of_patch16_loads_into_patch8(tmp_path, source_state):
    path = tmp_path / "timm.pth"
    torch.save(source_state, path)
    for given in (path, source_state):
        bb = small()
        report = load_pretrained(bb, given)
        assert report["missing"] == [] and report["dropped"] == []
        _check_resampled(bb, source_state)


def test_patch_size_only_keeps_the_grid(source_state):
    """Patch 8 at 112 px has the same 14x14 grid: pos_embed loads unchanged."""
    torch.manual_seed(3)
    bb = create_backbone(VIT, img_size=112, patch_size=8)
    load_pretrained(bb, source_state)
    assert torch.equal(bb.model.pos_embed, source_state["pos_embed"])
    assert bb.model.patch_embed.proj.weight.shape == (D, 3, 8, 8)


def _imports(module) -> set[str]:
    """Modules of the affectkit.models package that ``module`` imports, at any level."""
    names = set()
    for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_backbone_and_checkpoint_do_not_import_each_other():
    assert "checkpoint" in _imports(backbone_module)
    assert "backbone" not in _imports(checkpoint_module)


def test_config_refuses_a_bad_patch_size():
    from affectkit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="model.patch_size.*must be >= 1"):
        load_config("demo", ["model.patch_size=0"])
    with pytest.raises(ConfigError, match="model.patch_size.*expected"):
        load_config("demo", ["model.patch_size=eight"])
