"""Line-level parsing shared by the readers: fast on good files, exact on bad ones.

Every reader parses whole files with numpy in one go; only when that fails
does it walk the rows to name the first bad line. Line numbers are 1-based
and count the header, as an editor shows them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..labels import VA_INVALID
from .errors import DataError


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a text file as (line number, text); BOM and CRLF tolerated."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    return [(i, s.strip()) for i, s in enumerate(text.splitlines(), 1) if s.strip()]


def split_rows(path: Path, lines: list[tuple[int, str]], columns) -> list[list[str]]:
    """Comma-split rows, each checked to have exactly ``len(columns)`` fields."""
    rows = [s.split(",") for _, s in lines]
    for (no, _), row in zip(lines, rows):
        if len(row) != len(columns):
            raise DataError(path, no, f"expected {len(columns)} comma-separated values "
                                      f"({','.join(columns)}), got {len(row)}")
    return rows


def to_float(path: Path, line_nos, rows: list[list[str]], columns) -> np.ndarray:
    """(N, len(columns)) float64 array from string rows; names the first non-number."""
    try:
        arr = np.array(rows, dtype=np.float64).reshape(len(rows), len(columns))
    except ValueError:
        for no, row in zip(line_nos, rows):
            for col, v in zip(columns, row):
                try:
                    float(v)
                except ValueError:
                    raise DataError(path, no, f"{col}: {v.strip()!r} is not a number") from None
        raise
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(path, line_nos[i], f"{columns[j]}: {rows[i][j].strip()!r} is not finite")
    return arr


def _first_bad(path, line_nos, values, ok, columns, what) -> None:
    if len(line_nos) == 0:
        return
    ok = np.asarray(ok).reshape(len(line_nos), -1)
    if ok.all():
        return
    i, j = np.argwhere(~ok)[0]
    col = columns[j] if len(columns) > j else columns[0]
    raise DataError(path, line_nos[i], f"{col} = {values.reshape(len(line_nos), -1)[i, j]:g} "
                                       f"{what} ({int((~ok).any(1).sum())} bad row(s) in file)")


def check_va(path, line_nos, va: np.ndarray, columns=("valence", "arousal")) -> np.ndarray:
    ok = (np.abs(va - VA_INVALID) < 1e-6) | ((va >= -1.0) & (va <= 1.0))
    _first_bad(path, line_nos, va, ok, columns, "is outside [-1, 1] and not the -5 sentinel")
    return va.astype(np.float32)


def check_int(path, line_nos, values: np.ndarray, low: int, high: int, columns) -> np.ndarray:
    """Integers in ``[low, high]`` (the -1 sentinel included by the caller's ``low``)."""
    ok = (values == np.round(values)) & (values >= low) & (values <= high)
    _first_bad(path, line_nos, values, ok, columns, f"is not an integer in [{low}, {high}]")
    return values.astype(np.int64)
