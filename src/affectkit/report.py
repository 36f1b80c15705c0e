"""Evaluation reports: per-class and per-AU tables, figures and a Markdown summary.

``write_report`` takes the per-image arrays of ``engine.evaluation.infer`` (probabilities
and labels) with their scores and writes, into one folder:

* ``per_class.csv``: class, precision, recall, F1, support (valid labels of the class);
* ``per_au.csv`` (multi-task): AU, F1, threshold, positives, valid, and with tuned
  thresholds ``tuned_threshold``, ``tuned_F1``;
* ``predictions.csv``: multi-task ``image,valence,arousal,expression,AU1,...,AU26`` (the
  ABAW annotation columns; ``affectkit score --task mtl`` reads it), expression-only
  ``image,label`` with class names;
* ``confusion.png`` (row-normalised, counts annotated), ``au_f1.png`` (F1 per AU),
  ``va_scatter.png`` (predicted against true valence and arousal, CCC in the titles);
* ``report.md`` linking them.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no
display, the global backend untouched) and every file is written atomically.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .io import atomic_write, atomic_write_text
from .labels import ABAW_AU, AU_INVALID, EXPR_INVALID, LabelSet, va_valid
from .metrics import au_f1_per_au, binarize_au, ccc, f1_per_class

FILES = ("scores.json", "report.md", "predictions.csv", "per_class.csv", "per_au.csv",
         "confusion.png", "au_f1.png", "va_scatter.png")


# ----------------------------------------------------------------------------- tables


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts ``cm[true, predicted]`` over rows with a valid label."""
    t = np.asarray(y_true, np.int64).ravel()
    p = np.asarray(y_pred, np.int64).ravel()
    keep = t != EXPR_INVALID
    t, p = t[keep], p[keep]
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def per_class_rows(y_true, y_pred, labels: LabelSet) -> list[dict]:
    """Per class: precision, recall, F1 (the challenge's, 0 when undefined), support."""
    n = len(labels)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    f1 = f1_per_class(y_true, y_pred, n)
    return [{"class": c, "precision": float(precision[i]), "recall": float(recall[i]),
             "F1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(labels.classes)]


def per_au_rows(au_true, au_probs, thresholds=0.5, tuned_thresholds=None) -> list[dict]:
    """Per AU: F1 at ``thresholds``, the threshold, positives and valid frames (and the
    tuned threshold and its F1 when given)."""
    au_true = np.asarray(au_true, np.int64)
    k = au_true.shape[1]
    thr = np.broadcast_to(np.asarray(thresholds, np.float64), (k,))
    f1 = au_f1_per_au(au_true, binarize_au(au_probs, thr))
    valid = au_true != AU_INVALID
    rows = [{"AU": name, "F1": float(f1[j]), "threshold": float(thr[j]),
             "positives": int((au_true[:, j] == 1).sum()), "valid": int(valid[:, j].sum())}
            for j, name in enumerate(ABAW_AU.classes[:k])]
    if tuned_thresholds is not None:
        tthr = np.asarray(tuned_thresholds, np.float64)
        tf1 = au_f1_per_au(au_true, binarize_au(au_probs, tthr))
        for j, row in enumerate(rows):
            row["tuned_threshold"] = float(tthr[j])
            row["tuned_F1"] = float(tf1[j])
    return rows


def _cell(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Rows of dicts (the first row's keys as header) as CSV, atomically."""
    cols = list(rows[0]) if rows else []
    lines = [",".join(cols), *(",".join(_cell(r[c]) for c in cols) for r in rows)]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def write_predictions(path: str | os.PathLike, images, hard: dict[str, np.ndarray],
                      labels: LabelSet) -> Path:
    """Per-image predictions: the ABAW annotation columns for multi-task models
    (``image,valence,arousal,expression,AU1..AU26``), ``image,label`` (class names)
    for expression-only ones."""
    from .data.abaw import MTL_COLUMNS

    images = [str(i) for i in images]
    e = hard["expression"]
    if "au" in hard and "va" not in hard:  # multi-task without a VA head
        names = [c for c in MTL_COLUMNS if c.upper().startswith("AU")]
        rows = [",".join(["image", "expression", *names])]
        rows += [f"{i},{x}," + ",".join(map(str, u)) for i, x, u in zip(images, e, hard["au"])]
    elif "va" not in hard:
        rows = ["image,label", *(f"{i},{labels.classes[x]}" for i, x in zip(images, e))]
    else:
        va, au = hard["va"], hard["au"]
        rows = [",".join(MTL_COLUMNS)]
        rows += [f"{i},{v:.6f},{a:.6f},{x}," + ",".join(map(str, u))
                 for i, (v, a), x, u in zip(images, va, e, au)]
    return atomic_write_text(path, "\n".join(rows) + "\n")


# ----------------------------------------------------------------------------- figures


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    """A figure and its axes: a row of ``ncols``, or a column of ``nrows``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes[0] if nrows == 1 else axes[:, 0]


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """PNG into memory, then one atomic write."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def plot_confusion(path: str | os.PathLike, cm: np.ndarray, class_names, title: str = ""
                   ) -> Path:
    """Row-normalised confusion matrix (true rows, predicted columns), counts annotated."""
    cm = np.asarray(cm)
    n = len(class_names)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    side = 2.5 + 0.75 * n
    fig, (ax,) = _figure(side + 1.0, side)
    im = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=[f"{c} ({int(r)})" for c, r in zip(class_names, rows[:, 0])])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (support)")
    for i in range(n):
        for j in range(n):
            if cm[i, j] == 0:
                ax.text(j, i, "0", ha="center", va="center", fontsize=7, color="0.6")
            else:
                ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.0%}", ha="center",
                        va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "expression confusion (row-normalised)")
    return save_figure(fig, path)


