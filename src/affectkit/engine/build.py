"""Config -> model, task and datasets: the pieces ``engine.loop.train`` wires together.

``build_model`` turns ``cfg.model`` into an ``EMMA`` (kinds ``emma``, ``vit-mtl`` and
``cnn-mtl``: the last two have no CNN expression branch) or a ``MaskedCoTEX``;
``build_task`` gives the matching loss; ``build_datasets`` opens ``cfg.data.root`` and
picks the train and validation splits by name.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..config import Config, ModelConfig
from ..data.augment import eval_transform, train_batch_augment, train_transform
from ..data.dataset import FaceDataset, LoadResize, PackedImages
from ..data.discover import LAYOUTS, open_dataset
from ..data.errors import DataError
from ..data.table import FaceTable
from ..labels import ABAW_EXPR, AFFECTNET8, LSD, LabelSet, get_label_set
from ..losses import au_pos_weight
from ..models.backbone import create_backbone
from ..models.cotex import MaskedCoTEX
from ..models.dan import ExpressionBranch
from ..models.emma import EMMA
from ..tasks import CoTEXTask, MTLTask
from .evaluation import collect_predictions, score_predictions
from .job import Job

log = logging.getLogger(__name__)


def _model_cfg(cfg: Config | ModelConfig) -> ModelConfig:
    return cfg.model if isinstance(cfg, Config) else cfg


def build_model(cfg: Config | ModelConfig, img_size: int | None = None) -> nn.Module:
    """The model of ``cfg.model``. ``img_size`` sets a ViT's patch grid (default: the
    config's ``data.img_size`` when a whole ``Config`` is given, else the backbone's own).

    An EMMA expression branch that is a timm CNN (not ``dan``) is taken to be trained on
    AffectNet's 8 classes; its scores are mapped to ABAW's classes by name.
    """
    if isinstance(cfg, Config) and img_size is None:
        img_size = cfg.data.img_size
    m = _model_cfg(cfg)
    backbone = create_backbone(m.backbone, img_size=img_size, pretrained=m.pretrained,
                               pool=m.pool, drop_path=m.drop_path)
    if m.kind == "cotex":
        return MaskedCoTEX(backbone, num_classes=int(m.num_classes), mask_ratio=m.mask_ratio)
    if m.kind == "cnn-mtl" and backbone.is_vit:
        raise ValueError(f"model.kind 'cnn-mtl' needs a CNN backbone, {m.backbone!r} is a ViT")
    branch = None
    if m.kind == "emma" and m.expr_branch is not None:
        labels = None if m.expr_branch == "dan" else AFFECTNET8
        branch = ExpressionBranch.from_config(m.expr_branch, m.expr_branch_checkpoint,
                                              labels=labels)
    return EMMA(backbone, branch, va_hidden=m.va_hidden, stop_gradient=m.stop_gradient)


def model_labels(cfg: Config) -> LabelSet:
    """The expression classes the model predicts: ABAW's 8 for the MTL models; for CoTEX
    LSD's 6 (6 classes), ABAW's 8 (8 classes) or ``data.expr_labels`` if it has the size."""
    m = cfg.model
    if m.kind != "cotex":
        return ABAW_EXPR
    if cfg.data.expr_labels is not None:
        named = get_label_set(cfg.data.expr_labels)
        if len(named) == m.num_classes:
            return named
    for labels in (LSD, ABAW_EXPR):
        if len(labels) == m.num_classes:
            return labels
    raise ValueError(f"model.num_classes={m.num_classes}: no label set of that size; set "
                     "data.expr_labels to a label set with that many classes")


def build_task(cfg: Config, train_table: FaceTable | None = None):
    """``MTLTask`` (AU positives weighted by the train set's neg/pos ratio if
    ``loss.au_pos_weight``) or ``CoTEXTask``."""
    lo = cfg.loss
    if cfg.model.kind == "cotex":
        return CoTEXTask(js_weight=lo.js_weight, label_smoothing=lo.label_smoothing)
    pos_weight = None
    if lo.au_pos_weight:
        if train_table is None:
            raise ValueError("loss.au_pos_weight needs the training table")
        pos_weight = au_pos_weight(train_table.au)
        log.info("AU pos_weight: %s", [round(float(w), 2) for w in pos_weight])
    return MTLTask(au_weight=lo.au_weight, expr_weight=lo.expr_weight, va_weight=lo.va_weight,
                   au_pos_weight=pos_weight, label_smoothing=lo.label_smoothing)


def pick_split(tables: dict, split: str, root, key: str) -> FaceTable:
    """The table named ``split``: an ``open_dataset`` key (``mtl/train``) or its last part
    (``train``); with several layouts holding that split, the first in ``LAYOUTS`` order."""
    if split in tables:
        name = split
    else:
        names = [n for n in tables if n.split("/")[-1] == split]
        if not names:
            raise DataError(root, None, f"{key}={split!r}: no such split; available splits: "
                                        f"{', '.join(sorted(tables)) or 'none'}")
        order = {lay: i for i, lay in enumerate(LAYOUTS)}
        names.sort(key=lambda n: order.get(n.split("/")[0], len(order)))
        name = names[0]
        if len(names) > 1:
            log.info("%s=%r matches %s; using %s (name it in full to choose)", key, split,
                     names, name)
    table = tables[name]
    if isinstance(table, DataError):
        raise table
    return table


def open_splits(cfg: Config) -> tuple[FaceTable, FaceTable]:
    """The train and validation tables, expressions in the model's label order."""
    d = cfg.data
    labels = get_label_set(d.expr_labels) if d.expr_labels else None
    tables = open_dataset(d.root, d.layout, d.images, labels)
    train = pick_split(tables, d.train_split, d.root, "data.train_split")
    val = pick_split(tables, d.val_split, d.root, "data.val_split")
    target = model_labels(cfg)
    out = []
    for t in (train, val):
        if t.expr_labels.name != target.name:
            t = t.with_expr_labels(target)  # by class name; absent classes become -1
        out.append(t)
    return out[0], out[1]


