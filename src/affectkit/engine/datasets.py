"""The datasets a run trains and validates on, over JPEGs or a packed cache.

Shared by fine-tuning (``engine.build``) and MAE pretraining (``engine.pretrain``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import Config
from ..data.augment import transforms_for
from ..data.dataset import FaceDataset, PackedImages
from ..data.errors import DataError
from ..data.table import FaceTable

log = logging.getLogger(__name__)


def batch_augment_on(cfg: Config, device: torch.device | str | None) -> bool:
    """Whether training augmentation runs batched on the device (``data.augment``)."""
    mode = cfg.data.augment
    if mode == "auto":
        return device is not None and torch.device(device).type == "cuda"
    return mode == "batch"


def packed_for(packed: str | None, table: FaceTable, what: str) -> PackedImages | None:
    """The pack holding every image of ``table``: ``data.packed`` is one pack file or a
    folder of them (``affectkit data pack --out``); a split no pack covers reads JPEGs."""
    if not packed:
        return None
    where = Path(packed)
    files = sorted(where.glob("*.npy")) if where.is_dir() else [where]
    for f in files:
        pack = PackedImages(f)
        if all(i in pack.row for i in table.images):
            log.info("%s images from pack %s", what, pack.path)
            return pack
    log.warning("no pack under %s holds every %s image: reading JPEGs", packed, what)
    return None


def face_datasets(cfg: Config, train: FaceTable, val: FaceTable, transform
                  ) -> tuple[FaceDataset, FaceDataset]:
    """(train, val) datasets over the JPEGs or ``data.packed``: ``transform`` for
    training, the plain eval transform for validation; an empty split is an error."""
    d = cfg.data
    train_ds = FaceDataset(train, transform,
                           packed=packed_for(d.packed, train, "train"), missing=d.missing)
    val_ds = FaceDataset(val, transforms_for(d)[1],
                         packed=packed_for(d.packed, val, "val"), missing=d.missing)
    if len(train_ds) == 0:
        raise DataError(d.root, None, f"split {d.train_split!r} has no images")
    if len(val_ds) == 0:
        raise DataError(d.root, None, f"split {d.val_split!r} has no images")
    return train_ds, val_ds