def plot_au_f1(path: str | os.PathLike, au_names, f1, tuned_f1=None, title: str = "",
               label: str = "threshold 0.5") -> Path:
    """F1 per AU as bars (and the tuned thresholds' F1 beside them), mean as a line."""
    names, f1 = list(au_names), np.asarray(f1, np.float64)
    x = np.arange(len(names))
    fig, (ax,) = _figure(1.5 + 0.55 * len(names), 3.8)
    width = 0.4 if tuned_f1 is not None else 0.7
    shift = width / 2 if tuned_f1 is not None else 0.0
    ax.bar(x - shift, f1, width, label=f"{label} (mean {f1.mean():.3f})", color="tab:blue")
    if tuned_f1 is not None:
        t = np.asarray(tuned_f1, np.float64)
        ax.bar(x + shift, t, width, label=f"tuned thresholds (mean {t.mean():.3f})",
               color="tab:orange")
    ax.axhline(f1.mean(), color="tab:blue", lw=1, ls="--")
    ax.set_xticks(x, labels=names, rotation=45)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "AU F1")
    return save_figure(fig, path)


def plot_va(path: str | os.PathLike, va_true, va_pred, title: str = "") -> Path:
    """Predicted against true valence and arousal (two panels, labelled rows only),
    hexbin for large sets and a translucent scatter otherwise, CCC in the titles."""
    truth = np.asarray(va_true, np.float64).reshape(-1, 2)
    pred = np.asarray(va_pred, np.float64).reshape(-1, 2)
    keep = va_valid(truth)
    truth, pred = truth[keep], pred[keep]
    fig, axes = _figure(9.0, 4.6, ncols=2)
    for j, (ax, name) in enumerate(zip(axes, ("valence", "arousal"))):
        if len(truth) > 5000:
            ax.hexbin(truth[:, j], pred[:, j], gridsize=50, extent=(-1, 1, -1, 1),
                      bins="log", cmap="viridis", mincnt=1)
        elif len(truth):
            ax.scatter(truth[:, j], pred[:, j], s=8, alpha=0.35, lw=0, color="tab:blue")
        else:
            ax.text(0, 0, "no labelled frames", ha="center", va="center")
        ax.plot([-1, 1], [-1, 1], color="grey", lw=1, ls="--")
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_xticks(np.linspace(-1, 1, 5))
        ax.set_yticks(np.linspace(-1, 1, 5))
        ax.set_aspect("equal")
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(f"{name}: CCC {ccc(truth[:, j], pred[:, j]):.3f} (n={len(truth)})")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- report


_SCORE_KEYS = ("ccc_valence", "ccc_arousal", "va", "expr_f1", "expr_acc", "au_f1", "p_mtl",
               "p_lsd")


