"""Config -> model, task and datasets: the pieces ``engine.loop.train`` wires together.

``build_model``, ``build_task`` and ``model_labels`` ask the model's kind
(``affectkit.kinds``); ``build_datasets`` opens ``cfg.data.root`` and picks the train and
validation splits by name; ``build_job`` is the shared fine-tuning job unless the kind
has its own (MAE pretraining).
"""

from __future__ import annotations

import logging
from functools import partial

import torch
from torch import nn

from ..config import Config, ModelConfig
from ..data.augment import train_batch_augment, train_transform
from ..data.dataset import FaceDataset, LoadResize
from ..data.discover import LAYOUTS, open_dataset
from ..data.errors import DataError
from ..data.table import FaceTable
from ..kinds import get_kind
from ..labels import LabelSet, get_label_set
from .datasets import batch_augment_on, face_datasets
from .evaluation import collect_predictions, score_predictions
from .job import Job

log = logging.getLogger(__name__)


def build_model(cfg: Config | ModelConfig, img_size: int | None = None, *,
                load_weights: bool = True) -> nn.Module:
    """The model of ``cfg.model``, built by its kind (``affectkit.kinds``). ``img_size``
    sets a ViT's patch grid (default: ``data.img_size`` of a whole ``Config``, else the
    backbone's own). ``load_weights=False`` builds the architecture alone, reading neither
    ``model.pretrained`` nor a branch checkpoint: for a run's own checkpoint to fill."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    return get_kind(m.kind).build_model(cfg, img_size=img_size, load_weights=load_weights)


def model_labels(cfg: Config) -> LabelSet:
    """The expression classes the model predicts, in its output order."""
    return get_kind(cfg.model.kind).labels(cfg)


def build_task(cfg: Config, train_table: FaceTable | None = None):
    """The kind's task: outputs + batch -> named losses (``train_table`` for AU weights)."""
    return get_kind(cfg.model.kind).build_task(cfg, train_table)


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
    datasets, scoring, on-device augmentation (``data.augment``); the kind's own job
    where it has one (``mae``: ``engine.pretrain``)."""
    train_table, val_table = tables if tables is not None else open_splits(cfg)
    own = get_kind(cfg.model.kind).build_job(cfg, (train_table, val_table), device)
    if own is not None:
        return own
    batched = batch_augment_on(cfg, device)
    train_ds, val_ds = build_datasets(cfg, (train_table, val_table), batch_augment=batched)
    d = cfg.data
    return Job(model=build_model(cfg), task=build_task(cfg, train_table),
               train_ds=train_ds, val_ds=val_ds, collect=collect_predictions,
               augment=train_batch_augment(d.img_size, d.resize, d.jitter, d.hue)
               if batched else None,
               score=partial(score_predictions, labels=model_labels(cfg)))
