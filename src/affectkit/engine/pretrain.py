"""MAE pretraining as a ``Job`` for the shared training loop (``model.kind: mae``).

The loop brings what fine-tuning has (AMP, accumulation, warm-up + cosine, DDP,
atomic checkpoints, exact resume, progress bar); this module brings the MAE parts:
the model (``models.mae.MAE``), MAE's augmentation (random-resized-crop + flip,
ImageNet normalisation), a validation score (mean reconstruction loss on held-out
faces, with the same masks every epoch) and, after every validated epoch on the main
rank, the outputs a user wants from a pretraining run:

- ``encoder.pth``: the encoder in the official MAE format (``{"model": ...}``, timm key
  names, no head), which ``model.pretrained=`` of the fine-tuning recipes and MAE's
  own fine-tuning code load unchanged;
- ``recon/epoch_XXX.png``: original / masked / reconstructed validation faces.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.io import encode_png
from torchvision.transforms import v2
from torchvision.utils import make_grid

from ..config import Config
from ..data.augment import IMAGENET_MEAN, IMAGENET_STD, BatchAugment, input_stats
from ..data.dataset import LoadResize
from ..data.folders import drop_corrupt
from ..data.table import FaceTable
from ..io import atomic_write
from ..models.backbone import create_backbone, num_kept
from ..models.checkpoint import load_state_dict_file, save_mae_checkpoint
from ..models.mae import MAE
from ..tasks import MAETask
from .datasets import face_datasets, packed_for
from .job import Job
from .state import unwrap_model

log = logging.getLogger(__name__)

ENCODER = "encoder.pth"
RECON_DIR = "recon"


def build_mae_model(cfg: Config, load_weights: bool = True) -> MAE:
    """The MAE of ``cfg``: a CLS-pooled ``model.backbone`` ViT at ``data.img_size`` as the
    encoder (``model.pretrained`` continues from those weights; otherwise MAE's own
    initialisation), the ``mae`` section's decoder, ``model.mask_ratio``.
    ``load_weights=False``: the architecture alone, ``model.pretrained`` not read."""
    m, mae = cfg.model, cfg.mae
    if not load_weights and m.pretrained is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(m, pretrained=None))
        m = cfg.model
    try:
        encoder = create_backbone(m.backbone, img_size=cfg.data.img_size,
                                  patch_size=m.patch_size, pretrained=m.pretrained,
                                  pool="cls", drop_path=m.drop_path)
    except ValueError as exc:
        raise ValueError(f"model.backbone={m.backbone!r} cannot be an MAE encoder: {exc}") \
            from exc
    if not encoder.is_vit:
        raise ValueError(f"model.backbone={m.backbone!r} is not a ViT: MAE masks patch tokens "
                         "and needs a timm VisionTransformer (e.g. vit_base_patch16_224)")
    model = MAE(encoder, decoder_dim=mae.decoder_dim, decoder_depth=mae.decoder_depth,
                decoder_heads=mae.decoder_heads, mask_ratio=m.mask_ratio,
                norm_pix_loss=mae.norm_pix_loss, eval_seed=cfg.run.seed,
                init=m.pretrained is None)
    if m.pretrained is not None and not m.pretrained.startswith("timm:"):
        load_decoder(model, m.pretrained)
    return model


def load_decoder(model: MAE, path: str | os.PathLike) -> bool:
    """Continue from a full MAE checkpoint (the official ``mae_visualize_*.pth`` layout, or
    an affectkit ``best.pt``/``last.pt``): load its decoder and mask token when they all
    fit; otherwise (encoder-only file, another decoder size) keep the fresh decoder and
    say so. ``decoder_pos_embed`` is fixed sin-cos and always recomputed."""
    state = load_state_dict_file(path)
    own = {k: v for k, v in model.state_dict().items()
           if not k.startswith("encoder.") and k != "decoder_pos_embed"}
    found = {k: state[k] for k in own if k in state}
    if not found:
        log.info("%s has no MAE decoder: the decoder starts from MAE's initialisation", path)
        return False
    bad = [f"{k} missing" for k in own if k not in found] + [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in found.items() if v.shape != own[k].shape]
    if bad:
        log.warning("the MAE decoder of %s does not fit mae.decoder_* (%d problems, e.g. "
                    "%s): the decoder starts fresh", path, len(bad), bad[:3])
        return False
    model.load_state_dict(found, strict=False)
    log.info("decoder and mask token loaded from %s", path)
    return True


def mae_train_transform(size: int, scale: tuple[float, float] = (0.2, 1.0),
                        mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """MAE's pretraining augmentation on uint8 (3, H, W): random-resized-crop (bicubic,
    area ``scale``) to ``size``, horizontal flip, ImageNet normalisation. No colour jitter."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=scale, interpolation=v2.InterpolationMode.BICUBIC,
                             antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


