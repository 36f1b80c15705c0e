"""Backbones: shapes, random token masking (kept counts, CLS, compute), MAE / checkpoint
loading and its failures, and layer-wise lr decay through wrappers."""

from __future__ import annotations

import argparse

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.optim import create_optimizer_v2
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from affectkit.models.backbone import (
    Backbone,
    create_backbone,
    prefixed_group_matcher,
    random_keep,
)
from affectkit.models.checkpoint import (
    load_pretrained,
    load_state_dict_file,
    save_checkpoint,
    save_mae_checkpoint,
)

VIT = "vit_tiny_patch16_224"
D = 192  # ViT-Tiny width


def vit(img_size=64, pool=None, seed=0, **kw) -> Backbone:
    torch.manual_seed(seed)
    return create_backbone(VIT, img_size=img_size, pool=pool, **kw)


def images(n=2, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- shapes ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("pool", ["cls", "avg"])
def test_vit_shapes(size, pool):
    bb = vit(size, pool)
    assert bb.is_vit and bb.pool == pool and bb.num_features == D
    assert bb.data_config["input_size"] == (3, size, size)
    x = images(2, size)
    assert bb(x).shape == (2, D)
    n = (size // 16) ** 2
    out = bb.forward_tokens(x)
    assert out["tokens"].shape == (2, 1 + n, D) and out["keep_idx"].shape == (2, n)


def test_eval_forward_is_timms_own():
    """The Backbone calls timm's ViT pieces in timm's order: same features as timm."""
    for pool in ("cls", "avg"):
        bb = vit(pool=pool).eval()
        x = images()
        with torch.no_grad():
            assert torch.equal(bb(x, mask_ratio=0.75), bb.model(x))


def test_cnn_shapes_and_no_masking():
    torch.manual_seed(0)
    bb = create_backbone("resnet18", img_size=64)
    assert not bb.is_vit and bb.pool == "avg" and bb.num_features == 512
    assert bb.data_config["input_size"] == (3, 64, 64)
    assert bb(images()).shape == (2, 512)
    with pytest.raises(ValueError, match="CNN"):
        bb(images(), mask_ratio=0.5)
    with pytest.raises(TypeError, match="not a ViT"):
        bb.forward_tokens(images())
    with pytest.raises(ValueError, match="CLS"):
        create_backbone("resnet18", pool="cls")


def test_paper_baselines_construct():
    got = {n: create_backbone(n).num_features for n in
           ("resnet50", "efficientnet_b2", "inception_v3", "vit_base_patch16_224")}
    assert got == {"resnet50": 2048, "efficientnet_b2": 1408, "inception_v3": 2048,
                   "vit_base_patch16_224": 768}
    with pytest.raises(ValueError, match="stochastic depth"):
        create_backbone("inception_v3", drop_path=0.1)


def test_timm_tag_offline_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="Offline.*local file"):
        create_backbone("vit_base_patch16_224", pretrained="timm:vit_base_patch16_224.mae")
    with pytest.raises(ValueError, match="another architecture"):
        create_backbone("vit_base_patch16_224", pretrained="timm:resnet50.a1_in1k")


# --- masking ---------------------------------------------------------------------------

def test_random_keep_keeps_prefix_and_gathers_patches():
    b, p, n = 3, 2, 20  # two prefix tokens (CLS + a register)
    tokens = torch.arange(n, dtype=torch.float32).repeat(b, 1)
    tokens = torch.cat([torch.full((b, p), -1.0), tokens], 1).unsqueeze(-1).expand(-1, -1, 4)
    kept, idx = random_keep(tokens, 0.75, p, torch.Generator().manual_seed(0))
    assert kept.shape == (b, p + 5, 4) and idx.shape == (b, 5)
    assert (kept[:, :p] == -1).all()
    assert torch.equal(kept[:, p:, 0], idx.float())  # patch j carries value j
    assert all(len(set(row.tolist())) == 5 for row in idx)
    same, all_idx = random_keep(tokens, 0.0, p)
    assert same is tokens and torch.equal(all_idx[0], torch.arange(n))
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="mask ratio"):
            random_keep(tokens, bad, p)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_masked_token_count(ratio):
    bb = vit().train()
    n = 16
    out = bb.forward_tokens(images(4), mask_ratio=ratio)
    k = max(1, round(n * (1 - ratio)))
    assert out["tokens"].shape == (4, 1 + k, D)
    assert out["keep_idx"].shape == (4, k)
    assert out["keep_idx"].min() >= 0 and out["keep_idx"].max() < n  # patch positions only
    assert bb(images(4), mask_ratio=ratio).shape == (4, D)


def test_cls_enters_the_blocks_first():
    bb = vit().train()
    seen = {}
    bb.model.blocks.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    bb.forward_tokens(images(3), mask_ratio=0.75)
    cls = (bb.model.cls_token + bb.model.pos_embed[:, :1]).expand(3, -1, -1)
    assert seen["x"].shape[1] == 1 + 4
    assert torch.allclose(seen["x"][:, :1], cls)


