"""Generic layouts: class folders, a CSV of ``path`` + label columns, zipped image trees,
and unlabelled image trees (MAE pretraining).

These make datasets that are not ABAW (FER2013, CK+, AffectNet exports, CelebA, a
user's own) load as they are, with class names mapped by name.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..labels import (
    ABAW_AU,
    ABAW_EXPR,
    AFFECTNET8,
    CKPLUS,
    CKPLUS_AU,
    FER2013,
    LSD,
    VA_INVALID,
    LabelSet,
    canonical_au,
    canonical_expression,
)
from .errors import CorruptImageError, DataError
from .images import decode_rgb
from .parse import check_int, check_va, to_float
from .table import FaceTable, make_table_frame

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
PATH_COLUMNS = ("path", "image", "img", "file", "filename")
EXPR_COLUMNS = ("expression", "label", "expr", "emotion", "class")
VA_COLUMNS = {"valence": ("valence", "v"), "arousal": ("arousal", "a")}
SPLIT_COLUMNS = ("split", "usage", "fer2013_usage", "subset")
# smallest known set covering a dataset's class names wins (FER2013 before AffectNet-8)
_EXPR_CANDIDATES = (LSD, FER2013, CKPLUS, ABAW_EXPR, AFFECTNET8)
_AU_CANDIDATES = (ABAW_AU, CKPLUS_AU)


def is_image(path: Path | str) -> bool:
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def infer_expr_labels(names, where: str) -> LabelSet:
    """The smallest known label set that holds every class name in ``names``."""
    try:
        canon = {canonical_expression(n) for n in names}
    except KeyError as e:
        raise DataError(where, None, f"{e.args[0]}; pass the label set explicitly") from None
    fits = [s for s in _EXPR_CANDIDATES if canon <= set(s.canonical)]
    if not fits:
        raise DataError(where, None, f"no known label set holds all of {sorted(canon)}")
    return min(fits, key=len)


def read_class_folders(root: str | os.PathLike, labels: LabelSet | None = None) -> FaceTable:
    """``root/<class>/**/<image>``: folders matched to ``labels`` by name, never by order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, None, "not a directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(root, None, "no class folders")
    if labels is None:
        labels = infer_expr_labels([p.name for p in folders], str(root))
    images, classes = [], []
    for folder in folders:
        try:
            idx = labels.index(folder.name)
        except KeyError:
            raise DataError(folder, None, f"folder name is not a class of {labels.name} "
                                          f"{list(labels.classes)}") from None
        if idx in classes:
            raise DataError(folder, None, f"second folder for class {labels.classes[idx]!r}")
        files = sorted(str(p.relative_to(root)).replace(os.sep, "/")
                       for p in folder.rglob("*") if p.is_file() and is_image(p))
        images += files
        classes += [idx] * len(files)
    df = make_table_frame(images, frame=[-1] * len(images), expression=classes)
    return FaceTable(df, root, labels, ABAW_AU, source=str(root))


def _find_column(fields: list[str], names) -> str | None:
    lower = {f.strip().lower(): f for f in fields}
    return next((lower[n] for n in names if n in lower), None)