def write_report(out_dir: str | os.PathLike, arrays: dict[str, np.ndarray], images,
                 labels: LabelSet, scores: dict, hard: dict[str, np.ndarray], *,
                 au_thresholds=0.5, tuned_thresholds=None, title: str = "",
                 meta: dict | None = None) -> dict[str, Path]:
    """Write the tables, figures and ``report.md`` of one evaluation into ``out_dir``.

    ``arrays``: ``infer`` output (``expr_probs``, ``expr_true``; multi-task also ``va``,
    ``va_true``, ``au_probs``, ``au_true``). ``hard``: the submitted values
    (``inference.hard_predictions``). ``scores``: the official scores, with ``tuned``
    (scores at ``tuned_thresholds``) when thresholds were tuned. ``meta``: lines for the
    report's header (checkpoint, data, ...). Returns ``{file name: path}``.
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    y_true = arrays["expr_true"].astype(np.int64)
    y_pred = hard["expression"]
    class_rows = per_class_rows(y_true, y_pred, labels)
    paths["per_class.csv"] = write_csv(out / "per_class.csv", class_rows)
    paths["predictions.csv"] = write_predictions(out / "predictions.csv", images, hard, labels)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    paths["confusion.png"] = plot_confusion(
        out / "confusion.png", cm, labels.classes,
        f"expression: macro F1 {scores.get('expr_f1', 0.0):.3f} (row-normalised)")
    multitask = "au_probs" in arrays
    au_rows: list[dict] = []
    if multitask:
        au_rows = per_au_rows(arrays["au_true"], arrays["au_probs"], au_thresholds,
                              tuned_thresholds)
        paths["per_au.csv"] = write_csv(out / "per_au.csv", au_rows)
        thr_label = ("threshold 0.5" if np.ndim(au_thresholds) == 0
                     and float(au_thresholds) == 0.5 else "given thresholds")
        paths["au_f1.png"] = plot_au_f1(
            out / "au_f1.png", [r["AU"] for r in au_rows], [r["F1"] for r in au_rows],
            None if tuned_thresholds is None else [r["tuned_F1"] for r in au_rows],
            title="AU F1" + (" (tuned on this data: optimistic)"
                             if tuned_thresholds is not None else ""),
            label=thr_label)
        if "va" in arrays:
            paths["va_scatter.png"] = plot_va(out / "va_scatter.png", arrays["va_true"],
                                              arrays["va"])

    lines = [f"# {title or 'Evaluation report'}", ""]
    lines += [f"- {k}: {v}" for k, v in (meta or {}).items()]
    lines += ["", "## Scores", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {scores[k]:.4f} |" for k in _SCORE_KEYS if k in scores]
    tuned = scores.get("tuned")
    if tuned:
        lines += [f"| {k} (tuned AU thresholds, optimistic) | {tuned[k]:.4f} |"
                  for k in ("au_f1", "p_mtl") if k in tuned]
        if tuned.get("note"):
            lines += ["", f"*{tuned['note']}*"]
    lines += ["", "Official scores as `affectkit score` computes them: "
              "[scores.json](scores.json); per-image predictions: "
              "[predictions.csv](predictions.csv).", "",
              "## Expression", "", "![confusion matrix](confusion.png)", "",
              "[per_class.csv](per_class.csv)", "", markdown_table(class_rows), ""]
    if multitask:
        lines += ["## Action units", "", "![AU F1](au_f1.png)", "", "[per_au.csv](per_au.csv)",
                  "", markdown_table(au_rows), ""]
    if "va" in arrays:
        lines += ["## Valence and arousal", "", "![valence and arousal](va_scatter.png)", ""]
    paths["report.md"] = atomic_write_text(out / "report.md", "\n".join(lines))
    return paths


# ----------------------------------------------------------------------------- analyze


def plot_analysis(out_dir: str | os.PathLike, table, expression_columns: list[str],
                  au_columns: list[str]) -> list[Path]:
    """Per file and face of an ``analyze`` table: expression probabilities, valence and
    arousal (when the model has them) over time, and an AU heat map (AU x time). One PNG
    per (file, face): ``<file stem>-face<id>.png``; x is the timestamp (s) for a video,
    the frame number otherwise."""
    out_dir = Path(out_dir)
    paths = []
    faces = table[table["face_detected"] == 1]
    for (file, face), rows in faces.groupby(["file", "face_id"], sort=True):
        rows = rows.sort_values("frame")
        t = rows["timestamp"].to_numpy(dtype=float)
        x, xlabel = (t, "time (s)") if np.isfinite(t).all() else (rows["frame"].to_numpy(),
                                                                  "frame")
        has_va = rows["valence"].notna().any()
        n = 2 + int(has_va)
        fig, axes = _figure(9, 2.6 * n, nrows=n)
        ax = axes[0]
        for c in expression_columns:
            ax.plot(x, rows[c].to_numpy(dtype=float), label=c, linewidth=1.2)
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.set_title(f"{Path(file).name}, face {int(face)}: expression")
        ax.legend(fontsize=7, ncol=4, loc="upper right")
        k = 1
        if has_va:
            ax = axes[k]
            ax.plot(x, rows["valence"].to_numpy(dtype=float), label="valence")
            ax.plot(x, rows["arousal"].to_numpy(dtype=float), label="arousal")
            ax.set_ylim(-1, 1)
            ax.axhline(0, color="0.7", linewidth=0.8)
            ax.set_title("valence / arousal")
            ax.legend(fontsize=7)
            k += 1
        ax = axes[k]
        heat = rows[au_columns].to_numpy(dtype=float).T
        ax.imshow(heat, aspect="auto", vmin=0, vmax=1, cmap="viridis", interpolation="nearest",
                  extent=(float(x[0]), float(x[-1]) if len(x) > 1 else float(x[0]) + 1,
                          len(au_columns) - 0.5, -0.5))
        ax.set_yticks(range(len(au_columns)), au_columns, fontsize=7)
        ax.set_title("AU probability")
        ax.set_xlabel(xlabel)
        paths.append(save_figure(fig, out_dir / f"{Path(file).stem}-face{int(face)}.png"))
    return paths