def test_masks_differ_per_sample_and_generator_reproduces():
    bb = vit().train()
    x = images(6)
    idx = bb.forward_tokens(x, mask_ratio=0.75)["keep_idx"]
    assert len({tuple(r.tolist()) for r in idx}) > 1
    runs = [bb(x, 0.75, torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])


def test_eval_never_masks():
    bb = vit().eval()
    x = images(2)
    out = bb.forward_tokens(x, mask_ratio=0.9)
    assert out["tokens"].shape == (2, 17, D)
    assert torch.equal(bb(x, mask_ratio=0.9), bb(x))


def test_masking_cuts_compute():
    bb = vit().train()
    x = images(2)
    flops = []
    for ratio in (0.0, 0.75):
        with FlopCounterMode(display=False) as counter:
            bb(x, mask_ratio=ratio)
        flops.append(counter.get_total_flops())
    assert flops[1] / flops[0] < 0.4, flops


# --- checkpoints -----------------------------------------------------------------------

def mae_file(tmp_path, source: Backbone, name="mae.pth"):
    """An official-format MAE pretraining checkpoint: encoder + decoder under "model"."""
    state = dict(source.model.state_dict())
    state.update({
        "mask_token": torch.zeros(1, 1, 32),
        "decoder_embed.weight": torch.randn(32, D),
        "decoder_pos_embed": torch.zeros(1, 17, 32),
        "decoder_blocks.0.norm1.weight": torch.ones(32),
        "decoder_blocks.0.attn.qkv.weight": torch.randn(96, 32),
        "decoder_norm.weight": torch.ones(32),
        "decoder_pred.weight": torch.randn(16 * 16 * 3, 32),
    })
    path = tmp_path / name
    torch.save({"model": state, "epoch": 399, "args": argparse.Namespace(mask_ratio=0.75)}, path)
    return path


def test_mae_round_trip_same_size(tmp_path):
    source = vit(seed=1).eval()
    path = mae_file(tmp_path, source)
    bb = vit(seed=2, pretrained=path).eval()
    assert bb.load_report["missing"] == [] and bb.load_report["unexpected"] == []
    assert "mask_token" in bb.load_report["dropped"]
    assert bb.data_config["mean"] == (0.485, 0.456, 0.406)  # MAE's normalisation
    x = images()
    with torch.no_grad():
        assert torch.equal(bb(x), source(x))


def test_mae_new_size_interpolates_pos_embed(tmp_path):
    source = vit(seed=1)
    path = mae_file(tmp_path, source)
    bb = vit(32, seed=2, pretrained=path)
    pe = bb.model.pos_embed
    assert pe.shape == (1, 1 + 4, D)
    assert torch.equal(pe[:, 0], source.model.pos_embed[:, 0])  # CLS row kept
    assert torch.allclose(pe[:, 1:].mean(), source.model.pos_embed[:, 1:].mean(), atol=0.05)
    assert torch.equal(bb.model.blocks[3].mlp.fc1.weight, source.model.blocks[3].mlp.fc1.weight)
    assert bb(images(2, 32)).shape == (2, D)
    big = vit(96, seed=2, pretrained=path)
    assert big.model.pos_embed.shape == (1, 1 + 36, D)


def test_mae_norm_becomes_fresh_fc_norm_for_global_pool(tmp_path):
    path = mae_file(tmp_path, vit(seed=1, pool="cls"))
    report = load_pretrained(vit(seed=2, pool="avg"), path)
    assert report["missing"] == ["fc_norm.weight", "fc_norm.bias"]
    assert {"norm.weight", "norm.bias"} <= set(report["dropped"])


def test_wrong_network_and_missing_or_misshapen_keys_fail(tmp_path):
    torch.manual_seed(0)
    resnet = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18").state_dict(), resnet)
    with pytest.raises(ValueError, match="no key of .*resnet.pth matches VisionTransformer"):
        vit(pretrained=resnet)
    state = vit(seed=1).model.state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("blocks.0.")}
    with pytest.raises(ValueError, match="lacks .*blocks.0"):
        load_pretrained(vit(), partial)
    report = load_pretrained(vit(), partial, strict_encoder=False)
    assert "blocks.0.attn.qkv.weight" in report["missing"]
    bad = dict(state, **{"blocks.1.mlp.fc1.weight": torch.zeros(10, D)})
    with pytest.raises(ValueError, match="shape mismatch.*blocks.1.mlp.fc1.weight"):
        load_pretrained(vit(), bad)


def test_not_a_checkpoint_fails_clearly(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="notes.pth is not a PyTorch checkpoint"):
        load_state_dict_file(text)
    good = tmp_path / "good.pth"
    torch.save({"a": torch.zeros(1000)}, good)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(good.read_bytes()[:600])
    with pytest.raises(ValueError, match="corrupt.pth is a corrupt or truncated"):
        load_state_dict_file(corrupt)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_state_dict_file(tmp_path / "absent.pth")
    odd = tmp_path / "odd.pth"
    torch.save({"net": {"w": torch.zeros(1)}, "epoch": 3}, odd)
    with pytest.raises(ValueError, match="odd.pth holds no state dict.*'net'"):
        load_state_dict_file(odd)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="broken.safetensors is not a readable safetensors"):
        load_state_dict_file(broken)


