"""``affectkit data check``: what a dataset holds, per split and task, and what is wrong."""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .images import find_missing
from .table import FaceTable


def summarize(table: FaceTable, check_images: bool = True) -> dict:
    masks = table.masks()
    va, expr, au = table.va, table.expression, table.au
    out: dict = {"source": table.source, "rows": len(table),
                 "image_root": str(table.image_root) if table.image_root else None}
    videos = table.df.loc[table.df["frame"] >= 0, "video"].nunique()
    if videos:
        out["videos"] = int(videos)
    if table.skipped:
        out["skipped"] = {k: v for k, v in table.skipped.items() if v}
    n_va = int(masks["va"].sum())
    out["va"] = {"valid": n_va}
    if n_va:
        v = va[masks["va"]]
        out["va"].update({"valence_mean": round(float(v[:, 0].mean()), 4),
                          "valence_std": round(float(v[:, 0].std()), 4),
                          "arousal_mean": round(float(v[:, 1].mean()), 4),
                          "arousal_std": round(float(v[:, 1].std()), 4)})
    counts = np.bincount(expr[masks["expression"]], minlength=len(table.expr_labels))
    out["expression"] = {"labels": table.expr_labels.name, "valid": int(counts.sum()),
                         "counts": {c: int(n) for c, n in zip(table.expr_labels.classes, counts)}}
    m = masks["au"]
    out["au"] = {"labels": table.au_labels.name, "valid_rows": int(m.any(1).sum())}
    if m.any():
        pos = np.where(m, au, 0).sum(0) / np.maximum(m.sum(0), 1)
        out["au"]["positive_rate"] = {c: round(float(p), 4) if m[:, j].any() else None
                                      for j, (c, p) in enumerate(zip(table.au_labels.classes, pos))}
    if check_images and table.image_root is not None:
        missing = find_missing(table)
        out["missing_images"] = {"count": len(missing), "examples": missing[:5]}
    return out


def check(tables: dict[str, FaceTable | DataError], allow_missing: bool = False,
          check_images: bool = True) -> tuple[dict, list[str]]:
    """Summaries of every split, and the errors that make the check fail."""
    report, errors = {}, []
    for name, table in tables.items():
        if isinstance(table, DataError):
            report[name] = {"error": str(table)}
            errors.append(f"{name}: {table}")
            continue
        report[name] = summarize(table, check_images)
        miss = report[name].get("missing_images", {}).get("count", 0)
        if miss and not allow_missing:
            errors.append(f"{name}: {miss} missing image(s) under {table.image_root}, e.g. "
                          f"{report[name]['missing_images']['examples'][:3]}")
        if len(table) == 0:
            errors.append(f"{name}: no rows")
    return report, errors


def format_report(report: dict) -> str:
    """Human-readable summary, one block per split."""
    lines = []
    for name, s in report.items():
        lines.append(f"== {name}")
        if "error" in s:
            lines.append(f"  ERROR {s['error']}")
            continue
        lines.append(f"  source: {s['source']}")
        lines.append(f"  rows: {s['rows']}" + (f" in {s['videos']} videos" if "videos" in s
                                                else ""))
        for why, n in s.get("skipped", {}).items():
            lines.append(f"  skipped: {n} {why}")
        va = s["va"]
        if va["valid"]:
            lines.append(f"  VA: {va['valid']} valid; valence {va['valence_mean']:+.3f} "
                         f"+- {va['valence_std']:.3f}, arousal {va['arousal_mean']:+.3f} "
                         f"+- {va['arousal_std']:.3f}")
        ex = s["expression"]
        if ex["valid"]:
            counts = ", ".join(f"{c} {n}" for c, n in ex["counts"].items())
            lines.append(f"  EXPR ({ex['labels']}): {ex['valid']} valid; {counts}")
        au = s["au"]
        if au["valid_rows"]:
            rates = ", ".join(f"{c} {p:.2f}" for c, p in au["positive_rate"].items()
                              if p is not None)
            lines.append(f"  AU ({au['labels']}): {au['valid_rows']} rows with labels; "
                         f"positive rate {rates}")
        if "missing_images" in s:
            mi = s["missing_images"]
            lines.append(f"  missing images: {mi['count']}"
                         + (f" e.g. {', '.join(mi['examples'][:3])}" if mi["count"] else ""))
    return "\n".join(lines)
