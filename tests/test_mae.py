"""MAE pretraining: the model's pieces, the images layout, the Job in the shared loop, the
exported encoder in EMMA and CoTEX, and (must-show) learning on real FER2013 faces."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torchvision.io import decode_png

from affectkit.config import ConfigError, load_config
from affectkit.data.discover import open_dataset
from affectkit.data.errors import DataError
from affectkit.data.folders import drop_corrupt, extract_archives, read_image_tree
from affectkit.engine.build import build_model, open_splits
from affectkit.engine.evaluation import infer
from affectkit.engine.loop import SimulatedKill, read_metrics, seed_everything, train
from affectkit.engine.optim import build_optimizer
from affectkit.engine.pretrain import (
    ENCODER,
    build_mae_job,
    build_mae_model,
    export_encoder,
    recon_grid,
    write_recon_grid,
)
from affectkit.models.backbone import create_backbone, num_kept
from affectkit.models.checkpoint import load_pretrained, load_state_dict_file, save_checkpoint
from affectkit.models.cotex import MaskedCoTEX
from affectkit.models.emma import EMMA
from affectkit.models.mae import (
    MAE,
    masked_patch_loss,
    normalize_patches,
    patchify,
    sincos_pos_embed_2d,
    unpatchify,
)
from affectkit.tasks import MAETask

TINY = "vit_tiny_patch16_224"


@pytest.fixture(autouse=True)
def _one_thread():
    """2-core machine shared with other jobs: one intra-op thread is faster and steadier."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_mae(img_size: int = 32, ratio: float = 0.75, norm_pix: bool = True, seed: int = 0,
             eval_seed: int = 0) -> MAE:
    torch.manual_seed(seed)
    enc = create_backbone(TINY, img_size=img_size, pool="cls")
    return MAE(enc, decoder_dim=64, decoder_depth=1, decoder_heads=4, mask_ratio=ratio,
               norm_pix_loss=norm_pix, eval_seed=eval_seed)


def mae_cfg(root, out, *extra):
    """The CPU recipe made smaller still: 32 px (4 patches, 1 visible), batch 8."""
    return load_config("mae-face-tiny", [f"data.root={root}", f"run.out_dir={out}",
                                         "data.img_size=32", "data.resize=32",
                                         "optim.batch_size=8", "optim.epochs=2",
                                         "mae.decoder_dim=32", "mae.decoder_depth=1",
                                         "mae.recon_images=3", "run.log_every=2", *extra])


# ----------------------------------------------------------------------------- pieces


@pytest.mark.parametrize("shape, patch", [((2, 3, 32, 32), 16), ((1, 3, 24, 40), 8),
                                          ((3, 1, 16, 16), 4)])