def _packed_for(packed: str | None, table: FaceTable, what: str) -> PackedImages | None:
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


def batch_augment_on(cfg: Config, device: torch.device | str | None) -> bool:
    """Whether training augmentation runs batched on the device (``data.augment``)."""
    mode = cfg.data.augment
    if mode == "auto":
        return device is not None and torch.device(device).type == "cuda"
    return mode == "batch"


def face_datasets(cfg: Config, train: FaceTable, val: FaceTable, transform
                  ) -> tuple[FaceDataset, FaceDataset]:
    """(train, val) datasets over the JPEGs or ``data.packed``: ``transform`` for
    training, the plain eval transform for validation; an empty split is an error."""
    d = cfg.data
    train_ds = FaceDataset(train, transform,
                           packed=_packed_for(d.packed, train, "train"), missing=d.missing)
    val_ds = FaceDataset(val, eval_transform(d.img_size),
                         packed=_packed_for(d.packed, val, "val"), missing=d.missing)
    if len(train_ds) == 0:
        raise DataError(d.root, None, f"split {d.train_split!r} has no images")
    if len(val_ds) == 0:
        raise DataError(d.root, None, f"split {d.val_split!r} has no images")
    return train_ds, val_ds


def build_datasets(cfg: Config, tables: tuple[FaceTable, FaceTable] | None = None,
                   batch_augment: bool = False) -> tuple[FaceDataset, FaceDataset]:
    """(train, val) datasets: the paper's train transform (or, with ``batch_augment``,
    uint8 faces for ``train_batch_augment`` on the device) and the plain eval transform."""
    d = cfg.data
    train, val = tables if tables is not None else open_splits(cfg)
    transform = LoadResize(d.load_size) if batch_augment else \
        train_transform(d.img_size, d.resize, d.jitter, d.hue)
    return face_datasets(cfg, train, val, transform)


def build_job(cfg: Config, tables: tuple[FaceTable, FaceTable] | None = None,
              device: torch.device | str | None = None) -> Job:
    """Everything ``engine.loop.train`` runs for ``cfg`` on ``device``: model, task,
    datasets, scoring, on-device augmentation (``data.augment``). MAE pretraining
    (``model.kind: mae``) is built by ``engine.pretrain``."""
    train_table, val_table = tables if tables is not None else open_splits(cfg)
    batched = batch_augment_on(cfg, device)
    if cfg.model.kind == "mae":
        from .pretrain import build_mae_job

        return build_mae_job(cfg, (train_table, val_table), batch_augment=batched)
    train_ds, val_ds = build_datasets(cfg, (train_table, val_table), batch_augment=batched)
    d = cfg.data
    cotex = cfg.model.kind == "cotex"
    return Job(model=build_model(cfg), task=build_task(cfg, train_table),
               train_ds=train_ds, val_ds=val_ds, collect=collect_predictions,
               augment=train_batch_augment(d.img_size, d.resize, d.jitter, d.hue)
               if batched else None,
               score=partial(score_predictions, labels=model_labels(cfg)),
               forward_kwargs={} if cotex or not cfg.model.mask_ratio
               else {"mask_ratio": cfg.model.mask_ratio})
