"""``FaceTable``: the one in-memory form every reader returns.

A table is a pandas DataFrame with one row per face image and fixed columns:
``image`` (path relative to ``image_root``), ``video`` (exact video name, or
the parent folder for still-image datasets), ``frame`` (1-based frame number,
-1 for stills), ``valence``, ``arousal`` (-5 = unlabelled), ``expression``
(index into ``expr_labels``, -1 = unlabelled) and one column per AU of
``au_labels`` (0/1, -1 = unlabelled). Extra columns (``split``, ``subject``)
are kept as they came.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..labels import (
    ABAW_AU,
    ABAW_EXPR,
    AU_INVALID,
    EXPR_INVALID,
    VA_INVALID,
    LabelSet,
    au_valid,
    expr_valid,
    va_valid,
)

BASE_COLUMNS = ("image", "video", "frame", "valence", "arousal", "expression")


@dataclass
class FaceTable:
    df: pd.DataFrame
    image_root: Path | None
    expr_labels: LabelSet = ABAW_EXPR
    au_labels: LabelSet = ABAW_AU
    source: str = ""
    # what the reader dropped and why, e.g. {"frames without a face crop": 31}
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in (*BASE_COLUMNS, *self.au_labels.classes) if c not in self.df]
        if missing:
            raise ValueError(f"FaceTable from {self.source or '?'} lacks columns {missing}")

    def __len__(self) -> int:
        return len(self.df)

    # --- label arrays and explicit validity masks -------------------------------------
    @property
    def images(self) -> list[str]:
        return self.df["image"].tolist()

    @property
    def va(self) -> np.ndarray:
        return self.df[["valence", "arousal"]].to_numpy(np.float32)

    @property
    def expression(self) -> np.ndarray:
        return self.df["expression"].to_numpy(np.int64)

    @property
    def au(self) -> np.ndarray:
        return self.df[list(self.au_labels.classes)].to_numpy(np.int64).reshape(len(self), -1)

    def masks(self) -> dict[str, np.ndarray]:
        """Per-task validity: ``va`` (N,), ``expression`` (N,), ``au`` (N, K)."""
        return {"va": va_valid(self.va), "expression": expr_valid(self.expression),
                "au": au_valid(self.au)}

    # --- re-labelling by name -----------------------------------------------------------
    def with_expr_labels(self, target: LabelSet) -> FaceTable:
        """Same rows, expression indices mapped by name into ``target`` (absent -> -1)."""
        df = self.df.copy()
        df["expression"] = self.expr_labels.convert(df["expression"].to_numpy(), target)
        return FaceTable(df, self.image_root, target, self.au_labels, self.source,
                         dict(self.skipped))

    def with_au_labels(self, target: LabelSet) -> FaceTable:
        """Same rows, AU columns selected by canonical name (AUs not coded here -> -1)."""
        df = self.df.drop(columns=list(self.au_labels.classes))
        have = dict(zip(self.au_labels.canonical, self.au_labels.classes))
        for name, canon in zip(target.classes, target.canonical):
            df[name] = self.df[have[canon]].to_numpy() if canon in have else AU_INVALID
        return FaceTable(df, self.image_root, self.expr_labels, target, self.source,
                         dict(self.skipped))

    def only_tasks(self, tasks) -> FaceTable:
        """Same rows with the labels of tasks not in ``tasks`` ("va", "expr", "au") made
        unlabelled: e.g. a dataset's AU codes used, its expressions not."""
        df = self.df.copy()
        if "va" not in tasks:
            df[["valence", "arousal"]] = VA_INVALID
        if "expr" not in tasks:
            df["expression"] = EXPR_INVALID
        if "au" not in tasks:
            df[list(self.au_labels.classes)] = AU_INVALID
        return FaceTable(df, self.image_root, self.expr_labels, self.au_labels, self.source,
                         dict(self.skipped))

    @staticmethod
    def concat(tables: list[FaceTable]) -> FaceTable:
        """One table of the rows of ``tables`` (same label sets), image paths made absolute
        so that tables of different image roots mix."""
        first = tables[0]
        for t in tables[1:]:
            if (t.expr_labels.name, t.au_labels.name) != (first.expr_labels.name,
                                                          first.au_labels.name):
                raise ValueError(f"cannot mix {t.source} ({t.expr_labels.name}, "
                                 f"{t.au_labels.name}) with {first.source} "
                                 f"({first.expr_labels.name}, {first.au_labels.name})")
        frames = []
        for t in tables:
            df = t.df.copy()
            if t.image_root is not None:
                df["image"] = [str((t.image_root / i).absolute()) for i in df["image"]]
            frames.append(df)
        skipped: dict[str, int] = {}
        for t in tables:
            for k, v in t.skipped.items():
                skipped[k] = skipped.get(k, 0) + v
        return FaceTable(pd.concat(frames, ignore_index=True), Path("/"), first.expr_labels,
                         first.au_labels, " + ".join(t.source for t in tables), skipped)

    def subset(self, rows) -> FaceTable:
        return FaceTable(self.df.iloc[rows].reset_index(drop=True), self.image_root,
                         self.expr_labels, self.au_labels, self.source, dict(self.skipped))

    def split(self, column: str = "split") -> dict[str, FaceTable]:
        if column not in self.df:
            return {"all": self}
        return {str(k): self.subset(np.flatnonzero(self.df[column].to_numpy() == k))
                for k in pd.unique(self.df[column])}

    # --- videos ----------------------------------------------------------------------------
    def videos(self) -> dict[str, np.ndarray]:
        """Exact video name -> row indices sorted by frame number.

        Grouping is by the whole name, never a prefix ('140' and '140-30-632x360'
        are different videos); temporal models read real frame order and gaps from
        ``df.frame`` at these rows.
        """
        order = np.lexsort((self.df["frame"].to_numpy(), self.df["video"].to_numpy()))
        vids = self.df["video"].to_numpy()[order]
        cuts = np.flatnonzero(vids[1:] != vids[:-1]) + 1
        return {str(g[0]): idx for g, idx in zip(np.split(vids, cuts), np.split(order, cuts))
                if len(g)}


def make_table_frame(images, *, video=None, frame=None, va=None, expression=None, au=None,
                     au_labels: LabelSet = ABAW_AU, extra: dict | None = None) -> pd.DataFrame:
    """Build a table DataFrame; tasks not given are filled with their sentinels."""
    n = len(images)
    images = [str(i) for i in images]
    if video is None:
        video = [split_video_frame(i)[0] for i in images]
    if frame is None:
        frame = [split_video_frame(i)[1] for i in images]
    va = np.full((n, 2), VA_INVALID, np.float32) if va is None else np.asarray(va, np.float32)
    expression = (np.full(n, EXPR_INVALID, np.int64) if expression is None
                  else np.asarray(expression, np.int64))
    au = (np.full((n, len(au_labels)), AU_INVALID, np.int8) if au is None
          else np.asarray(au, np.int8))
    cols = {"image": images, "video": list(video), "frame": np.asarray(frame, np.int64),
            "valence": va[:, 0], "arousal": va[:, 1], "expression": expression}
    cols.update({name: au[:, j] for j, name in enumerate(au_labels.classes)})
    cols.update(extra or {})
    return pd.DataFrame(cols)


def split_video_frame(image: str) -> tuple[str, int]:
    """``'132-30-426x240/00017.jpg'`` -> ``('132-30-426x240', 17)``; stills get frame -1."""
    parent, _, name = image.replace("\\", "/").rpartition("/")
    stem = name.rsplit(".", 1)[0]
    return parent, int(stem) if stem.isdigit() else -1
