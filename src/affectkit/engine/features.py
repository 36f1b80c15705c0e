"""The feature store of progressive learning: each task model's per-frame features,
extracted once and read back as windows of any video without decoding an image.

A store is a folder: ``features.npy`` (N, D) float16, memory-mapped on read;
``index.csv`` (``video``, ``frame``, ``image``: row i of the array); ``meta.json`` with the
model's fingerprint (a hash of its weights and config), so a store written by another
model, or by this run before it trained further, is detected as stale and rebuilt, never
silently reused. Everything is written to a temporary folder and renamed into place: a
killed extraction leaves no half store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import config_to_dict
from ..data.table import FaceTable
from .inference import LoadedRun

FEATURES, INDEX, META = "features.npy", "index.csv", "meta.json"


class StaleStore(ValueError):
    """A store written by another model (or missing frames): rebuild it."""


def fingerprint(run: LoadedRun) -> str:
    """sha256 of the model's weights (names, shapes, bytes) and its config."""
    h = hashlib.sha256()
    for name, t in sorted(run.model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    h.update(json.dumps(config_to_dict(run.cfg), sort_keys=True).encode())
    return h.hexdigest()


def feature_extractor(model: torch.nn.Module) -> torch.nn.Module:
    """The part of a model whose output is its per-frame feature: the backbone's pooled
    features (EMMA, the multi-task baselines, the shipped models)."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ValueError(f"{type(model).__name__} has no backbone to take features from")
    return backbone


class FeatureStore:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        try:
            self.meta = json.loads((self.folder / META).read_text(encoding="utf-8"))
            self.features = np.load(self.folder / FEATURES, mmap_mode="r")
            index = pd.read_csv(self.folder / INDEX, dtype={"video": str})
        except (OSError, ValueError) as exc:
            raise StaleStore(f"{self.folder}: not a readable feature store ({exc})") from None
        if len(index) != len(self.features):
            raise StaleStore(f"{self.folder}: {len(index)} index rows for "
                             f"{len(self.features)} feature rows")
        self.row = {(v, int(f)): i for i, (v, f) in
                    enumerate(zip(index["video"], index["frame"]))}

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def rows_for(self, table: FaceTable) -> np.ndarray:
        """The store row of every table row; ``StaleStore`` naming frames it lacks."""
        keys = list(zip(table.df["video"].astype(str), table.df["frame"].astype(int)))
        missing = [k for k in keys if k not in self.row]
        if missing:
            raise StaleStore(f"{self.folder}: {len(missing)} frames not in the store, e.g. "
                             f"{missing[:3]}")
        return np.fromiter((self.row[k] for k in keys), np.int64, len(keys))

    def read(self, rows: np.ndarray) -> torch.Tensor:
        """Features (…, D) float32 of store ``rows`` (any shape; ``-1``: zeros, padding)."""
        rows = np.asarray(rows)
        flat = rows.reshape(-1)
        out = np.zeros((flat.size, self.dim), np.float32)
        ok = flat >= 0
        if ok.any():
            order = np.argsort(flat[ok])  # sorted reads of the memory map
            picked = np.asarray(self.features[flat[ok][order]], np.float32)
            out[np.flatnonzero(ok)[order]] = picked
        return torch.from_numpy(out.reshape(*rows.shape, self.dim))


def open_store(folder: str | os.PathLike, run: LoadedRun | None = None,
               print_: str | None = None) -> FeatureStore:
    """The store in ``folder``; with ``run``, ``StaleStore`` unless it holds that model's
    features (``print_``: its ``fingerprint`` when the caller has it already)."""
    store = FeatureStore(folder)
    if run is not None and store.meta.get("fingerprint") != (print_ or fingerprint(run)):
        raise StaleStore(f"{folder} holds features of another model (or an earlier "
                         f"checkpoint: {store.meta.get('checkpoint')}); rebuild it")
    return store


@torch.no_grad()
def encode_frames(extractor: torch.nn.Module, transform, table: FaceTable, device,
                  batch_size: int = 128, num_workers: int = 0) -> Iterator[np.ndarray]:
    """``extractor``'s features (B, D) float32 of ``table``'s faces read through
    ``transform``, batch by batch in table order."""
    from ..data.dataset import FaceDataset

    extractor.eval()
    ds = FaceDataset(table, transform)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=ds.collate)
    for batch in loader:
        yield extractor(batch["image"].to(device)).float().cpu().numpy()


def iter_features(run: LoadedRun, table: FaceTable, batch_size: int = 128,
                  num_workers: int = 0) -> Iterator[np.ndarray]:
    """``run``'s per-frame features of ``table``'s rows, each face read with the run's own
    evaluation transform (``encode_frames``)."""
    from ..data.augment import transforms_for

    return encode_frames(feature_extractor(run.model), transforms_for(run.cfg.data)[1], table,
                         run.device, batch_size, num_workers)


def extract_features(run: LoadedRun, table: FaceTable, folder: str | os.PathLike, *,
                     batch_size: int = 128, num_workers: int = 0, progress=None,
                     print_: str | None = None) -> FeatureStore:
    """Run ``run``'s feature extractor over every row of ``table`` into a new store at
    ``folder`` (replacing what is there, atomically)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    feats = None
    done = 0
    for f in iter_features(run, table, batch_size, num_workers):
        if feats is None:
            feats = np.lib.format.open_memmap(tmp / FEATURES, mode="w+", dtype=np.float16,
                                              shape=(len(table), f.shape[1]))
        feats[done:done + len(f)] = f
        done += len(f)
        if progress is not None:
            progress(len(f))
    if feats is None:
        raise ValueError(f"{table.source}: no frames to extract features from")
    feats.flush()
    dim = int(feats.shape[1])
    del feats
    pd.DataFrame({"video": table.df["video"].astype(str), "frame": table.df["frame"],
                  "image": table.df["image"]}).to_csv(tmp / INDEX, index=False)
    meta = {"fingerprint": print_ or fingerprint(run), "checkpoint": str(run.checkpoint),
            "rows": len(table), "dim": dim, "source": str(table.source)}
    (tmp / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return FeatureStore(folder)


def ensure_features(run: LoadedRun, table: FaceTable, folder: str | os.PathLike,
                    **kw) -> tuple[FeatureStore, bool]:
    """The store of ``run`` at ``folder`` covering ``table``: reused when it is current,
    (re)built otherwise. Returns (store, rebuilt). The model is hashed once."""
    print_ = fingerprint(run)
    try:
        store = open_store(folder, run, print_)
        store.rows_for(table)
        return store, False
    except StaleStore:
        return extract_features(run, table, folder, print_=print_, **kw), True
