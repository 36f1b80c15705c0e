"""A small SYNTHETIC dataset in the real ABAW layouts, for demos and tests.

The faces are drawn, not real: cartoon faces whose features follow their
labels (mouth curve ~ valence, eye opening ~ arousal, brows and mouth shape
~ AUs and expression), so a model trained on them can visibly learn. The
labels have the properties of the real files: sampled non-contiguous frames,
unsorted rows, sentinels for missing tasks, video names where one is a prefix
of another, frames whose face crop is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..io import atomic_write_text
from ..labels import ABAW_AU, ABAW_EXPR
from .abaw import MTL_COLUMNS, SUBMISSION_HEADER

VIDEOS = ("140", "140-30-632x360", "132-30-426x240", "10-60-1280x720_right",
          "22-30-1920x1080", "video5", "video9_left", "46-30-484x360")
_AU = {name: j for j, name in enumerate(ABAW_AU.classes)}


def draw_face(valence: float, arousal: float, expression: int, au: np.ndarray,
              rng: np.random.Generator, size: int = 112, mark: float = 3.0,
              spread: float = 12.0) -> Image.Image:
    """A cartoon face whose geometry follows the labels (invalid labels drawn neutral);
    the expression is a dot of radius ``mark`` on the forehead, its place on an ellipse of
    half-width ``spread`` (both at 112 px) telling the class. Background and skin colours
    are random per face: appearance noise a per-frame model cannot average away."""
    bg = tuple(int(c) for c in rng.integers(40, 200, 3))
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    s = size / 112
    skin = (int(rng.integers(150, 235)), int(rng.integers(110, 190)), int(rng.integers(90, 160)))
    jx, jy = rng.normal(0, 2, 2) * s
    cx, cy = size / 2 + jx, size / 2 + jy
    d.ellipse([cx - 38 * s, cy - 48 * s, cx + 38 * s, cy + 48 * s], fill=skin)
    v = 0.0 if valence < -1 else valence
    a = 0.0 if arousal < -1 else arousal
    on = {k: int(au[j] == 1) for k, j in _AU.items()}
    eye_h = (3 + 5 * (a + 1) / 2 + 3 * on["AU7"] * -0.5) * s
    brow_y = cy - 22 * s - 5 * s * (on["AU1"] or on["AU2"]) + 4 * s * on["AU4"]
    for side in (-1, 1):
        ex = cx + side * 15 * s
        d.ellipse([ex - 7 * s, cy - 12 * s - eye_h, ex + 7 * s, cy - 12 * s + eye_h], fill="white")
        d.ellipse([ex - 3 * s, cy - 15 * s, ex + 3 * s, cy - 9 * s], fill=(30, 30, 30))
        tilt = 4 * s * side * (on["AU4"] - on["AU1"])
        d.line([ex - 9 * s, brow_y - tilt, ex + 9 * s, brow_y + tilt], fill=(60, 40, 20),
               width=max(1, int(3 * s)))
        if on["AU6"]:
            d.ellipse([ex - 6 * s, cy + 2 * s, ex + 6 * s, cy + 8 * s], fill=(220, 120, 120))
    # mouth: curve with valence / AU12 / AU15, opening with AU25 / AU26 and arousal
    curve = (10 * v + 6 * on["AU12"] - 6 * on["AU15"]) * s
    open_h = (2 + 6 * on["AU25"] + 8 * on["AU26"] + 2 * max(a, 0)) * s
    mx, my, w = cx, cy + 25 * s, (16 + 4 * on["AU12"] - 4 * on["AU23"]) * s
    d.ellipse([mx - w, my - open_h / 2, mx + w, my + open_h / 2], fill=(90, 20, 30))
    d.line([mx - w, my - curve / 2, mx, my + curve / 2, mx + w, my - curve / 2],
           fill=(120, 30, 40), width=max(1, int(3 * s)))
    if expression >= 0:  # a small per-class mark on the forehead, learnable but not trivial
        r = mark * s
        ang = 2 * np.pi * expression / len(ABAW_EXPR)
        px, py = cx + spread * s * np.cos(ang), cy - 36 * s + spread * 5 / 12 * s * np.sin(ang)
        d.ellipse([px - r, py - r, px + r, py + r], fill=(40, 40, 160))
    return im


def _labels(n: int, rng: np.random.Generator):
    """Temporally smooth VA, a persistent expression, AUs consistent with both."""
    t = np.arange(n)
    ph = rng.uniform(0, 2 * np.pi, 2)
    va = np.stack([0.7 * np.sin(t / rng.uniform(15, 40) + ph[0]),
                   0.6 * np.sin(t / rng.uniform(10, 30) + ph[1])], 1) + rng.normal(0, 0.05, (n, 2))
    va = np.clip(va, -1, 1).round(3)
    expr = np.repeat(rng.integers(0, len(ABAW_EXPR), n // 20 + 1), 20)[:n]
    p = 1 / (1 + np.exp(-3 * va[:, :1] * rng.choice([-1, 1], (1, len(ABAW_AU)))))
    au = (rng.random((n, len(ABAW_AU))) < 0.3 + 0.4 * (p - 0.5)).astype(np.int64)
    happy = expr == ABAW_EXPR.index("Happiness")
    au[happy, _AU["AU12"]] = au[happy, _AU["AU6"]] = 1
    return va.astype(np.float32), expr, au


def write_sample(root: str | Path, frames_per_video: int = 60, seed: int = 0,
                 size: int = 112) -> dict[str, Path]:
    """Write the sample: MTL files, per-video folders, a test list, a prediction file."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    crops = root / "cropped_aligned"
    per_task = {"VA": "VA_Estimation_Challenge", "EXPR": "EXPR_Classification_Challenge",
                "AU": "AU_Detection_Challenge"}
    splits = {"train": VIDEOS[:5], "val": VIDEOS[5:7], "test": VIDEOS[7:]}
    mtl_rows: dict[str, list[str]] = {"train": [], "val": []}
    test_images, val_truth = [], []
    for split, videos in splits.items():
        for video in videos:
            n = frames_per_video + int(rng.integers(0, frames_per_video // 2))
            va, expr, au = _labels(n, rng)
            no_crop = set(rng.choice(np.arange(1, n + 1), size=max(1, n // 15), replace=False))
            (crops / video).mkdir(parents=True, exist_ok=True)
            for f in range(1, n + 1):
                if f not in no_crop:
                    draw_face(*va[f - 1], expr[f - 1], au[f - 1], rng, size).save(
                        crops / video / f"{f:05d}.jpg", quality=92)
            # per-video files hold every frame; some frames unlabelled per task
            va_f, expr_f, au_f = va.copy(), expr.copy(), au.copy()
            va_f[rng.random(n) < 0.1] = -5
            expr_f[rng.random(n) < 0.15] = -1
            au_f[rng.random(n) < 0.1] = -1
            if split != "test":
                split_dir = {"train": "Train_Set", "val": "Validation_Set"}[split]
                header = {"VA": "valence,arousal", "EXPR": ",".join(ABAW_EXPR.classes),
                          "AU": ",".join(ABAW_AU.classes)}
                body = {"VA": [f"{x:.3f},{y:.3f}" if x > -5 else "-5,-5" for x, y in va_f],
                        "EXPR": [str(e) for e in expr_f],
                        "AU": [",".join(map(str, r)) for r in au_f]}
                for task, folder in per_task.items():
                    atomic_write_text(root / "Annotations" / folder / split_dir / f"{video}.txt",
                                      "\n".join([header[task], *body[task]]) + "\n")
            # the MTL set samples frames with gaps (median ~4) from those with a crop
            have = np.array([f for f in range(1, n + 1) if f not in no_crop])
            picked = np.sort(rng.choice(have, size=len(have) // 3, replace=False))
            for f in picked:
                image = f"{video}/{f:05d}.jpg"
                if split == "test":
                    test_images.append(image)
                    continue
                i = f - 1
                row = [image, f"{va_f[i, 0]:g}", f"{va_f[i, 1]:g}", str(expr_f[i]),
                       *map(str, au_f[i])]
                mtl_rows[split].append(",".join(row))
                if split == "val":
                    val_truth.append((image, va[i], expr[i], au[i]))
    paths = {}
    for split, name in (("train", "training"), ("val", "validation")):
        rows = mtl_rows[split]
        rng.shuffle(rows)  # real files are not sorted
        paths[split] = atomic_write_text(root / f"{name}_set_annotations.txt",
                                         "\n".join([",".join(MTL_COLUMNS), *rows]) + "\n")
    rng.shuffle(test_images)
    paths["test"] = atomic_write_text(root / "MTL_Challenge_test_set_release.txt",
                                      "\n".join(test_images) + "\n")
    # a plausible prediction file for the validation set: noisy truth, submission format
    pred = [SUBMISSION_HEADER]
    for image, va, expr, au in sorted(val_truth):
        pv = np.clip(va * 0.8 + rng.normal(0, 0.2, 2), -1, 1)
        pe = expr if rng.random() < 0.6 else int(rng.integers(0, len(ABAW_EXPR)))
        pa = np.where(rng.random(len(au)) < 0.75, au, 1 - au)
        pred.append(",".join([image, f"{pv[0]:.4f}", f"{pv[1]:.4f}", str(pe), *map(str, pa)]))
    paths["pred"] = atomic_write_text(root / "predictions" / "validation_predictions.txt",
                                      "\n".join(pred) + "\n")
    atomic_write_text(root / "README.txt", (
        "SYNTHETIC sample written by `affectkit data sample`: drawn cartoon faces with\n"
        "labels in the real ABAW file layouts. Not Aff-Wild2 data; scores on it mean nothing\n"
        "about real faces. Layouts: training/validation_set_annotations.txt (MTL),\n"
        "Annotations/<Task>_Challenge/<Split>/<video>.txt (per-video), cropped_aligned/,\n"
        "MTL_Challenge_test_set_release.txt, predictions/validation_predictions.txt.\n"))
    return paths


# ----------------------------------------------------------------------------- temporal


def read_va_trace(path: str | Path) -> np.ndarray:
    """(N, 2) valence/arousal of a per-frame VA file: the ``affwild2_va_sample`` CSV
    (columns ``V``, ``A``) or an ABAW ``VA_Estimation_Challenge`` file (``-5``: unlabelled,
    dropped)."""
    import pandas as pd

    df = pd.read_csv(path)
    cols = [c for c in df.columns if c.strip().lower() in ("v", "valence")], \
        [c for c in df.columns if c.strip().lower() in ("a", "arousal")]
    if not cols[0] or not cols[1]:
        raise ValueError(f"{path}: no valence/arousal (V, A) columns in {list(df.columns)}")
    va = df[[cols[0][0], cols[1][0]]].to_numpy(np.float32)
    return va[(va > -5).all(1)]


def _smooth_va(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n)
    waves = [sum(amp * np.sin(t / period + phase) for amp, period, phase in
                 zip(rng.uniform(0.15, 0.45, 3), rng.uniform(20, 120, 3),
                     rng.uniform(0, 2 * np.pi, 3))) for _ in range(2)]
    return np.clip(np.stack(waves, 1), -1, 1).astype(np.float32)


def temporal_labels(n: int, rng: np.random.Generator, trace: np.ndarray | None = None,
                    fps: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels with real temporal structure: VA from ``trace`` (a random stretch of it,
    looped if short) or slow random waves; expressions in segments of 2-6 s; AUs that
    follow the expression and valence and persist for a second or more."""
    if trace is not None and len(trace):
        start = int(rng.integers(0, len(trace)))
        va = np.resize(np.roll(trace, -start, axis=0), (n, 2)).astype(np.float32)
    else:
        va = _smooth_va(n, rng)
    expr = np.empty(n, np.int64)
    i = 0
    while i < n:
        length = int(rng.integers(2 * fps, 6 * fps + 1))
        expr[i:i + length] = rng.integers(0, len(ABAW_EXPR) - 1)  # 'Other' too rare
        i += length
    au = np.zeros((n, len(ABAW_AU)), np.int64)
    for j in range(len(ABAW_AU)):  # each AU switches on/off in runs of >= 1 s
        i, state = 0, int(rng.random() < 0.3)
        while i < n:
            length = int(rng.integers(fps, 4 * fps + 1))
            au[i:i + length, j] = state
            state, i = 1 - state if rng.random() < 0.7 else state, i + length
    happy = expr == ABAW_EXPR.index("Happiness")
    au[happy, _AU["AU12"]] = au[happy, _AU["AU6"]] = 1
    au[va[:, 0] > 0.4, _AU["AU12"]] = 1
    return va, expr, au


def write_temporal_sample(root: str | Path, videos: int = 6, frames: int = 300, seed: int = 0,
                          size: int = 64, noise: float = 0.35, va_trace: np.ndarray | None = None,
                          missing: float = 0.08) -> dict[str, Path]:
    """A SYNTHETIC per-video dataset (ABAW per-video layout) where time matters.

    The labels are smooth in time (``temporal_labels``; VA driven by ``va_trace``, e.g.
    the real Aff-Wild2 trace in ``affwild2_va_sample``), but each frame is drawn from
    noisy labels: VA plus Gaussian noise of sd ``noise``, the true expression mark on 55%
    of frames (another class otherwise), each AU flipped on 20% of frames. So a per-frame
    model sees label noise a model over a window can average away (each frame's own
    labels are drawn plainly, with a larger expression mark than the other sample's, so
    that a small per-frame model reads them in a minute). Face crops are
    missing in runs (``missing`` of the frames), so frame numbers have gaps, as in ABAW.
    Two thirds of the videos train, the rest validate.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    crops = root / "cropped_aligned"
    per_task = {"VA": "VA_Estimation_Challenge", "EXPR": "EXPR_Classification_Challenge",
                "AU": "AU_Detection_Challenge"}
    header = {"VA": "valence,arousal", "EXPR": ",".join(ABAW_EXPR.classes),
              "AU": ",".join(ABAW_AU.classes)}
    n_train = max(1, round(videos * 2 / 3))
    paths: dict[str, Path] = {}
    for k in range(videos):
        video = f"temporal{k:02d}-30-{size}x{size}"
        split = "Train_Set" if k < n_train else "Validation_Set"
        n = frames + int(rng.integers(0, frames // 3 + 1))
        va, expr, au = temporal_labels(n, rng, va_trace)
        no_crop = np.zeros(n, bool)
        while no_crop.mean() < missing:  # missing crops come in runs (a face lost a while)
            start, length = int(rng.integers(0, n)), int(rng.integers(2, 12))
            no_crop[start:start + length] = True
        (crops / video).mkdir(parents=True, exist_ok=True)
        for f in range(n):
            if no_crop[f]:
                continue
            shown_va = np.clip(va[f] + rng.normal(0, noise, 2), -1, 1)
            shown_expr = expr[f] if rng.random() < 0.55 else int(rng.integers(0, len(ABAW_EXPR)))
            shown_au = np.where(rng.random(len(ABAW_AU)) < 0.2, 1 - au[f], au[f])
            draw_face(*shown_va, shown_expr, shown_au, rng, size, mark=6.0, spread=22.0).save(
                crops / video / f"{f + 1:05d}.jpg", quality=92)
        body = {"VA": [f"{x:.3f},{y:.3f}" for x, y in va], "EXPR": [str(e) for e in expr],
                "AU": [",".join(map(str, r)) for r in au]}
        for task, folder in per_task.items():
            paths[f"{task}/{video}"] = atomic_write_text(
                root / "Annotations" / folder / split / f"{video}.txt",
                "\n".join([header[task], *body[task]]) + "\n")
    atomic_write_text(root / "README.txt", (
        "SYNTHETIC temporal sample written by `affectkit data sample --temporal`: drawn\n"
        "cartoon faces from noisy per-frame labels around temporally smooth true labels\n"
        "(ABAW per-video layout). Not Aff-Wild2 data.\n"))
    paths["root"] = root
    return paths