def test_patchify_round_trip(shape, patch):
    x = torch.randn(shape)
    p = patchify(x, patch)
    grid = (shape[2] // patch, shape[3] // patch)
    assert p.shape == (shape[0], grid[0] * grid[1], patch * patch * shape[1])
    assert torch.equal(unpatchify(p, patch, grid, shape[1]), x)


def test_patchify_is_the_official_order():
    """MAE's patchify: einsum nchpwq->nhwpqc (pixels row, col, channel within a patch)."""
    x = torch.randn(2, 3, 32, 48)
    p, h, w = 16, 2, 3
    ref = torch.einsum("nchpwq->nhwpqc", x.reshape(2, 3, h, p, w, p)).reshape(2, h * w, p * p * 3)
    assert torch.equal(patchify(x, p), ref)
    with pytest.raises(ValueError, match="whole number"):
        patchify(torch.zeros(1, 3, 30, 32), 16)


def test_sincos_matches_the_official_numpy():
    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gs, dim = 7, 64
    grid = np.stack(np.meshgrid(np.arange(gs, dtype=np.float32),
                                np.arange(gs, dtype=np.float32)), 0).reshape(2, 1, gs, gs)
    ref = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    assert np.abs(sincos_pos_embed_2d(dim, (gs, gs)).numpy() - ref).max() < 1e-6


def test_loss_counts_masked_patches_only():
    torch.manual_seed(0)
    target, pred = torch.randn(4, 16, 12), torch.randn(4, 16, 12)
    mask = torch.zeros(4, 16)
    mask[:, :12] = 1
    loss, per_sample = masked_patch_loss(pred, target, mask)
    changed = pred.clone()
    changed[:, 12:] += 100.0  # visible patches: no effect
    assert torch.equal(masked_patch_loss(changed, target, mask)[0], loss)
    changed[:, 0] += 1.0  # a masked patch: counts
    assert masked_patch_loss(changed, target, mask)[0] > loss
    manual = ((pred - target) ** 2).mean(-1)[:, :12].mean(1)
    assert torch.allclose(per_sample, manual) and torch.allclose(loss, manual.mean())


def test_model_loss_uses_normalised_pixels_of_masked_patches():
    model = tiny_mae(img_size=64).eval()
    x = torch.randn(3, 3, 64, 64)
    out = model(x)
    target = normalize_patches(patchify(x, 16))[0]
    per_patch = ((out["pred"] - target) ** 2).mean(-1)
    m = out["mask"]
    assert torch.allclose(out["loss"], (per_patch * m).sum() / m.sum(), atol=1e-6)
    assert torch.allclose(out["loss_per_sample"], (per_patch * m).sum(1) / m.sum(1), atol=1e-6)
    assert torch.allclose(target.var(-1), torch.ones(3, 16), atol=1e-3)
    raw = tiny_mae(img_size=64, norm_pix=False).eval()
    assert torch.equal(raw.target(x), patchify(x, 16))
    assert MAETask()(out, {})["loss"] is out["loss"]


@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9])
def test_mask_ratio_honoured(ratio):
    model = tiny_mae(img_size=64, ratio=ratio).train()
    out = model(torch.randn(6, 3, 64, 64))
    k = num_kept(16, ratio)
    assert out["keep_idx"].shape == (6, k)
    assert (out["mask"].sum(1) == 16 - k).all()
    visible = out["mask"].gather(1, out["keep_idx"])
    assert (visible == 0).all()  # the kept positions are exactly the unmasked ones
    assert len({tuple(r.tolist()) for r in out["keep_idx"]}) > 1  # drawn per sample
    for bad in (0.0, 0.01, 1.0):  # 0.01 of 16 patches rounds to none hidden
        with pytest.raises(ValueError, match="hide at least one"):
            model(torch.randn(1, 3, 64, 64), mask_ratio=bad)


def test_eval_masks_are_deterministic_and_leave_the_global_rng_alone():
    model = tiny_mae(img_size=64, eval_seed=5)
    x = torch.randn(4, 3, 64, 64)
    model.eval()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = model(x), model(x)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["loss"], b["loss"])
    other = tiny_mae(img_size=64, eval_seed=6).eval()
    assert not torch.equal(other(x)["mask"], a["mask"])
    model.train()
    assert not torch.equal(model(x)["mask"], model(x)["mask"])  # training: fresh masks


def test_encoder_runs_on_visible_tokens_only():
    model = tiny_mae(img_size=64).eval()
    latent, keep = model.forward_encoder(torch.randn(2, 3, 64, 64), 0.75)
    assert latent.shape == (2, 1 + 4, 192) and keep.shape == (2, 4)


def test_decoder_key_names_are_the_official_ones():
    state = tiny_mae().official_state_dict()
    decoder = {k.split(".")[0] for k in state if k.startswith(("decoder", "mask"))}
    assert decoder == {"decoder_embed", "mask_token", "decoder_pos_embed", "decoder_blocks",
                       "decoder_norm", "decoder_pred"}
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight",
            "decoder_blocks.0.attn.qkv.weight", "decoder_pred.weight"} <= set(state)
    assert not any(k.startswith("encoder.") for k in state)


def test_optimizer_groups_pos_embeds_frozen_tokens_not_decayed():
    model = tiny_mae()
    opt = build_optimizer(model, 1e-3, 0.05, None, (0.9, 0.95))
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    no_decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0
                for p in g["params"]}
    everything = decay | no_decay
    assert "encoder.model.pos_embed" not in everything  # fixed sin-cos, as in MAE
    assert "decoder_pos_embed" not in everything
    assert {"mask_token", "encoder.model.cls_token", "encoder.model.norm.weight",
            "decoder_norm.weight", "encoder.model.blocks.0.attn.qkv.bias"} <= no_decay
    assert {"decoder_embed.weight", "encoder.model.blocks.0.attn.qkv.weight"} <= decay
    layered = build_optimizer(model, 1e-3, 0.05, 0.75)  # group_matcher reaches the encoder
    assert len({g["lr_scale"] for g in layered.param_groups}) == 12 + 2


