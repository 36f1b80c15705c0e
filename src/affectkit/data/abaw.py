"""Readers for the ABAW / Aff-Wild2 releases.

* MTL static set (s-Aff-Wild2): ``training_set_annotations.txt`` etc.
* Per-video sets: ``<Annotations>/<Task>_Challenge/<Split>/<video>.txt``, line i = frame i.
* LSD: class folders of synthetic / real faces.
* Test lists: image names only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..labels import (
    ABAW_AU,
    ABAW_EXPR,
    AU_INVALID,
    EXPR_INVALID,
    LSD,
    VA_INVALID,
    au_valid,
    canonical_au,
    expr_valid,
    va_valid,
)
from .errors import DataError
from .folders import read_class_folders
from .parse import check_int, check_va, read_lines, split_rows, to_float
from .table import FaceTable, make_table_frame

MTL_COLUMNS = ("image", "valence", "arousal", "expression", *ABAW_AU.classes)
SUBMISSION_HEADER = "image,valence,arousal,expression,aus"

TASK_FOLDERS = {
    "VA": ("VA_Estimation_Challenge",),
    "EXPR": ("EXPR_Classification_Challenge", "EXPR_Recognition_Challenge"),
    "AU": ("AU_Detection_Challenge",),
}
SPLIT_FOLDERS = {"train": "Train_Set", "val": "Validation_Set", "test": "Test_Set"}
TASK_COLUMNS = {"VA": ("valence", "arousal"), "EXPR": ("expression",), "AU": ABAW_AU.classes}


def default_image_root(annotation_path: Path) -> Path:
    """``cropped_aligned`` beside the annotations, the ABAW convention."""
    for parent in (annotation_path.parent, annotation_path.parent.parent):
        if (parent / "cropped_aligned").is_dir():
            return parent / "cropped_aligned"
    return annotation_path.parent / "cropped_aligned"


def parse_mtl_rows(path: Path, lines, *, submission: bool = False):
    """Validated (images, va, expression, au) of MTL-format rows (annotations or predictions).

    In a submission every task must be predicted: no sentinels allowed.
    """
    rows = split_rows(path, lines, MTL_COLUMNS)
    nos = [no for no, _ in lines]
    images = [r[0].strip() for r in rows]
    for no, img in zip(nos, images):
        if not img:
            raise DataError(path, no, "empty image name")
    nums = to_float(path, nos, [r[1:] for r in rows], MTL_COLUMNS[1:])
    low = 0 if submission else -1
    if submission:
        ok = (nums[:, :2] >= -1.0) & (nums[:, :2] <= 1.0)
        if not ok.all():
            i = int(np.argwhere(~ok)[0, 0])
            raise DataError(path, nos[i], f"prediction {nums[i, :2].tolist()} is outside [-1, 1]")
        va = nums[:, :2].astype(np.float32)
    else:
        va = check_va(path, nos, nums[:, :2])
    expr = check_int(path, nos, nums[:, 2], low, len(ABAW_EXPR) - 1, ("expression",))
    au = check_int(path, nos, nums[:, 3:], low, 1, ABAW_AU.classes)
    seen: dict[str, int] = {}
    for no, img in zip(nos, images):
        if img in seen:
            raise DataError(path, no, f"duplicate image {img!r} (first on line {seen[img]})")
        seen[img] = no
    return images, va, expr, au


def read_mtl_annotations(path: str | os.PathLike, image_root: str | os.PathLike | None = None
                         ) -> FaceTable:
    """Read an MTL annotation file (header + ``video/frame.jpg,v,a,expr,AU1..AU26``)."""
    path = Path(path)
    lines = read_lines(path)
    if not lines:
        raise DataError(path, None, "empty file")
    header = [h.strip().lower() for h in lines[0][1].split(",")]
    if header != [c.lower() for c in MTL_COLUMNS]:
        raise DataError(path, lines[0][0], f"expected header {','.join(MTL_COLUMNS)!r}, "
                                           f"got {lines[0][1]!r}")
    images, va, expr, au = parse_mtl_rows(path, lines[1:])
    df = make_table_frame(images, va=va, expression=expr, au=au)
    root = Path(image_root) if image_root else default_image_root(path)
    return FaceTable(df, root, ABAW_EXPR, ABAW_AU, source=str(path))


def read_image_list(path: str | os.PathLike, image_root: str | os.PathLike | None = None
                    ) -> FaceTable:
    """A test list (``MTL_Challenge_test_set_release.txt``): image names, in challenge order.

    Only the first comma field counts; a first line starting with ``image`` is a header.
    """
    path = Path(path)
    lines = read_lines(path)
    if lines and lines[0][1].split(",")[0].strip().lower() == "image":
        lines = lines[1:]
    images, seen = [], {}
    for no, s in lines:
        img = s.split(",")[0].strip()
        if img in seen:
            raise DataError(path, no, f"duplicate image {img!r} (first on line {seen[img]})")
        seen[img] = no
        images.append(img)
    root = Path(image_root) if image_root else default_image_root(path)
    return FaceTable(make_table_frame(images), root, source=str(path))


# --- per-video annotation folders -----------------------------------------------------------
def _task_header_ok(task: str, header: list[str]) -> bool | list[int]:
    if task == "VA":
        return [h.lower() for h in header] == ["valence", "arousal"]
    if task == "EXPR":
        try:
            return [ABAW_EXPR.index(h) for h in header] == list(range(len(ABAW_EXPR)))
        except KeyError:
            return False
    try:  # AU: same AUs by canonical name; returns the column order to read them in
        pos = {canonical_au(h): i for i, h in enumerate(header)}
        return [pos[c] for c in ABAW_AU.canonical] if len(pos) == len(header) else False
    except KeyError:
        return False


def read_task_file(path: str | os.PathLike, task: str) -> np.ndarray:
    """Labels of one per-video file; row i is frame i + 1.

    VA -> (n, 2) float32; EXPR -> (n,) int64; AU -> (n, 12) int64 in ABAW order.
    """
    path = Path(path)
    lines = read_lines(path)
    if not lines:
        raise DataError(path, None, "empty file (expected a header line)")
    header = [h.strip() for h in lines[0][1].split(",")]
    order = _task_header_ok(task, header)
    if order is False:
        want = {"VA": "valence,arousal", "EXPR": ",".join(ABAW_EXPR.classes),
                "AU": ",".join(ABAW_AU.classes)}[task]
        raise DataError(path, lines[0][0], f"expected {task} header {want!r}, got {lines[0][1]!r}")
    body = lines[1:]
    if body and body[-1][0] - lines[0][0] != len(body):
        # a blank line inside the file would shift every later frame by one
        gaps = [no for (no, _), (nxt, _) in zip(lines, body) if nxt != no + 1]
        raise DataError(path, gaps[0] + 1, "blank line inside the file: line i must be frame i")
    cols = TASK_COLUMNS[task]
    rows = split_rows(path, body, cols)
    nos = [no for no, _ in body]
    nums = to_float(path, nos, rows, cols) if rows else np.zeros((0, len(cols)))
    if task == "VA":
        return check_va(path, nos, nums)
    if task == "EXPR":
        return check_int(path, nos, nums[:, 0], -1, len(ABAW_EXPR) - 1, cols)
    if isinstance(order, list) and order != list(range(len(cols))):
        nums = nums[:, order]
    return check_int(path, nos, nums, -1, 1, cols)


def find_task_dir(annotation_root: Path, task: str, split: str) -> Path | None:
    split_dir = SPLIT_FOLDERS.get(split, split)
    for base in (annotation_root, annotation_root / "Annotations"):
        for name in TASK_FOLDERS[task]:
            if (base / name / split_dir).is_dir():
                return base / name / split_dir
    return None


def list_frames(video_dir: Path) -> dict[int, str]:
    """Frame number -> file name of the face crops of one video (one directory listing)."""
    try:
        names = os.listdir(video_dir)
    except FileNotFoundError:
        return {}
    out = {}
    for name in names:
        stem = name.rsplit(".", 1)[0]
        if stem.isdigit():
            out[int(stem)] = name
    return out


def read_per_video(annotation_root: str | os.PathLike, image_root: str | os.PathLike,
                   split: str = "train", tasks=("VA", "EXPR", "AU"),
                   keep_unlabelled: bool = False) -> FaceTable:
    """Merge the per-video VA / EXPR / AU files of one split into one row per frame.

    Frames without a face crop under ``image_root/<video>/`` have no image and are
    skipped (counted in ``table.skipped``); so are frames with no valid label in any
    task unless ``keep_unlabelled``.
    """
    annotation_root, image_root = Path(annotation_root), Path(image_root)
    labels: dict[str, dict[str, np.ndarray]] = {}
    found = []
    for task in tasks:
        d = find_task_dir(annotation_root, task, split)
        if d is None:
            continue
        found.append(task)
        for f in sorted(d.glob("*.txt")):
            labels.setdefault(f.stem, {})[task] = read_task_file(f, task)
    if not found:
        raise DataError(annotation_root, None, f"no per-video annotations for split {split!r} "
                        f"(looked for {[TASK_FOLDERS[t][0] for t in tasks]}/"
                        f"{SPLIT_FOLDERS.get(split, split)})")
    skipped = {"annotated frames without a face crop": 0, "videos without a crop folder": 0,
               "frames with no valid label": 0}
    parts = []
    for video in sorted(labels):
        crops = list_frames(image_root / video)
        if not crops:
            skipped["videos without a crop folder"] += 1
        n_annot = max(len(v) for v in labels[video].values())
        frames = np.arange(1, n_annot + 1)
        has_crop = np.isin(frames, np.fromiter(crops, np.int64, len(crops)))
        skipped["annotated frames without a face crop"] += int((~has_crop).sum())
        frames = frames[has_crop]
        va = np.full((len(frames), 2), VA_INVALID, np.float32)
        expr = np.full(len(frames), EXPR_INVALID, np.int64)
        au = np.full((len(frames), len(ABAW_AU)), AU_INVALID, np.int64)
        for task, values in labels[video].items():
            inside = frames <= len(values)
            target = {"VA": va, "EXPR": expr, "AU": au}[task]
            target[inside] = values[frames[inside] - 1]
        labelled = va_valid(va) | expr_valid(expr) | au_valid(au).any(1)
        if not keep_unlabelled:
            skipped["frames with no valid label"] += int((~labelled).sum())
            frames, va, expr, au = frames[labelled], va[labelled], expr[labelled], au[labelled]
        images = [f"{video}/{crops[f]}" for f in frames]
        parts.append(make_table_frame(images, video=[video] * len(frames), frame=frames, va=va,
                                      expression=expr, au=au))
    df = pd.concat(parts, ignore_index=True) if parts else make_table_frame([])
    return FaceTable(df, image_root, ABAW_EXPR, ABAW_AU,
                     source=f"{annotation_root} [{split}: {','.join(found)}]", skipped=skipped)


def read_lsd(root: str | os.PathLike) -> FaceTable:
    """An LSD split folder: ANGER/, DISGUST/, ... (case and the ``ANGERE`` typo tolerated)."""
    return read_class_folders(root, LSD)

