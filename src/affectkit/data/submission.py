"""Prediction files in the challenge's formats: read them (to score) and write them.

* MTL: header ``image,valence,arousal,expression,aus`` then 16 values a row.
* Per-video: ``<video>.txt`` per video, the task's header, one line per frame.
* Single-label tasks (EXPR on stills, LSD): ``image,label`` CSV.

``write_submission`` picks the format from what the model predicts and what was listed:
a list of video names gets the per-video files, one line per frame 1 .. the video's last
face crop, a frame without a crop taking the prediction of the nearest frame that has
one (the challenge wants a line for every frame); multi-task models write ``VA/``,
``EXPR/`` and ``AU/`` sub-folders, expression-only models the EXPR files directly (their
classes mapped to ABAW's 8 by name). A list of images gets the MTL submission
(multi-task) or the ``image,label`` CSV (expression only), in the list's order.

Writers validate everything before the (atomic) write: a submission the
server would reject never reaches the disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write, atomic_write_text
from ..labels import ABAW_AU, ABAW_EXPR, LabelSet
from ..metrics import binarize_au
from .abaw import MTL_COLUMNS, SUBMISSION_HEADER, parse_mtl_rows, read_task_file
from .errors import DataError
from .folders import read_csv_labels
from .parse import read_lines
from .table import FaceTable, make_table_frame

TASK_HEADERS = {"VA": "valence,arousal", "EXPR": ",".join(ABAW_EXPR.classes),
                "AU": ",".join(ABAW_AU.classes)}


def read_mtl_predictions(path: str | os.PathLike) -> FaceTable:
    """An MTL submission; every row must predict every task (no sentinels)."""
    path = Path(path)
    lines = read_lines(path)
    if not lines:
        raise DataError(path, None, "empty file")
    header = lines[0][1].replace(" ", "").lower()
    if header not in (SUBMISSION_HEADER, ",".join(MTL_COLUMNS).lower()):
        raise DataError(path, lines[0][0], f"expected header {SUBMISSION_HEADER!r}, "
                                           f"got {lines[0][1]!r}")
    images, va, expr, au = parse_mtl_rows(path, lines[1:], submission=True)
    return FaceTable(make_table_frame(images, va=va, expression=expr, au=au), None,
                     source=str(path))


def read_per_video_folder(folder: str | os.PathLike, task: str,
                          prediction: bool = False) -> FaceTable:
    """All ``<video>.txt`` files of one task folder, one row per line (frame i = line i+1).

    With ``prediction`` every line must hold a prediction (no -5 / -1 sentinels).
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DataError(folder, None, f"no per-video {task} .txt files")
    parts = []
    for f in files:
        values = read_task_file(f, task)
        if prediction:
            bad = np.flatnonzero((values == -5).any(1) if task == "VA" else
                                 (values < 0).reshape(len(values), -1).any(1))
            if bad.size:
                raise DataError(f, int(bad[0]) + 2, "a prediction file cannot hold the "
                                                   "'unlabelled' sentinel")
        frames = np.arange(1, len(values) + 1)
        kw = {"VA": {"va": values}, "EXPR": {"expression": values}, "AU": {"au": values}}[task]
        parts.append(make_table_frame([f"{f.stem}/{i:05d}.jpg" for i in frames],
                                      video=[f.stem] * len(frames), frame=frames, **kw))
    return FaceTable(pd.concat(parts, ignore_index=True), None, source=str(folder))


def read_label_csv(path: str | os.PathLike, labels: LabelSet) -> FaceTable:
    """``image,label`` (or any path + expression column) CSV; labels by name or index."""
    table = read_csv_labels(path, image_root=Path(path).parent, expr_labels=labels)
    return table.with_expr_labels(labels) if table.expr_labels != labels else table