# ----------------------------------------------------------------------------- export


def test_exported_encoder_is_the_official_format(tmp_path):
    model = tiny_mae(img_size=64)
    path = export_encoder(model, tmp_path / "encoder.pth")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"model"}
    fresh = timm.create_model(TINY, num_classes=0, img_size=64, global_pool="token")
    assert set(raw["model"]) == set(fresh.state_dict())
    assert not any(k.startswith(("head", "decoder", "mask_token")) for k in raw["model"])
    assert {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "cls_token", "pos_embed",
            "norm.weight"} <= set(raw["model"])


def _same_encoder(backbone, source: MAE) -> None:
    got, want = backbone.model.state_dict(), source.encoder.model.state_dict()
    for k in ("patch_embed.proj.weight", "blocks.11.mlp.fc2.weight", "cls_token"):
        assert torch.equal(got[k], want[k]), k


def test_encoder_loads_into_emma_and_cotex_with_no_missing_encoder_keys(tmp_path):
    source = tiny_mae(img_size=64, seed=3)
    path = export_encoder(source, tmp_path / "encoder.pth")
    common = ["model.backbone=vit_tiny_patch16_224", f"model.pretrained={path}",
              "model.drop_path=0.0", "data.img_size=64"]
    emma = build_model(load_config("vit-mtl", [*common, "model.kind=emma"]))
    assert isinstance(emma, EMMA) and emma.expr_branch is None
    report = emma.backbone.load_report
    assert report["missing"] == ["fc_norm.weight", "fc_norm.bias"]  # MAE's fresh pooled norm
    _same_encoder(emma.backbone, source)
    cotex = build_model(load_config("cotex-lsd", common))
    assert isinstance(cotex, MaskedCoTEX)
    for view in cotex.views:
        assert [k for k in view.load_report["missing"] if not k.startswith("fc_norm")] == []
        _same_encoder(view, source)
    bigger = build_model(load_config("vit-mtl", [*common[:3], "data.img_size=96"]))
    assert bigger.backbone.model.pos_embed.shape == (1, 1 + 36, 192)  # resampled 4x4 -> 6x6


def test_full_training_checkpoint_also_loads_as_encoder(tmp_path):
    """best.pt holds the whole MAE (encoder.model.* and decoder_*): its encoder loads too."""
    source = tiny_mae(img_size=64, seed=4)
    path = save_checkpoint(tmp_path / "best.pt", source.state_dict(), epoch=0)
    vit = create_backbone(TINY, img_size=64, pool="cls")
    report = load_pretrained(vit, path)
    assert report["missing"] == []
    assert any(k.startswith("decoder_") for k in report["dropped"])
    _same_encoder(vit, source)


def test_recon_grid_shapes_and_atomic_png(tmp_path):
    model = tiny_mae(img_size=32)
    x = torch.randn(3, 3, 32, 32)
    grid = recon_grid(model, x, min_side=96)
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    assert grid.shape[1:] == (2 + 3 * (96 + 2), 2 + 3 * (96 + 2))  # 3 rows x 3 columns
    model.train()
    path = write_recon_grid(model, x, tmp_path / "recon" / "epoch_000.png")
    assert model.training  # restored
    assert torch.equal(decode_png(torch.frombuffer(bytearray(path.read_bytes()),
                                                   dtype=torch.uint8)), grid)
    assert [p.name for p in path.parent.iterdir()] == ["epoch_000.png"]  # no temp file left


