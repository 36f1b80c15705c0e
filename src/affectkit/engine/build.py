"""Config -> model, task and datasets: the pieces ``engine.loop.train`` wires together.

``build_model``, ``build_task`` and ``model_labels`` ask the model's kind
(``affectkit.kinds``); ``build_datasets`` opens ``cfg.data.root`` and picks the train and
validation splits by name; ``build_job`` is the shared fine-tuning job unless the kind
has its own (MAE pretraining).
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Config, ExtraData, ModelConfig
from ..data.augment import IMAGENET_MEAN, IMAGENET_STD, transforms_for
from ..data.dataset import FaceDataset, LoadResize
from ..data.discover import LAYOUTS, open_dataset
from ..data.errors import DataError
from ..data.table import FaceTable
from ..kinds import get_kind
from ..labels import ABAW_AU, LabelSet, get_label_set
from .datasets import batch_augment_on, face_datasets
from .evaluation import collect_predictions, score_predictions
from .job import Job

log = logging.getLogger(__name__)


def weight_stats(cfg: Config) -> tuple[tuple, tuple]:
    """The (mean, std) ``model.pretrained`` expects: a timm tag's own (many use 0.5), else
    ImageNet's (official MAE checkpoints, affectkit runs and encoders, random init)."""
    p = cfg.model.pretrained
    if isinstance(p, str) and p.startswith("timm:"):
        import timm

        pc = timm.models.get_pretrained_cfg(p.removeprefix("timm:"))
        if pc is not None and pc.mean and pc.std:
            return tuple(map(float, pc.mean)), tuple(map(float, pc.std))
    return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)


def with_data_stats(cfg: Config, saved: dict | None = None) -> Config:
    """``cfg`` with ``data.mean`` / ``data.std`` fixed: as set, else those of the run being
    resumed (``saved``: its config dict; none there means ImageNet's, what it trained
    with), else ``weight_stats``. Training saves the result, so evaluation normalises as
    training did."""
    d = cfg.data
    if d.mean is not None:
        return cfg
    if saved is not None:
        data = saved.get("data") or {}
        mean, std = data.get("mean"), data.get("std")
        mean, std = (tuple(mean), tuple(std)) if mean and std else (None, None)
    else:
        mean, std = weight_stats(cfg)
    return dataclasses.replace(cfg, data=dataclasses.replace(d, mean=mean, std=std))


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


def relabel(t: FaceTable, target: LabelSet) -> FaceTable:
    """``t`` in the model's label sets: expressions by class name into ``target`` (absent
    classes become -1), AUs into ABAW's 12."""
    if t.expr_labels.name != target.name:
        t = t.with_expr_labels(target)
    return t if t.au_labels.name == ABAW_AU.name else t.with_au_labels(ABAW_AU)


def extra_splits(x: ExtraData, data_root: str, index: int) -> tuple[FaceTable, FaceTable]:
    """The (train, val) rows one ``data.extra`` entry adds: ``tasks`` labels only, held-out
    subjects dropped, ``val_subjects`` to validation, training rows ``repeat`` times."""
    key = f"data.extra.{index}"
    root = Path(x.root).expanduser()
    if not root.is_absolute():
        root = Path(data_root).expanduser() / root
    tables = open_dataset(root, x.layout, None,
                          get_label_set(x.expr_labels) if x.expr_labels else None)
    if x.split is None:
        if len(tables) != 1:
            raise DataError(root, None, f"{key}.split: several splits here, name one of "
                                        f"{', '.join(sorted(tables))}")
        x = dataclasses.replace(x, split=next(iter(tables)))
    table = pick_split(tables, x.split, root, f"{key}.split").only_tasks(x.tasks)
    subjects = set(x.val_subjects) | set(x.held_out_subjects)
    if subjects and x.subject_column not in table.df:
        raise DataError(root, None, f"{key}.subject_column: no column {x.subject_column!r} "
                                    f"(columns: {', '.join(map(str, table.df.columns))})")
    who = table.df[x.subject_column].astype(str).to_numpy() if subjects else None
    if subjects:
        unknown = sorted(subjects - set(who))
        if unknown:
            log.warning("%s: subjects not in %s: %s", key, root, unknown)
        train_rows = np.flatnonzero(~np.isin(who, list(subjects)))
        val_rows = np.flatnonzero(np.isin(who, list(x.val_subjects)))
    else:
        train_rows, val_rows = np.arange(len(table)), np.arange(0)
    log.info("%s: %s, %d train rows (x%d), %d val rows, %d held out", key, root,
             len(train_rows), x.repeat, len(val_rows),
             len(table) - len(train_rows) - len(val_rows))
    return table.subset(np.tile(train_rows, x.repeat)), table.subset(val_rows)


def open_splits(cfg: Config) -> tuple[FaceTable, FaceTable]:
    """The train and validation tables (with ``data.extra`` mixed in), expressions in the
    model's label order, AUs in ABAW's."""
    d = cfg.data
    labels = get_label_set(d.expr_labels) if d.expr_labels else None
    tables = open_dataset(d.root, d.layout, d.images, labels)
    train = pick_split(tables, d.train_split, d.root, "data.train_split")
    val = pick_split(tables, d.val_split, d.root, "data.val_split")
    target = model_labels(cfg)
    train, val = relabel(train, target), relabel(val, target)
    if not d.extra:
        return train, val
    trains, vals = [train], [val]
    for i, x in enumerate(d.extra):
        t, v = extra_splits(x, d.root, i)
        trains.append(relabel(t, target))
        if len(v):
            vals.append(relabel(v, target))
    return FaceTable.concat(trains), FaceTable.concat(vals) if len(vals) > 1 else val


def build_datasets(cfg: Config, tables: tuple[FaceTable, FaceTable] | None = None,
                   batch_augment: bool = False) -> tuple[FaceDataset, FaceDataset]:
    """(train, val) datasets: the paper's train transform (or, with ``batch_augment``,
    uint8 faces for ``train_batch_augment`` on the device) and the plain eval transform."""
    d = cfg.data
    train, val = tables if tables is not None else open_splits(cfg)
    transform = LoadResize(d.load_size) if batch_augment else transforms_for(d)[0]
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
               augment=transforms_for(d, batched=True)[0] if batched else None,
               score=partial(score_predictions, labels=model_labels(cfg)))