# --- writers -------------------------------------------------------------------------------
def _check_predictions(n, va, expression, au):
    va = np.asarray(va, np.float64).reshape(n, 2)
    expression = np.asarray(expression).reshape(n)
    au = np.asarray(au).reshape(n, len(ABAW_AU))
    if not np.isfinite(va).all() or (np.abs(va) > 1).any():
        i = int(np.flatnonzero(~(np.isfinite(va) & (np.abs(va) <= 1)).all(1))[0])
        raise ValueError(f"row {i}: valence/arousal {va[i].tolist()} not finite in [-1, 1] "
                         "(clip model outputs before writing)")
    if not np.isin(expression, np.arange(len(ABAW_EXPR))).all():
        raise ValueError(f"expression predictions must be class indices 0..{len(ABAW_EXPR) - 1}")
    if not np.isin(au, (0, 1)).all():
        raise ValueError("AU predictions must be 0/1 (binarise probabilities with thresholds)")
    return va, expression.astype(np.int64), au.astype(np.int64)


def write_mtl_submission(path: str | os.PathLike, images, va, expression, au) -> Path:
    """Write an MTL submission in the test list's order, validated first."""
    images = [str(i) for i in images]
    if len(set(images)) != len(images):
        dup = pd.Series(images)[pd.Series(images).duplicated()].tolist()
        raise ValueError(f"duplicate images in predictions: {dup[:5]}")
    va, expression, au = _check_predictions(len(images), va, expression, au)
    rows = [SUBMISSION_HEADER]
    rows += [f"{img},{v:.6f},{a:.6f},{e}," + ",".join(map(str, u))
             for img, (v, a), e, u in zip(images, va, expression, au)]
    return atomic_write_text(path, "\n".join(rows) + "\n")


def write_per_video_predictions(folder: str | os.PathLike, task: str,
                                predictions: dict[str, np.ndarray]) -> list[Path]:
    """``{video: values}`` -> one ``<video>.txt`` per video; row i is frame i+1."""
    out = []
    for video, values in predictions.items():
        values = np.asarray(values)
        n = len(values)
        if task == "VA":
            va, _, _ = _check_predictions(n, values, np.zeros(n), np.zeros((n, len(ABAW_AU))))
            lines = [f"{v:.6f},{a:.6f}" for v, a in va]
        elif task == "EXPR":
            _, e, _ = _check_predictions(n, np.zeros((n, 2)), values, np.zeros((n, len(ABAW_AU))))
            lines = [str(x) for x in e]
        else:
            _, _, au = _check_predictions(n, np.zeros((n, 2)), np.zeros(n), values)
            lines = [",".join(map(str, r)) for r in au]
        out.append(atomic_write_text(Path(folder) / f"{video}.txt",
                                     "\n".join([TASK_HEADERS[task], *lines]) + "\n"))
    return out


def write_label_csv(path: str | os.PathLike, images, expression, labels: LabelSet,
                    label_format: str = "name") -> Path:
    """``image,label`` CSV (expression-only submissions), validated, written atomically."""
    images = [str(i) for i in images]
    expression = np.asarray(expression).reshape(-1)
    if len(images) != len(expression):
        raise ValueError(f"{len(images)} images for {len(expression)} predictions")
    if len(set(images)) != len(images):
        raise ValueError("duplicate images in predictions")
    if any(not i or "," in i for i in images):
        raise ValueError("image names must be non-empty and hold no comma")
    if not np.isin(expression, np.arange(len(labels))).all():
        raise ValueError(f"expression predictions must be class indices 0..{len(labels) - 1}")
    if label_format not in ("name", "index"):
        raise ValueError(f"label_format must be 'name' or 'index', got {label_format!r}")
    values = [labels.classes[e] if label_format == "name" else str(e) for e in expression]
    rows = ["image,label", *(f"{i},{v}" for i, v in zip(images, values))]
    return atomic_write_text(path, "\n".join(rows) + "\n")


