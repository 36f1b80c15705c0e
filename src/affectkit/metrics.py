"""ABAW challenge metrics (Aff-Wild2), numpy only, computed the way the challenge scores them.

VA: Lin's CCC per dimension over the whole set; EXPR: macro F1 over all 8 classes; AU: mean
over the 12 AUs of the positive-class F1. Rows carrying the release sentinels (VA ``-5``,
EXPR ``-1``, AU ``-1`` per AU) are ignored. Degenerate inputs give 0.0, never NaN, so a
score dict can always be logged, averaged and compared.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .io import atomic_write_json
from .labels import AU_INVALID, EXPR_INVALID, canonical_au, va_valid

DEFAULT_AU_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def ccc(x, y) -> float:
    """Lin's concordance correlation with population (ddof=0) moments, in float64.

    Fewer than 2 samples or a constant x or y give 0.0: the covariance is then exactly 0
    (round-off could otherwise turn two equal constants, a zero denominator, into 1.0 or NaN),
    and a NaN would poison averaged scores.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"ccc: shapes differ {x.shape} vs {y.shape}")
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    den = x.var() + y.var() + (mx - my) ** 2
    return float(2.0 * cov / den) if den > 0 else 0.0


def va_scores(truth, pred) -> dict:
    """CCC of valence and arousal on rows whose two truth values are not the -5 sentinel."""
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 2)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    if truth.shape != pred.shape:
        raise ValueError(f"va_scores: shapes differ {truth.shape} vs {pred.shape}")
    valid = va_valid(truth)
    cv = ccc(truth[valid, 0], pred[valid, 0])
    ca = ccc(truth[valid, 1], pred[valid, 1])
    return {"ccc_valence": cv, "ccc_arousal": ca, "va": (cv + ca) / 2, "va_count": int(valid.sum())}


def _f1(tp, fp, fn) -> np.ndarray:
    """2tp / (2tp + fp + fn); 0 where nothing was true or predicted (sklearn zero_division=0)."""
    tp, den = np.asarray(tp, np.float64), 2.0 * np.asarray(tp, np.float64) + fp + fn
    return np.divide(2.0 * tp, den, out=np.zeros_like(den), where=den > 0)