def read_csv_labels(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                    expr_labels: LabelSet | None = None, au_labels: LabelSet | None = None
                    ) -> FaceTable:
    """A CSV with a path column and any of: expression, valence/arousal, AU columns, split.

    Expression values may be class names (mapped by name; the label set is inferred
    when not given) or integer indices (then ``expr_labels`` is required). Extra
    columns (subject, sequence, ...) are kept.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows, nos = [], []
            for row in reader:
                if any(c.strip() for c in row):
                    rows.append(row)
                    nos.append(reader.line_num)
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    if not header:
        raise DataError(path, None, "empty file")
    for no, row in zip(nos, rows):
        if len(row) != len(header):
            raise DataError(path, no, f"expected {len(header)} values like the header, "
                                      f"got {len(row)}")
    cols = {h: [r[i].strip() for r in rows] for i, h in enumerate(header)}
    path_col = _find_column(header, PATH_COLUMNS)
    if path_col is None:
        raise DataError(path, 1, f"no image path column (one of {PATH_COLUMNS})")

    va = np.full((len(rows), 2), VA_INVALID, np.float32)
    va_cols = [_find_column(header, VA_COLUMNS[k]) for k in ("valence", "arousal")]
    if any(va_cols) and not all(va_cols):
        have, lack = ("valence", "arousal") if va_cols[0] else ("arousal", "valence")
        raise DataError(path, 1, f"{have} column without {lack}: VA needs both")
    if all(va_cols):
        va = check_va(path, nos, to_float(path, nos, list(zip(*(cols[c] for c in va_cols))),
                                          va_cols), tuple(va_cols))

    expression = None
    expr_col = _find_column(header, EXPR_COLUMNS)
    if expr_col is not None:
        values = cols[expr_col]
        numeric = bool(values) and all(v.lstrip("-").isdigit() for v in values)
        if numeric and expr_labels is None:
            raise DataError(path, 1, f"column {expr_col!r} holds class indices: name the label "
                                     "set they index (e.g. expr_labels=FER2013)")
        if expr_labels is None:
            for no, v in zip(nos, values):
                try:
                    canonical_expression(v)
                except KeyError:
                    raise DataError(path, no, f"{expr_col}: unknown expression {v!r}") from None
            expr_labels = infer_expr_labels(set(values), str(path))
        expression = []
        for no, v in zip(nos, values):
            try:
                expression.append(expr_labels.parse(v))
            except (KeyError, ValueError) as e:
                raise DataError(path, no, f"{expr_col}: {e.args[0]}") from None

    au_cols = []
    for h in header:
        try:
            au_cols.append((canonical_au(h), h))
        except KeyError:
            pass
    au = None
    if au_cols:
        canon = tuple(c for c, _ in au_cols)
        if au_labels is None:
            au_labels = next((s for s in _AU_CANDIDATES if set(s.canonical) == set(canon)),
                             LabelSet(f"{path.stem}_au", "au", canon))
        have = dict(au_cols)
        names = [have[c] for c in au_labels.canonical if c in have]
        coded = check_int(path, nos, to_float(path, nos, list(zip(*(cols[n] for n in names))),
                                              names), -1, 1, names)
        au = np.full((len(rows), len(au_labels)), -1, np.int64)  # AUs not in the file: -1
        au[:, [j for j, c in enumerate(au_labels.canonical) if c in have]] = coded

    # a CSV of video frames may name them itself; otherwise both come from the path
    video_col, frame_col = _find_column(header, ("video",)), _find_column(header, ("frame",))
    frame = None
    if frame_col is not None:
        frame = check_int(path, nos, to_float(path, nos, [[v] for v in cols[frame_col]],
                                              [frame_col]), 0, 10**9, [frame_col])[:, 0]
    used = {path_col, expr_col, video_col, frame_col, *va_cols, *(h for _, h in au_cols)}
    split_col = _find_column(header, SPLIT_COLUMNS)
    extra = {("split" if h == split_col else h): cols[h] for h in header
             if h not in used and h.strip()}
    au_labels = au_labels or ABAW_AU
    df = make_table_frame(cols[path_col], video=cols[video_col] if video_col else None,
                          frame=frame, va=va, expression=expression, au=au,
                          au_labels=au_labels, extra=extra)
    root = Path(image_root) if image_root else resolve_image_root(path.parent, cols[path_col])
    return FaceTable(df, root, expr_labels or ABAW_EXPR, au_labels, source=str(path))


# --- zipped image trees ---------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("AFFECTKIT_CACHE", Path.home() / ".cache" / "affectkit"))


def resolve_image_root(root: Path, images: list[str]) -> Path:
    """``root`` if the images are there; else the extracted copy of ``root/*.zip``."""
    probe = [i for i in images[:: max(1, len(images) // 20)]][:20]
    if not probe or any((root / i).exists() for i in probe):
        return root
    archives = sorted(root.glob("*.zip"))
    return extract_archives(archives) if archives else root


def extract_archives(archives: list[Path]) -> Path:
    """Extract zips once into the cache (atomically: a killed extraction leaves nothing)."""
    key = hashlib.sha1("|".join(f"{a.resolve()}:{a.stat().st_size}:{a.stat().st_mtime_ns}"
                                for a in archives).encode()).hexdigest()[:16]
    dest = cache_dir() / "archives" / f"{archives[0].parent.name}-{key}"
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        for archive in archives:
            try:
                with zipfile.ZipFile(archive) as z:
                    for member in z.namelist():
                        target = (tmp / member).resolve()
                        if not str(target).startswith(str(tmp.resolve())):
                            raise DataError(archive, None, f"member {member!r} escapes the archive")
                    z.extractall(tmp)
            except zipfile.BadZipFile as e:
                raise DataError(archive, None, f"not a valid zip archive ({e})") from None
        try:
            os.replace(tmp, dest)
        except OSError:  # another process (a DDP rank) finished the same extraction first
            if not dest.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# --- unlabelled image trees -----------------------------------------------------------------
VAL_FRACTION = 0.02  # share of an image tree held out for validation ...
VAL_MAX = 256  # ... at most this many images (a validation pass stays cheap)


def list_images(root: Path) -> list[str]:
    """Image files under ``root``, recursively, as sorted '/'-separated relative paths;
    hidden files and folders (``.cache``, ``.DS_Store``) are left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        out += [(rel / f).as_posix() for f in filenames
                if not f.startswith(".") and is_image(f)]
    return sorted(out)


def _held_out(images: list[str], fraction: float, cap: int) -> np.ndarray:
    """Boolean mask of the validation images: the ``round(fraction * n)`` (at least 1 when
    ``fraction`` > 0 and there are 2 images or more, at most ``cap``) whose path hashes
    lowest. It depends on the paths only: not on listing order, machine or seed, and
    adding images moves few."""
    n = len(images)
    least = 1 if fraction > 0 and n >= 2 else 0
    k = min(cap, max(least, round(fraction * n)))
    keys = np.array([int.from_bytes(hashlib.sha1(i.encode()).digest()[:8], "big")
                     for i in images], dtype=np.uint64)
    val = np.zeros(n, bool)
    val[np.argsort(keys, kind="stable")[:k]] = True
    return val


def read_image_tree(root: str | os.PathLike, val_fraction: float = VAL_FRACTION,
                    val_max: int = VAL_MAX) -> dict[str, FaceTable]:
    """Every image under ``root`` (recursive, any of ``IMAGE_EXTENSIONS``, and the images
    inside ``.zip`` files anywhere below it, extracted once to the cache), unlabelled,
    split into ``train`` and a small deterministic held-out ``val`` (see ``_held_out``).

    Image paths are relative to ``root``; with zips and loose files together, the zips'
    images are named by their absolute path in the cache (``image_root / abs`` is ``abs``).
    Labels are sentinels: this layout is for MAE pretraining. Whether every file decodes
    is checked apart (``drop_corrupt``): listing stays cheap.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, None, "not a directory (the images layout reads a folder tree)")
    loose = list_images(root)
    archives = sorted(p for p in root.rglob("*.zip")
                      if p.is_file() and not any(part.startswith(".")
                                                 for part in p.relative_to(root).parts))
    image_root, images = root, loose
    if archives:
        extracted = extract_archives(archives)
        inside = list_images(extracted)
        if not loose:
            image_root, images = extracted, inside
        else:
            images = loose + [(extracted / i).as_posix() for i in inside]
    if not images:
        raise DataError(root, None, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                                    "under this folder or in its zips")
    val = _held_out(images, val_fraction, val_max)
    names = np.array(images, dtype=object)
    out = {}
    for split, rows in (("train", ~val), ("val", val)):
        part = names[rows].tolist()
        df = make_table_frame(part, video=[i.rpartition("/")[0] for i in part],
                              frame=[-1] * len(part))
        out[split] = FaceTable(df, image_root, ABAW_EXPR, ABAW_AU, source=str(root))
    return out


def _decodes(path: str) -> str | None:
    """None if ``path`` decodes as an image, else why not."""
    try:
        with open(path, "rb") as f:
            decode_rgb(f.read(), path)
    except CorruptImageError as e:
        return e.message
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    return None


def find_corrupt(table: FaceTable, workers: int | None = None) -> dict[str, str]:
    """``{image: reason}`` for every image of ``table`` that exists but does not decode
    (fully decoded, on a thread pool: the decoders release the GIL). Missing files are
    ``find_missing``'s business and are not reported here."""
    from concurrent.futures import ThreadPoolExecutor

    if table.image_root is None or len(table) == 0:
        return {}
    paths = [str(table.image_root / i) for i in table.images]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        reasons = list(pool.map(_decodes, paths, chunksize=64))
    return {image: why for image, path, why in zip(table.images, paths, reasons)
            if why is not None and os.path.exists(path)}


def drop_corrupt(table: FaceTable, corrupt: str = "error", workers: int | None = None
                 ) -> FaceTable:
    """Fail on images that do not decode (default: ``DataError`` naming the first file and
    the count), or with ``corrupt='skip'`` drop them, each named in a warning and counted
    in ``table.skipped["corrupt images"]``: never silently."""
    if corrupt not in ("error", "skip"):
        raise ValueError(f"corrupt must be 'error' or 'skip', got {corrupt!r}")
    bad = find_corrupt(table, workers)
    if not bad:
        return table
    root = table.image_root
    if corrupt == "error":
        first, why = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more corrupt image(s))" if len(bad) > 1 else ""
        raise DataError(root / first, None, f"{why}{more}; pass data.corrupt=skip to drop "
                                            "corrupt images explicitly")
    for image, why in bad.items():
        log.warning("skipping corrupt image %s: %s", root / image, why)
    keep = np.flatnonzero(~table.df["image"].isin(set(bad)).to_numpy())
    out = table.subset(keep)
    out.skipped["corrupt images"] = out.skipped.get("corrupt images", 0) + len(bad)
    log.warning("%d corrupt image(s) skipped in %s", len(bad), table.source or root)
    return out