def export_encoder(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the encoder of an MAE (or a DDP / compiled wrapper of one) as an official MAE
    checkpoint ``{"model": timm ViT state}``, atomically."""
    state = {k: v.detach().cpu() for k, v in unwrap_model(model).encoder.model.state_dict().items()}
    return save_mae_checkpoint(path, state)


def _denormalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1)


@torch.no_grad()
def recon_grid(model: nn.Module, images: torch.Tensor, min_side: int = 96) -> torch.Tensor:
    """(3, H', W') uint8 grid, one face per row: original | masked (hidden patches grey) |
    reconstruction (prediction at the masked patches, visible patches pasted back).

    ``images`` are normalised with ImageNet statistics; masks come from the model's
    eval generator, so the same faces get the same masks every epoch. Faces smaller than
    ``min_side`` are enlarged by whole-pixel repetition so small runs stay legible."""
    mae = unwrap_model(model)
    was_training = mae.training
    device = next(mae.parameters()).device
    mae.eval()
    try:
        x = images.to(device).float()
        out = mae(x)
        _, recon = mae.reconstruct(x, out["pred"], out["mask"])
    finally:
        mae.train(was_training)
    p, c = mae.patch_size, mae.in_chans
    hidden = mae.unpatchify(out["mask"].unsqueeze(-1).expand(-1, -1, p * p * c).float())
    original = _denormalize(x)
    masked = original * (1 - hidden) + 0.5 * hidden
    recon = _denormalize(recon)
    rows = torch.stack([original, masked, recon], dim=1).flatten(0, 1)  # (3B, C, H, W)
    scale = max(1, -(-min_side // rows.shape[-1]))
    if scale > 1:
        rows = rows.repeat_interleave(scale, dim=-1).repeat_interleave(scale, dim=-2)
    grid = make_grid(rows.cpu(), nrow=3, padding=2, pad_value=1.0)
    return (grid * 255).round().to(torch.uint8)


def write_recon_grid(model: nn.Module, images: torch.Tensor, path: str | os.PathLike) -> Path:
    """``recon_grid`` as a PNG, written atomically (temp file + rename)."""
    png = encode_png(recon_grid(model, images)).numpy().tobytes()
    return atomic_write(path, lambda f: f.write(png))


def _recon_indices(n: int, k: int) -> list[int]:
    """``k`` validation rows spread evenly over the set (the same ones every epoch)."""
    if n == 0 or k == 0:
        return []
    return sorted({int(i) for i in np.linspace(0, n - 1, min(k, n)).round()})


def _checked(table: FaceTable, cfg: Config, what: str) -> FaceTable:
    """``table`` without its undecodable images (``data.corrupt: skip``), or an error
    naming the first; images read from a pack were decoded when packed."""
    if packed_for(cfg.data.packed, table, what) is not None:
        return table
    out = drop_corrupt(table, cfg.data.corrupt)
    if len(out) < len(table):
        log.warning("%s: %d of %d images skipped as corrupt", what, len(table) - len(out),
                    len(table))
    return out


def mae_batch_augment(size: int, scale: tuple[float, float] = (0.2, 1.0),
                      mean=IMAGENET_MEAN, std=IMAGENET_STD) -> BatchAugment:
    """``mae_train_transform`` batched on the device (bilinear rather than bicubic)."""
    return BatchAugment(size, scale=scale, ratio=(3 / 4, 4 / 3), brightness=0.0,
                        contrast=0.0, saturation=0.0, hue=0.0, mean=mean, std=std)


def build_mae_job(cfg: Config, tables: tuple[FaceTable, FaceTable],
                  batch_augment: bool = False) -> Job:
    """The MAE pretraining ``Job`` for the loop: model, task, datasets (labels ignored: any
    layout's image lists work), per-sample validation loss, and the per-epoch encoder
    export and reconstruction grid (``on_epoch_end``). ``batch_augment``: the crops and
    flips run on the training device (``mae_batch_augment``)."""
    if cfg.model.kind != "mae":
        raise ValueError(f"build_mae_job needs model.kind 'mae', got {cfg.model.kind!r}")
    d = cfg.data
    train_table, val_table = (_checked(t, cfg, w) for t, w in zip(tables, ("train", "val")))
    mean, std = input_stats(d)
    transform = LoadResize(d.load_size) if batch_augment else \
        mae_train_transform(d.img_size, cfg.mae.crop_scale, mean, std)
    train_ds, val_ds = face_datasets(cfg, train_table, val_table, transform)
    model = build_mae_model(cfg)
    log.info("MAE: %s at %d px, %d patches, mask ratio %g (%d visible), decoder %dx%d, "
             "norm_pix_loss %s; %d train / %d val images", cfg.model.backbone, d.img_size,
             model.num_patches, model.mask_ratio,
             num_kept(model.num_patches, model.mask_ratio),
             cfg.mae.decoder_depth, cfg.mae.decoder_dim, model.norm_pix_loss,
             len(train_ds), len(val_ds))

    def collect(out: dict, batch: dict) -> dict[str, torch.Tensor]:
        return {"recon_loss": out["loss_per_sample"].detach().float()}

    def score(arrays: dict[str, np.ndarray]) -> dict:
        loss = float(np.mean(arrays["recon_loss"]))
        return {"recon_loss": loss, "score": -loss}

    recon_rows = _recon_indices(len(val_ds), cfg.mae.recon_images)
    cache: dict[str, torch.Tensor] = {}

    def on_epoch_end(model: nn.Module, run_dir: Path, epoch: int, scores: dict) -> None:
        run_dir = Path(run_dir)
        path = export_encoder(model, run_dir / ENCODER)
        log.info("epoch %d: encoder -> %s (recon_loss %s)", epoch, path,
                 scores.get("recon_loss"))
        if recon_rows:
            if "images" not in cache:
                cache["images"] = torch.stack([val_ds[i]["image"] for i in recon_rows])
            write_recon_grid(model, cache["images"],
                             run_dir / RECON_DIR / f"epoch_{epoch:03d}.png")

    return Job(model=model, task=MAETask(), train_ds=train_ds, val_ds=val_ds,
               collect=collect, score=score, on_epoch_end=on_epoch_end,
               augment=mae_batch_augment(d.img_size, cfg.mae.crop_scale, mean, std)
               if batch_augment else None)