def test_reconstruction_pastes_visible_patches_back():
    model = tiny_mae(img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    masked, recon = model.reconstruct(x, out["pred"], out["mask"])
    vis = (1 - out["mask"]).bool()
    assert torch.allclose(patchify(recon, 16)[vis], patchify(x, 16)[vis])
    assert (patchify(masked, 16)[~vis] == 0).all()
    # norm-pix: a perfect prediction of the normalised target gives back the input
    perfect = normalize_patches(patchify(x, 16))[0]
    assert torch.allclose(model.reconstruct(x, perfect, out["mask"])[1], x, atol=1e-4)


# ----------------------------------------------------------------------------- config


def test_mae_recipes():
    big, tiny = load_config("mae-face"), load_config("mae-face-tiny")
    m, o, mae = big.model, big.optim, big.mae
    assert (m.kind, m.backbone, m.mask_ratio, m.pool, m.drop_path) == (
        "mae", "vit_base_patch16_224", 0.75, "cls", 0.0)
    assert (mae.decoder_dim, mae.decoder_depth, mae.decoder_heads, mae.norm_pix_loss) == (
        512, 8, 16, True)
    assert (o.base_lr, o.weight_decay, o.betas, o.layer_decay, o.clip_grad) == (
        1.5e-4, 0.05, (0.9, 0.95), None, None)
    assert o.batch_size * o.accum_steps == 4096 and (o.epochs, o.warmup_epochs) == (800, 40)
    assert (big.data.layout, big.data.img_size) == ("images", 224)
    assert tiny.model.backbone == TINY and tiny.data.img_size <= 112
    assert tiny.data.num_workers <= 2 and tiny.mae.decoder_depth <= 2


@pytest.mark.parametrize("override, key", [
    ("model.mask_ratio=0.0", "model.mask_ratio"), ("model.pool=avg", "model.pool"),
    ("data.jitter=0.4", "data.jitter"), ("mae.decoder_heads=5", "mae.decoder_dim"),
    ("mae.crop_scale=[0.5, 0.2]", "mae.crop_scale"), ("data.corrupt=maybe", "data.corrupt"),
    ("mae.decoder_dimm=3", "mae.decoder_dim"),
])
def test_mae_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("mae-face", [override])


# ----------------------------------------------------------------------------- images layout


def _image_bytes(fmt: str, size=(20, 16), value=120) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (value, 60, 200)).save(buf, fmt)
    return buf.getvalue()


def _tree(root: Path) -> Path:
    """Nested folders, five formats, a hidden file, a non-image and a zip of two images."""
    files = {"a/b/c/one.jpg": "JPEG", "a/two.PNG": "PNG", "three.bmp": "BMP",
             "a/b/four.webp": "WEBP", "gray.png": "PNG"}
    for name, fmt in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_image_bytes(fmt))
    Image.new("L", (10, 10), 90).save(root / "gray.png")  # grayscale: read as RGB
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.jpg").write_bytes(_image_bytes("JPEG"))
    with zipfile.ZipFile(root / "a" / "more.zip", "w") as z:
        z.writestr("z/five.jpg", _image_bytes("JPEG"))
        z.writestr("z/six.png", _image_bytes("PNG"))
    return root


def test_images_layout_recursive_mixed_formats_and_zips(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFECTKIT_CACHE", str(tmp_path / "cache"))
    root = _tree(tmp_path / "faces")
    tables = open_dataset(root, "images")
    assert set(tables) == {"images/train", "images/val"}
    train, val = tables["images/train"], tables["images/val"]
    names = sorted(Path(i).name for i in train.images + val.images)
    assert names == ["five.jpg", "four.webp", "gray.png", "one.jpg", "six.png", "three.bmp",
                     "two.PNG"]
    assert len(val) == 1 and not set(val.images) & set(train.images)
    assert (train.expression == -1).all() and (train.va == -5).all()
    for t in (train, val):  # every listed image reads (loose ones relative, zipped absolute)
        assert drop_corrupt(t) is t
    again = read_image_tree(root)
    assert again["val"].images == val.images  # deterministic held-out set


def test_images_layout_held_out_share_is_small_and_capped(tmp_path):
    from affectkit.data.folders import _held_out

    for n, expected in ((1, 0), (2, 1), (100, 2), (1000, 20), (100_000, 256)):
        images = [f"d{i % 7}/{i}.jpg" for i in range(n)]
        val = _held_out(images, 0.02, 256)
        assert val.sum() == expected
        assert np.array_equal(_held_out(images[::-1], 0.02, 256)[::-1], val)  # order-free


def test_images_layout_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        read_image_tree(tmp_path / "empty")
    with pytest.raises(DataError, match="not a directory"):
        read_image_tree(tmp_path / "nowhere")
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "x.jpg").write_bytes(_image_bytes("JPEG"))
    with pytest.raises(DataError, match="layout 'images'"):  # named, never auto-detected
        open_dataset(tmp_path / "faces")


