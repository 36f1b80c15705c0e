"""Windows of consecutive frames of one video, for temporal models (progressive learning).

ABAW frames are sampled and some have no face crop, so a video's frame numbers have gaps.
A window never spans a gap larger than ``max_gap`` frames: each video is cut into
segments at such gaps and windows tile each segment (the last one of a segment moved back
to end at the segment's end, so windows overlap rather than pad). Only a segment shorter
than the window is padded; padding positions have row ``-1`` and are kept out of losses
and metrics by ``valid``. Prediction over a whole video averages the overlapping windows'
outputs per frame (``average_windows``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .table import FaceTable

PAD = -1


@dataclass
class Windows:
    rows: np.ndarray  # (W, L) table row of each position, PAD for padding
    frames: np.ndarray  # (W, L) frame number of each position, PAD for padding
    videos: list[str]  # (W,) the video of each window

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def length(self) -> int:
        return self.rows.shape[1]

    @property
    def valid(self) -> np.ndarray:
        """(W, L) True where a position holds a real frame."""
        return self.rows != PAD


def segments(frames: np.ndarray, max_gap: int) -> list[np.ndarray]:
    """Positions (into the sorted ``frames``) of each run whose steps are <= ``max_gap``."""
    frames = np.asarray(frames)
    if len(frames) == 0:
        return []
    cuts = np.flatnonzero(np.diff(frames) > max_gap) + 1
    return np.split(np.arange(len(frames)), cuts)


def window_starts(n: int, length: int, stride: int) -> list[int]:
    """Starts of windows of ``length`` tiling ``n`` positions every ``stride``, the last
    moved back to end at ``n`` (one start, 0, when ``n <= length``)."""
    if n <= length:
        return [0]
    starts = list(range(0, n - length + 1, stride))
    if starts[-1] + length < n:
        starts.append(n - length)
    return starts


def make_windows(table: FaceTable, length: int, stride: int | None = None,
                 max_gap: int = 1) -> Windows:
    """Windows of ``length`` frames over every video of ``table`` (``stride``: default
    ``length``, no overlap but at segment ends), never across a gap over ``max_gap``."""
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    stride = stride or length
    if stride < 1:
        raise ValueError(f"window stride must be >= 1, got {stride}")
    if max_gap < 1:
        raise ValueError(f"max_gap must be >= 1 (1: consecutive frames only), got {max_gap}")
    all_frames = table.df["frame"].to_numpy()
    rows, frames, videos = [], [], []
    for video, idx in table.videos().items():
        f = all_frames[idx]
        for seg in segments(f, max_gap):
            for s in window_starts(len(seg), length, stride):
                pos = seg[s:s + length]
                r = np.full(length, PAD, np.int64)
                fr = np.full(length, PAD, np.int64)
                r[:len(pos)], fr[:len(pos)] = idx[pos], f[pos]
                rows.append(r)
                frames.append(fr)
                videos.append(video)
    if not rows:
        return Windows(np.zeros((0, length), np.int64), np.zeros((0, length), np.int64), [])
    return Windows(np.stack(rows), np.stack(frames), videos)


def average_windows(windows: Windows, values: np.ndarray, n_rows: int) -> np.ndarray:
    """Per table row, the mean of ``values`` (W, L, ...) over every window position holding
    that row (overlapping windows averaged); rows in no window are NaN."""
    values = np.asarray(values, np.float64)
    valid = windows.valid
    rows = windows.rows[valid]
    flat = values[valid]
    total = np.zeros((n_rows, *values.shape[2:]))
    count = np.zeros(n_rows)
    np.add.at(total, rows, flat)
    np.add.at(count, rows, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count.reshape(-1, *([1] * (values.ndim - 2)))
