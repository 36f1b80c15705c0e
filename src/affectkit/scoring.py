"""Score prediction files against ground truth exactly as the challenge does.

Rows are matched by image name; a prediction file that misses, adds or repeats
an image is an error that names them (the server would reject it too).
Accepted forms, detected from the file itself:

* truth: MTL annotation file, a per-video task folder (``.../Validation_Set``),
  an ``image,label`` / ``path,valence,arousal`` / AU CSV, or class folders (LSD).
* predictions: MTL submission, a per-video prediction folder, or a CSV.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics
from .data.abaw import MTL_COLUMNS, SUBMISSION_HEADER, read_mtl_annotations
from .data.errors import DataError
from .data.folders import read_class_folders, read_csv_labels
from .data.parse import read_lines
from .data.submission import read_label_csv, read_mtl_predictions, read_per_video_folder
from .data.table import FaceTable
from .labels import ABAW_AU, ABAW_EXPR, LSD

TASKS = ("mtl", "va", "expr", "au", "lsd")
_PER_VIDEO_TASK = {"va": "VA", "expr": "EXPR", "au": "AU"}


def _first_line(path: Path) -> str:
    lines = read_lines(path)
    return lines[0][1].replace(" ", "").lower() if lines else ""


def load_truth(task: str, path: str | os.PathLike) -> FaceTable:
    path = Path(path)
    if path.is_dir():
        if any(path.glob("*.txt")) and task in _PER_VIDEO_TASK:
            return read_per_video_folder(path, _PER_VIDEO_TASK[task])
        return read_class_folders(path, LSD if task == "lsd" else ABAW_EXPR)
    if _first_line(path) == ",".join(MTL_COLUMNS).lower():
        return read_mtl_annotations(path, image_root=path.parent)
    if task in ("expr", "lsd"):
        return read_label_csv(path, LSD if task == "lsd" else ABAW_EXPR)
    return read_csv_labels(path, image_root=path.parent, au_labels=ABAW_AU)


def load_predictions(task: str, path: str | os.PathLike) -> FaceTable:
    path = Path(path)
    if path.is_dir():
        if task not in _PER_VIDEO_TASK:
            raise DataError(path, None, f"per-video prediction folders exist for va/expr/au, "
                                        f"not {task}")
        return read_per_video_folder(path, _PER_VIDEO_TASK[task], prediction=True)
    if _first_line(path) in (SUBMISSION_HEADER, ",".join(MTL_COLUMNS).lower()):
        return read_mtl_predictions(path)
    if task == "mtl":
        raise DataError(path, 1, f"an MTL prediction file starts with {SUBMISSION_HEADER!r}")
    if task in ("expr", "lsd"):
        return read_label_csv(path, LSD if task == "lsd" else ABAW_EXPR)
    return read_csv_labels(path, image_root=path.parent, au_labels=ABAW_AU)


def align(truth: FaceTable, pred: FaceTable, pred_source: str | Path) -> np.ndarray:
    """Row of ``pred`` for each row of ``truth``; missing / extra / duplicated -> DataError."""
    t, p = truth.df["image"], pred.df["image"]
    problems = []
    dup = p[p.duplicated()].unique().tolist()
    if dup:
        problems.append(f"{len(dup)} duplicated image(s): {dup[:5]}")
    missing = t[~t.isin(set(p))].tolist()
    if missing:
        problems.append(f"{len(missing)} image(s) of the truth not predicted: {missing[:5]}")
    extra = p[~p.isin(set(t))].tolist()
    if extra:
        problems.append(f"{len(extra)} image(s) not in the truth: {extra[:5]}")
    if problems:
        raise DataError(pred_source, None, "; ".join(problems))
    return pd.Index(p).get_indexer(t)


def score_tables(task: str, truth: FaceTable, pred: FaceTable, pred_source="predictions") -> dict:
    """Official scores of ``pred`` against ``truth`` for one task (or all three for mtl)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {TASKS}")
    idx = align(truth, pred, pred_source)
    out: dict = {"task": task, "rows": len(truth)}
    if task in ("mtl", "va"):
        out.update(metrics.va_scores(truth.va, pred.va[idx]))
    if task in ("mtl", "expr"):
        t = truth.with_expr_labels(ABAW_EXPR) if truth.expr_labels != ABAW_EXPR else truth
        out.update(metrics.expr_scores(t.expression, pred.expression[idx], ABAW_EXPR.classes))
    if task in ("mtl", "au"):
        t = truth.with_au_labels(ABAW_AU) if truth.au_labels != ABAW_AU else truth
        out.update(metrics.au_scores(t.au, pred.au[idx], ABAW_AU.classes))
    if task == "mtl":
        out["p_mtl"] = metrics.p_mtl(out)
    if task == "lsd":
        out.update(metrics.expr_scores(truth.expression, pred.expression[idx], LSD.classes))
        out["p_lsd"] = metrics.p_lsd(truth.expression, pred.expression[idx], len(LSD))
    return out


def score_files(task: str, truth: str | os.PathLike, pred: str | os.PathLike) -> dict:
    out = score_tables(task, load_truth(task, truth), load_predictions(task, pred), pred)
    out.update({"truth": str(truth), "pred": str(pred)})
    return out