def _expr_valid(y_true, y_pred, num_classes: int):
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shapes differ {y_true.shape} vs {y_pred.shape}")
    valid = y_true != EXPR_INVALID
    t, p = y_true[valid], y_pred[valid]
    for name, v in (("labels", t), ("predictions", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"expression {name} out of range 0..{num_classes - 1}")
    return t, p


def f1_per_class(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Per-class F1 from a confusion matrix; rows with truth -1 are ignored.

    Predictions are only checked on those valid rows (out of range -> ValueError).
    """
    t, p = _expr_valid(y_true, y_pred, num_classes)
    cm = np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, -1)
    tp = np.diag(cm)
    return _f1(tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp)


def expr_scores(y_true, y_pred, class_names) -> dict:
    """Macro F1 over ALL classes (absent ones count as 0, as the challenge does), plus accuracy."""
    names = list(class_names)
    f1 = f1_per_class(y_true, y_pred, len(names))
    t, p = _expr_valid(y_true, y_pred, len(names))
    return {
        "expr_f1": float(f1.mean()),
        "expr_f1_per_class": {n: float(v) for n, v in zip(names, f1, strict=True)},
        "expr_acc": float((t == p).mean()) if t.size else 0.0,
        "expr_count": int(t.size),
    }


def au_f1_per_au(y_true, y_pred) -> np.ndarray:
    """Positive-class F1 per AU on that AU's valid rows; no valid rows or no positives -> 0.0."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 2 or y_true.shape != y_pred.shape:
        raise ValueError(f"need equal (N, K) shapes, got {y_true.shape}, {y_pred.shape}")
    valid = y_true != AU_INVALID
    if not np.isin(y_pred[valid], (0, 1)).all():
        raise ValueError("AU predictions must be 0/1; binarize probabilities first (binarize_au)")
    t, p = (y_true == 1) & valid, (y_pred == 1) & valid
    tp = (t & p).sum(axis=0)
    return _f1(tp, p.sum(axis=0) - tp, t.sum(axis=0) - tp)


def au_scores(y_true, y_pred, au_names) -> dict:
    """Mean positive-class F1 over the AUs (the challenge's AU score), with per-AU details."""
    names = list(au_names)
    f1 = au_f1_per_au(y_true, y_pred)
    if len(names) != f1.size:
        raise ValueError(f"au_scores: {len(names)} AU names for {f1.size} AU columns")
    counts = (np.asarray(y_true) != AU_INVALID).sum(axis=0)
    return {
        "au_f1": float(f1.mean()) if f1.size else 0.0,
        "au_f1_per_au": {n: float(v) for n, v in zip(names, f1, strict=True)},
        "au_count": {n: int(c) for n, c in zip(names, counts, strict=True)},
    }


def binarize_au(probs, thresholds=0.5) -> np.ndarray:
    """0/1 AU predictions: ``probs > threshold`` (scalar or one per AU).

    Thresholds apply to sigmoid PROBABILITIES. Some papers' public code compared logits with
    0.5, which is a probability threshold of ~0.62; values outside [0, 1] are rejected here.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.size and (probs.min() < 0 or probs.max() > 1):
        raise ValueError("binarize_au expects probabilities in [0, 1], not logits")
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim and thr.shape != probs.shape[-1:]:
        raise ValueError(f"{thr.size} thresholds for {probs.shape[-1]} AUs")
    return (probs > thr).astype(np.int64)


def tune_au_thresholds(probs, y_true, grid=None) -> np.ndarray:
    """Per-AU threshold in ``grid`` maximising that AU's F1 on its valid rows.

    Ties go to the threshold closest to 0.5 (the untuned default), so a flat F1 curve, an AU
    without positives or one without valid rows all keep 0.5 when the grid has it.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    grid = DEFAULT_AU_GRID if grid is None else np.asarray(grid, dtype=np.float64).ravel()
    if probs.shape != y_true.shape or probs.ndim != 2:
        raise ValueError(f"need equal (N, K) shapes, got {probs.shape}, {y_true.shape}")
    order = np.lexsort((grid, np.abs(grid - 0.5)))  # closest to 0.5 first; argmax keeps first max
    g = grid[order]
    valid = y_true != AU_INVALID
    pos = (y_true == 1) & valid
    # counts per (AU, threshold): predicted positives and true positives among valid rows
    pred = probs[:, :, None] > g  # (N, K, G)
    pp = np.einsum("nkg,nk->kg", pred, valid, dtype=np.int64)
    tp = np.einsum("nkg,nk->kg", pred, pos, dtype=np.int64)
    f1 = _f1(tp, pp - tp, pos.sum(axis=0)[:, None] - tp)
    best = g[f1.argmax(axis=1)]
    return np.where(valid.any(axis=0), best, 0.5)


def save_au_thresholds(path, thresholds, au_names, **meta) -> Path:
    """Write thresholds with their AU names, so a later load cannot apply them to wrong columns."""
    thr = np.asarray(thresholds, dtype=np.float64).ravel()
    names = list(au_names)
    if thr.size != len(names):
        raise ValueError(f"{thr.size} thresholds for {len(names)} AU names")
    return atomic_write_json(path, {"au_names": names, "thresholds": thr.tolist(), **meta})


def load_au_thresholds(path: str | os.PathLike, au_names) -> np.ndarray:
    """Thresholds in the order of ``au_names`` (matched by canonical AU name)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    file_names = [canonical_au(n) for n in data["au_names"]]
    thr = np.asarray(data["thresholds"], dtype=np.float64)
    want = [canonical_au(n) for n in au_names]
    if len(file_names) != thr.size or len(set(file_names)) != len(file_names):
        raise ValueError(f"{path}: malformed thresholds file ({data['au_names']})")
    if sorted(file_names) != sorted(want):
        missing = sorted(set(want) - set(file_names))
        extra = sorted(set(file_names) - set(want))
        raise ValueError(
            f"{path}: AU names {data['au_names']} do not match {list(au_names)} "
            f"(missing {missing}, unexpected {extra})"
        )
    return thr[[file_names.index(n) for n in want]]


def p_mtl(scores: dict) -> float:
    """ABAW3/4 multi-task performance P_MTL = VA CCC mean + EXPR macro F1 + AU mean F1."""
    return float(scores["va"] + scores["expr_f1"] + scores["au_f1"])


def p_lsd(y_true, y_pred, num_classes: int = 6) -> float:
    """ABAW4 learning-from-synthetic-data score: macro F1 over the 6 LSD classes."""
    return float(f1_per_class(y_true, y_pred, num_classes).mean())