@pytest.fixture
def tree_with_corrupt(tmp_path):
    root = tmp_path / "faces"
    for i in range(6):
        (root / f"s{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"s{i % 2}" / f"{i}.jpg").write_bytes(_image_bytes("JPEG", value=20 * i))
    (root / "s1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    (root / "s0" / "empty.png").write_bytes(b"")
    return root


def test_corrupt_image_is_an_error_naming_the_file(tree_with_corrupt):
    table = read_image_tree(tree_with_corrupt, val_fraction=0)["train"]
    with pytest.raises(DataError) as e:
        drop_corrupt(table)
    msg = str(e.value)
    assert str(tree_with_corrupt / "s0" / "empty.png") in msg
    assert "1 more corrupt" in msg and "data.corrupt=skip" in msg


def test_corrupt_images_skipped_explicitly_named_and_counted(tree_with_corrupt, caplog):
    table = read_image_tree(tree_with_corrupt, val_fraction=0)["train"]
    with caplog.at_level(logging.WARNING, logger="affectkit.data.folders"):
        kept = drop_corrupt(table, "skip")
    assert len(kept) == 6 and kept.skipped["corrupt images"] == 2
    assert not any(i.endswith(("broken.jpg", "empty.png")) for i in kept.images)
    text = caplog.text
    assert str(tree_with_corrupt / "s1" / "broken.jpg") in text
    assert str(tree_with_corrupt / "s0" / "empty.png") in text
    assert "2 corrupt image(s) skipped" in text


def test_pretraining_job_skips_corrupt_with_config_option(tree_with_corrupt, tmp_path):
    cfg = mae_cfg(tree_with_corrupt, tmp_path / "run", "data.layout=images",
                  "optim.batch_size=2")
    with pytest.raises(DataError, match="cannot decode"):
        build_mae_job(cfg, open_splits(cfg))
    cfg = mae_cfg(tree_with_corrupt, tmp_path / "run", "data.layout=images",
                  "optim.batch_size=2", "data.corrupt=skip")
    job = build_mae_job(cfg, open_splits(cfg))
    assert len(job.train_ds) + len(job.val_ds) == 6
    assert job.train_ds[0]["image"].shape == (3, 32, 32)


# ----------------------------------------------------------------------------- the loop


@pytest.mark.parametrize("layout", ["mtl", "per-video"])
def test_abaw_image_lists_pretrain_with_labels_ignored(sample, tmp_path, layout):
    cfg = mae_cfg(sample["root"], tmp_path / layout, f"data.layout={layout}", "optim.epochs=1")
    run = train(cfg, progress=False)
    rows = read_metrics(run)
    assert len(rows) == 1 and set(rows[0]["val"]) == {"recon_loss", "score"}
    assert rows[0]["val"]["score"] == -rows[0]["val"]["recon_loss"] > -10
    assert (run / ENCODER).is_file() and (run / "recon" / "epoch_000.png").is_file()
    assert (run / "best.pt").is_file()


def test_pretraining_with_crops_batched_on_the_device(sample, tmp_path):
    """data.augment=batch: MAE's random-resized crops and flips run on the whole uint8
    batch on the training device; the run trains, validates and exports as usual."""
    from affectkit.engine.build import build_job

    cfg = mae_cfg(sample["root"], tmp_path / "run", "data.layout=mtl", "optim.epochs=1",
                  "data.augment=batch")
    job = build_job(cfg, device="cpu")
    assert job.augment is not None and job.augment.scale == cfg.mae.crop_scale
    assert job.train_ds[0]["image"].dtype == torch.uint8
    assert job.augment(torch.stack([job.train_ds[i]["image"] for i in range(2)])).shape == (
        2, 3, 32, 32)
    run = train(cfg, progress=False)
    rows = read_metrics(run)
    assert len(rows) == 1 and np.isfinite(rows[0]["train"]["loss"])
    assert (run / ENCODER).is_file()


def test_pretraining_kill_and_resume_is_bitwise_identical(sample, tmp_path):
    """Masks, crops and flips come from the restored RNGs; eval masks from their own."""
    cfg = mae_cfg(sample["root"], tmp_path / "ref", "data.layout=mtl", "optim.batch_size=4")
    ref = train(cfg, progress=False)  # 21 images, batch 4: 5 steps an epoch, 10 in all
    cut = mae_cfg(sample["root"], tmp_path / "cut", "data.layout=mtl", "optim.batch_size=4")
    with pytest.raises(SimulatedKill):
        train(cut, stop_after_steps=7, progress=False)
    train(cut, progress=False)
    a = load_state_dict_file(ref / ENCODER)
    b = load_state_dict_file(tmp_path / "cut" / ENCODER)
    assert all(torch.equal(a[k], b[k]) for k in a)
    def rows(run):
        return [{k: v for k, v in r.items() if k not in ("img_per_s", "data_wait")}
                for r in read_metrics(run)]

    assert rows(ref) == rows(tmp_path / "cut")


def test_pretrain_on_real_fer2013_faces_loss_falls(shared_data, tmp_path):
    """Must-show: a tiny ViT pretrained by MAE for 36 steps on 384 real FER2013 training
    faces reconstructs the held-out faces' masked patches better than at the start and
    better than predicting each patch's own mean (norm-pix target 0, loss ~1.0: the model
    has learned face structure, not just the output scale); its encoder then loads into
    EMMA and CoTEX with no missing encoder weights."""
    train_dir = extract_archives([shared_data / "fer2013" / "train.zip"])
    tables = read_image_tree(train_dir)
    pick = np.linspace(0, len(tables["train"]) - 1, 384).round().astype(int)  # every class
    train_t = tables["train"].subset(pick)
    val_t = tables["val"].subset(np.arange(32))
    cfg = load_config("mae-face-tiny", [
        f"data.root={train_dir}", f"run.out_dir={tmp_path / 'run'}", "data.img_size=64",
        "data.resize=64", "optim.batch_size=32", "optim.epochs=3", "optim.warmup_epochs=1",
        "mae.recon_images=4"])
    seed_everything(cfg.run.seed)  # the loop's initial weights, to measure the start
    start = build_mae_job(cfg, (train_t, val_t))
    before = float(np.mean(infer(start.model, start.val_ds, start.collect,
                                 batch_size=32)["recon_loss"]))
    faces = torch.stack([start.val_ds[i]["image"] for i in range(len(start.val_ds))])
    patch_mean_loss = float(normalize_patches(patchify(faces, 16))[0].pow(2).mean())
    run = train(cfg, tables=(train_t, val_t), progress=False)
    rows = read_metrics(run)
    val = [r["val"]["recon_loss"] for r in rows]
    tr = [r["train"]["loss"] for r in rows]
    assert len(rows) == 3
    assert val[-1] < before - 0.15, (before, val)
    assert val[-1] < patch_mean_loss - 0.04, (patch_mean_loss, val)
    assert tr[-1] < tr[0], tr
    for e in range(3):
        png = (run / "recon" / f"epoch_{e:03d}.png").read_bytes()
        assert decode_png(torch.frombuffer(bytearray(png), dtype=torch.uint8)).shape[0] == 3
    common = ["model.backbone=vit_tiny_patch16_224", f"model.pretrained={run / ENCODER}",
              "data.img_size=64"]
    emma = build_model(load_config("vit-mtl", [*common, "model.kind=emma"]))
    cotex = build_model(load_config("cotex-lsd", common))
    for backbone in (emma.backbone, *cotex.views):
        assert [k for k in backbone.load_report["missing"] if not k.startswith("fc_norm")] == []
    encoder = load_state_dict_file(run / ENCODER)
    assert torch.equal(emma.backbone.model.state_dict()["blocks.0.attn.qkv.weight"],
                       encoder["blocks.0.attn.qkv.weight"])


def test_build_mae_model_rejects_a_cnn():
    cfg = load_config("mae-face-tiny", ["model.backbone=resnet18"])
    with pytest.raises(ValueError, match="resnet18"):
        build_mae_model(cfg)


def test_continued_pretraining_loads_a_full_checkpoint_decoder_too(tmp_path):
    cfg = load_config("mae-face-tiny", ["data.img_size=32", "mae.decoder_dim=64",
                                        "mae.decoder_depth=1", "model.drop_path=0.0"])
    source = build_mae_model(cfg)
    full = tmp_path / "mae_full.pth"
    save_checkpoint(full, source.official_state_dict())  # the official full layout
    encoder_only = export_encoder(source, tmp_path / "encoder.pth")
    again = build_mae_model(load_config("mae-face-tiny", [
        "data.img_size=32", "mae.decoder_dim=64", "mae.decoder_depth=1",
        f"model.pretrained={full}"]))
    for k, v in source.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    fresh = build_mae_model(load_config("mae-face-tiny", [
        "data.img_size=32", "mae.decoder_dim=64", "mae.decoder_depth=1",
        f"model.pretrained={encoder_only}"]))
    assert torch.equal(fresh.encoder.model.blocks[0].attn.qkv.weight,
                       source.encoder.model.blocks[0].attn.qkv.weight)
    assert not torch.equal(fresh.decoder_pred.weight, source.decoder_pred.weight)
