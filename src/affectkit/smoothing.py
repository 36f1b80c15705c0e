"""Temporal smoothing of per-frame predictions within each video.

Other top ABAW MTL entries smooth their per-frame outputs over time (a box or Gaussian
window), which raised one team's EXPR F1 by up to 7% and CCC by up to 25% relative
(shared/docs/abaw-reference.md, section 7). A video is smoothed segment by segment: a gap
of more than ``max_gap`` frames (the face lost a while) is a cut, never smoothed across.
Edges repeat the first and last frame, so a short segment keeps its length.
"""

from __future__ import annotations

import numpy as np

from .data.table import FaceTable
from .data.windows import segments

MODES = ("none", "box", "gaussian", "median")


def smooth_sequence(values: np.ndarray, width: int, mode: str) -> np.ndarray:
    """``values`` (T, ...) smoothed along time by a centred window of ``width`` frames
    (odd; 1 or ``mode='none'``: unchanged): ``box`` mean, ``gaussian`` (sigma =
    width / 6, so the window holds +-3 sigma) weighted mean, ``median`` per channel."""
    if mode not in MODES:
        raise ValueError(f"smoothing {mode!r}: one of {MODES}")
    if width < 1 or width % 2 == 0:
        raise ValueError(f"smoothing width must be an odd number >= 1, got {width}")
    values = np.asarray(values, np.float64)
    if mode == "none" or width == 1 or len(values) < 2:
        return values.copy()
    half = width // 2
    padded = np.pad(values, [(half, half)] + [(0, 0)] * (values.ndim - 1), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=0)  # (T, ..., w)
    if mode == "median":
        return np.median(windows, axis=-1)
    if mode == "box":
        return windows.mean(-1)
    x = np.arange(width) - half
    weights = np.exp(-0.5 * (x / (width / 6.0)) ** 2)
    return windows @ (weights / weights.sum())


def video_segments(table: FaceTable, max_gap: int) -> list[np.ndarray]:
    """Table rows of each run of one video's frames with no gap over ``max_gap``, in frame
    order: what smoothing may average over."""
    frames = table.df["frame"].to_numpy()
    out = []
    for rows in table.videos().values():
        out.extend(rows[seg] for seg in segments(frames[rows], max_gap))
    return out


def smooth_per_video(values: np.ndarray, table: FaceTable, width: int, mode: str,
                     max_gap: int = 10, parts: list[np.ndarray] | None = None) -> np.ndarray:
    """``values`` (N, ...) of ``table``'s rows smoothed within each video segment
    (``parts``: ``video_segments`` when the caller has them already)."""
    out = np.asarray(values, np.float64).copy()
    if mode == "none" or width == 1:
        return out
    for rows in parts if parts is not None else video_segments(table, max_gap):
        out[rows] = smooth_sequence(out[rows], width, mode)
    return out