def _fill_frames(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames 1..max and, for each, the position in ``frames`` (sorted) of the nearest one."""
    full = np.arange(1, int(frames.max()) + 1)
    right = np.clip(np.searchsorted(frames, full), 0, len(frames) - 1)
    left = np.clip(right - 1, 0, len(frames) - 1)
    pick = np.where(np.abs(frames[left] - full) <= np.abs(frames[right] - full), left, right)
    return full, pick


def write_per_video(folder: str | os.PathLike, table: FaceTable, hard: dict[str, np.ndarray],
                    labels: LabelSet, multitask: bool) -> list[Path]:
    """One ``<video>.txt`` per video and task (see the module doc); frames 1..last crop."""
    folder = Path(folder)
    expression = hard["expression"]
    if labels.name != ABAW_EXPR.name:
        expression = labels.convert(expression, ABAW_EXPR)
        if (expression < 0).any():
            lost = sorted({labels.classes[e] for e in hard["expression"][expression < 0]})
            raise ValueError(f"classes {lost} of {labels.name} have no ABAW EXPR class")
    tasks = {"EXPR": expression}
    if multitask:
        tasks = {"VA": hard["va"], "EXPR": expression, "AU": hard["au"]}
    out = []
    for video, rows in table.videos().items():
        frames = table.df["frame"].to_numpy()[rows]
        if (frames < 1).any():
            raise ValueError(f"video {video!r}: per-video files need frame numbers")
        _, pick = _fill_frames(frames)
        for task, values in tasks.items():
            target = folder / task if multitask else folder
            out += write_per_video_predictions(target, task, {video: values[rows][pick]})
    return out


def write_submission(out: str | os.PathLike, table: FaceTable, hard: dict[str, np.ndarray],
                     labels: LabelSet, *, multitask: bool, videos: bool,
                     label_format: str = "name") -> list[Path]:
    """The challenge's format for ``table`` (see the module doc), in the list's order."""
    if videos:
        return write_per_video(out, table, hard, labels, multitask)
    if multitask:
        if "va" not in hard:
            raise ValueError("this model has no VA head and the MTL submission needs "
                             "valence/arousal: write the per-image table instead "
                             "(--format table)")
        return [write_mtl_submission(out, table.images, hard["va"], hard["expression"],
                                     hard["au"])]
    return [write_label_csv(out, table.images, hard["expression"], labels, label_format)]


def au_column(name: str) -> str:
    """``'AU1'`` -> ``'AU01'``: the zero-padded names of per-image tables (py-feat, OpenFace)."""
    return f"AU{int(name[2:]):02d}" if name[2:].isdigit() else name


def prediction_table(images, arrays: dict[str, np.ndarray], labels: LabelSet,
                     au_thresholds=0.5) -> pd.DataFrame:
    """One row per image: ``image``, ``valence``/``arousal`` (empty for a model without
    VA), one probability column per expression class, ``expression`` (the argmax's name),
    and per AU ``AU01``.. probabilities and ``AU01_present``.. 0/1 at ``au_thresholds``."""
    n = len(images)
    cols: dict[str, object] = {"image": [str(i) for i in images]}
    va = arrays.get("va")
    cols["valence"] = va[:, 0] if va is not None else np.full(n, np.nan)
    cols["arousal"] = va[:, 1] if va is not None else np.full(n, np.nan)
    probs = arrays["expr_probs"]
    for j, name in enumerate(labels.classes):
        cols[name.lower()] = probs[:, j]
    cols["expression"] = [labels.classes[k].lower() for k in probs.argmax(-1)]
    if "au_probs" in arrays:
        au = np.clip(arrays["au_probs"], 0.0, 1.0)
        on = binarize_au(au, au_thresholds)
        names = [au_column(a) for a in ABAW_AU.classes]
        for j, name in enumerate(names):
            cols[name] = au[:, j]
        for j, name in enumerate(names):
            cols[f"{name}_present"] = on[:, j]
    return pd.DataFrame(cols)


def write_prediction_table(path: str | os.PathLike, table: pd.DataFrame) -> Path:
    """``prediction_table`` as CSV (or Parquet for a ``.parquet`` path), atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401 (pandas' Parquet engine)
        except ImportError:
            raise ValueError(f"{path}: writing Parquet needs pyarrow (pip install pyarrow); "
                             "or name a .csv file") from None
        return atomic_write(path, lambda f: table.to_parquet(f, index=False))
    return atomic_write_text(path, table.to_csv(index=False, float_format="%.5f"))
