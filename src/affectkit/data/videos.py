"""Inputs of inference that are not datasets: per-video test lists and bare image folders.

The per-video challenges' test lists name videos, not images; prediction needs one row
per face crop, so a list is expanded against the crops on disk. A folder of images with
no known layout (e.g. the LSD test set) is read as an unlabelled list of its images.
"""

from __future__ import annotations

import os
from pathlib import Path

from .abaw import default_image_root, list_frames
from .errors import DataError
from .folders import is_image, list_images
from .parse import read_lines
from .table import FaceTable, make_table_frame

VIDEO_LIST_HEADERS = ("video", "videos", "name")


def _list_entries(path: Path) -> list[tuple[int, str]]:
    try:
        return [(no, s.split(",")[0].strip()) for no, s in read_lines(path)]
    except UnicodeDecodeError:
        return []


def _without_header(entries: list[tuple[int, str]]) -> list[tuple[int, str]]:
    if entries and entries[0][1].lower() in VIDEO_LIST_HEADERS:
        return entries[1:]
    return entries


def is_video_list(path: Path) -> bool:
    """A text file of bare video names (no folder part, no image extension)."""
    if path.suffix.lower() == ".csv":
        return False
    entries = [e for _, e in _without_header(_list_entries(path))]
    return bool(entries) and all("/" not in e and "\\" not in e and not is_image(e) and e
                                 for e in entries)


def read_video_list(path: str | os.PathLike, image_root: str | os.PathLike | None = None
                    ) -> FaceTable:
    """A per-video test list (video names) -> one row per face crop of each video, videos
    in list order, frames in order. A video without crops is an error naming its folder."""
    path = Path(path)
    root = Path(image_root) if image_root else default_image_root(path)
    images, videos, frames, seen = [], [], [], {}
    for no, video in _without_header(_list_entries(path)):
        if video in seen:
            raise DataError(path, no, f"duplicate video {video!r} (first on line {seen[video]})")
        seen[video] = no
        crops = list_frames(root / video)
        if not crops:
            raise DataError(path, no, f"video {video!r} has no face crops under {root / video}")
        for f in sorted(crops):
            images.append(f"{video}/{crops[f]}")
            videos.append(video)
            frames.append(f)
    df = make_table_frame(images, video=videos, frame=frames)
    return FaceTable(df, root, source=str(path))


def read_image_folder(root: Path) -> FaceTable | None:
    """Every image under a folder that holds no known layout; None when it holds none."""
    files = list_images(root)
    if not files:
        return None
    return FaceTable(make_table_frame(files, frame=[-1] * len(files)), root, source=str(root))
