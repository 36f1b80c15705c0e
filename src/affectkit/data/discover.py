"""Find which layouts a folder holds and open every split in it.

One entry point for ``affectkit data check`` and, later, training: given an
ABAW release folder, an LSD folder, a CSV dataset or class folders, return
``{"<layout>/<split>": FaceTable}``. A split that fails to read is returned as
its ``DataError`` so a check can report every problem in one pass.

Layout ``images`` (any folder tree of unlabelled face images, for MAE pretraining) is
never detected, only named: every dataset folder holds images, and a labelled dataset
opened as unlabelled would train on nothing without an error.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..labels import LabelSet, canonical_expression
from .abaw import (
    MTL_COLUMNS,
    SPLIT_FOLDERS,
    TASK_FOLDERS,
    find_task_dir,
    read_image_list,
    read_lsd,
    read_mtl_annotations,
    read_per_video,
)
from .errors import DataError
from .folders import PATH_COLUMNS, read_class_folders, read_csv_labels, read_image_tree
from .table import FaceTable

MTL_FILES = {"train": "training_set_annotations.txt", "val": "validation_set_annotations.txt",
             "test": "MTL_Challenge_test_set_release.txt"}
LSD_FOLDERS = {"train": "training_set_synthetic_images", "val": "validation_set_real_images"}
LAYOUTS = ("mtl", "per-video", "lsd", "csv", "folders", "images")


def _csv_has_path_column(path: Path) -> bool:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return False
    return any(h.strip().lower() in PATH_COLUMNS for h in header)


def _is_class_folders(root: Path) -> bool:
    dirs = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    try:
        return bool(dirs) and all(canonical_expression(d) for d in dirs)
    except KeyError:
        return False


def detect_layouts(root: Path) -> list[str]:
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return ["csv"]
        return ["mtl"]
    found = []
    if any((root / f).is_file() for f in MTL_FILES.values()):
        found.append("mtl")
    if any(find_task_dir(root, t, s) for t in TASK_FOLDERS for s in SPLIT_FOLDERS):
        found.append("per-video")
    if any((root / f).is_dir() for f in LSD_FOLDERS.values()):
        found.append("lsd")
    if any(_csv_has_path_column(p) for p in root.glob("*.csv")):
        found.append("csv")
    if not found and _is_class_folders(root):
        found.append("folders")
    return found


def open_dataset(root: str | os.PathLike, layout: str = "auto",
                 image_root: str | os.PathLike | None = None,
                 expr_labels: LabelSet | None = None) -> dict[str, FaceTable | DataError]:
    """Every split of every layout found under ``root`` (or of the one named)."""
    root = Path(root)
    if not root.exists():
        raise DataError(root, None, "no such file or directory")
    layouts = detect_layouts(root) if layout == "auto" else [layout]
    if not layouts:
        raise DataError(root, None, "no known dataset layout here (expected ABAW MTL files, "
                                    "Annotations/<Task>_Challenge folders, LSD folders, a CSV "
                                    "with a path column, or class folders; for unlabelled "
                                    "images, name layout 'images')")
    crops = Path(image_root) if image_root else None
    out: dict[str, FaceTable | DataError] = {}

    def add(name, fn, *args, **kw):
        try:
            out[name] = fn(*args, **kw)
        except DataError as e:
            out[name] = e

    for lay in layouts:
        if lay == "mtl" and root.is_file():
            first = root.read_text(encoding="utf-8-sig").split("\n", 1)[0].strip().lower()
            reader = read_mtl_annotations if first == ",".join(MTL_COLUMNS).lower() \
                else read_image_list
            add(f"mtl/{root.stem}", reader, root, crops)
        elif lay == "mtl":
            for split, name in MTL_FILES.items():
                if (root / name).is_file():
                    reader = read_image_list if split == "test" else read_mtl_annotations
                    add(f"mtl/{split}", reader, root / name, crops)
        elif lay == "per-video":
            for split in ("train", "val"):
                if any(find_task_dir(root, t, split) for t in TASK_FOLDERS):
                    add(f"per-video/{split}", read_per_video, root,
                        crops or root / "cropped_aligned", split)
        elif lay == "lsd":
            for split, name in LSD_FOLDERS.items():
                if (root / name).is_dir():
                    add(f"lsd/{split}", read_lsd, root / name)
        elif lay == "csv":
            files = [root] if root.is_file() else sorted(
                p for p in root.glob("*.csv") if _csv_has_path_column(p))
            for f in files:
                try:
                    table = read_csv_labels(f, crops, expr_labels)
                except DataError as e:
                    out[f"csv/{f.stem}"] = e
                    continue
                for split, part in table.split().items():
                    out[f"csv/{f.stem}" + ("" if split == "all" else f"/{split}")] = part
        elif lay == "folders":
            add(f"folders/{root.name}", read_class_folders, root, expr_labels)
        elif lay == "images":
            try:
                for split, table in read_image_tree(root).items():
                    out[f"images/{split}"] = table
            except DataError as e:
                out["images/train"] = e
        else:
            raise ValueError(f"unknown layout {lay!r}; one of {LAYOUTS}")
    return out