class Payload:  # stands for any pickled object a checkpoint should not carry
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(ValueError, match="evil.pth holds a pickled .*Payload.*weights_only"):
        load_state_dict_file(path)


def test_safetensors_ddp_prefix_and_affectkit_formats(tmp_path):
    source = vit(seed=1).eval()
    x = images()
    with torch.no_grad():
        want = source(x)
    state = source.model.state_dict()

    def same_output(path_or_state):
        bb = vit(seed=2).eval()
        load_pretrained(bb, path_or_state)
        with torch.no_grad():
            return torch.equal(bb(x), want)

    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, st)
    assert same_output(st)
    assert same_output(save_checkpoint(tmp_path / "a.safetensors", state, note="x"))
    ddp = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, ddp)
    assert set(load_state_dict_file(ddp)) == set(state)
    assert same_output(ddp)

    class Wrapper(nn.Module):  # an affectkit model: the backbone under a prefix, plus a head
        def __init__(self, bb):
            super().__init__()
            self.backbone, self.head = bb, nn.Linear(D, 8)

    ck = save_checkpoint(tmp_path / "run" / "last.pth", Wrapper(source).state_dict(), epoch=3)
    assert torch.load(ck, weights_only=True)["epoch"] == 3
    assert same_output(ck)
    assert same_output(source.state_dict())  # a Backbone's own "model." keys

    mae = save_mae_checkpoint(tmp_path / "mae.pth", state)
    assert set(torch.load(mae, weights_only=True)) == {"model"}
    assert same_output(mae)
    with pytest.raises(ValueError, match="backbone.model.state_dict"):
        save_mae_checkpoint(tmp_path / "x.pth", source.state_dict())


# --- layer-wise lr decay -----------------------------------------------------------------

def groups_by_name(model: nn.Module, **kw):
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.65, **kw)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in opt.param_groups for p in g["params"]}


def check_layer_decay(model: nn.Module, prefix: str):
    by_name = groups_by_name(model)
    scales = {round(g["lr_scale"], 6) for g in by_name.values()}
    assert len(scales) > 2, "layer decay silently off"
    lr = {n: g["lr_scale"] for n, g in by_name.items()}
    assert lr[f"{prefix}pos_embed"] < lr[f"{prefix}blocks.0.attn.qkv.weight"] \
        < lr[f"{prefix}blocks.11.attn.qkv.weight"] <= 1.0
    for name in ("pos_embed", "cls_token", "norm.weight", "blocks.0.norm1.weight",
                 "blocks.0.attn.qkv.bias", "patch_embed.proj.bias"):
        assert by_name[prefix + name]["weight_decay"] == 0.0, name
    assert by_name[f"{prefix}blocks.0.mlp.fc1.weight"]["weight_decay"] == 0.05


class Wrapped(nn.Module):
    def __init__(self, bb: Backbone):
        super().__init__()
        self.backbone = bb
        self.head = nn.Linear(bb.num_features, 3)

    def group_matcher(self, coarse: bool = False):
        return prefixed_group_matcher("backbone", self.backbone.group_matcher(coarse))

    def no_weight_decay(self):
        return {f"backbone.{k}" for k in self.backbone.no_weight_decay()}


def test_layer_decay_backbone_and_wrapper():
    check_layer_decay(vit(32), "model.")
    wrapped = Wrapped(vit(32))
    check_layer_decay(wrapped, "backbone.model.")
    assert groups_by_name(wrapped)["head.weight"]["lr_scale"] == 1.0


def test_layer_decay_trap_without_forwarding():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = vit(32)

    by_name = groups_by_name(Plain())
    assert {g["lr_scale"] for g in by_name.values()} == {1.0}  # the trap the helper avoids


def test_prefixed_matcher_with_regex_prefix_and_callable():
    views = nn.Module()
    views.views = nn.ModuleList([vit(32), vit(32)])
    views.group_matcher = lambda coarse=False: prefixed_group_matcher(
        r"views\.\d+", views.views[0].group_matcher(coarse))
    by_name = groups_by_name(views)
    lr = {n.removeprefix("views."): g["lr_scale"] for n, g in by_name.items()}
    assert lr["0.model.blocks.3.attn.qkv.weight"] == lr["1.model.blocks.3.attn.qkv.weight"]
    assert lr["1.model.blocks.0.attn.qkv.weight"] < lr["1.model.blocks.5.mlp.fc1.weight"]
    call = prefixed_group_matcher("backbone", lambda name: (int(name.startswith("x")),))
    assert call("backbone.x.w") == (1,) and call("head.w") == (float("inf"),)
