"""Regenerate the Markdown summary of the real-data benchmarks from their results JSONs.

    python benchmarks/real/report.py         # benchmarks/results/*.json -> benchmarks/RESULTS.md
    python benchmarks/real/report.py --results DIR --out FILE

One section per benchmark and profile (tables with the published figures beside), then
the ABAW4 paper's claims, each checked on the numbers: ``holds``, ``does not hold`` or
``inconclusive``, with the margin and its uncertainty:

- three seeds or more: the 95% t-interval of the mean per-seed difference; the claim
  holds when the interval lies above 0, does not hold when it lies below 0, and is
  inconclusive otherwise;
- CK+ folds: the same over the per-fold differences (folds are paired: same subjects);
- one or two seeds with per-image predictions: a 95% paired bootstrap interval over the
  test images (2,000 resamples) of the difference (averaged over the seeds). It covers
  test-set sampling only, not the spread between training seeds, which needs three seeds
  or more.

Smoke-profile results are left out unless every file is a smoke result (or
``--include-smoke``): their numbers only show that the harness runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from affectkit.io import atomic_write_text

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = REPO / "benchmarks" / "results"
DEFAULT_MD = REPO / "benchmarks" / "RESULTS.md"
PROFILE_ORDER = {"gpu": 0, "cpu-p8": 1, "cpu": 2, "cpu-long": 3, "smoke": 4}
BENCH_ORDER = {"mae": -1, "default-model": -2, "fer2013": 0, "ckplus": 1, "cross-domain": 2}
ABAW_AUS = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24",
            "AU25", "AU26")
N_BOOT = 2000
# a model whose test accuracy is less than this above always predicting the training set's
# majority class has learned (next to) nothing
CHANCE_MARGIN = 0.05
# a profile that reruns another's comparisons at a scale where the models learn: a row of
# the older profile whose two models stayed at the class prior gives way to the same row
# of the newer one once that is measured there (cpu: ViTs at 16 tokens; cpu-p8: 36)
SUPERSEDED_BY = {"cpu": "cpu-p8"}


# ----------------------------------------------------------------------------- numbers


def decode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8).astype(np.int64) - ord("0")


def macro_f1(truth: np.ndarray, pred: np.ndarray, k: int) -> float:
    cm = np.bincount(truth * k + pred, minlength=k * k).reshape(k, k).astype(np.float64)
    tp = np.diag(cm)
    den = cm.sum(0) + cm.sum(1)
    return float(np.mean(np.divide(2 * tp, den, out=np.zeros(k), where=den > 0)))


def bootstrap_diff(truth, pred_a, pred_b, k: int, n: int = N_BOOT, seed: int = 0
                   ) -> np.ndarray:
    """``n`` paired bootstrap resamples of macro F1(a) - macro F1(b) over the test images
    (the resamples depend only on ``seed`` and the number of images, so the draws of
    several seeds' models on one test set line up and can be averaged)."""
    rng = np.random.default_rng(seed)
    m = len(truth)
    out = np.empty(n)
    chunk = max(1, 2_000_000 // max(m, 1))
    for s in range(0, n, chunk):
        b = min(chunk, n - s)
        idx = rng.integers(0, m, (b, m))
        t = truth[idx]
        offs = (np.arange(b) * k * k)[:, None]
        f1s = []
        for p in (pred_a[idx], pred_b[idx]):
            cm = np.bincount((offs + t * k + p).ravel(), minlength=b * k * k)
            cm = cm.reshape(b, k, k).astype(np.float64)
            tp = np.diagonal(cm, axis1=1, axis2=2)
            den = cm.sum(1) + cm.sum(2)
            f1s.append(np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0).mean(1))
        out[s:s + b] = f1s[0] - f1s[1]
    return out


def mean_sd(values) -> tuple[float | None, float | None, int]:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return None, None, 0
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None), len(v)


def pct(x, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def pct_sd(values, digits: int = 1) -> str:
    m, s, n = mean_sd(values)
    if m is None:
        return "–"
    return pct(m, digits) + (f" ± {100 * s:.{digits}f}" if s is not None else "")


def num(x, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


# ----------------------------------------------------------------------------- verdicts


# two-sided 95% quantiles of Student's t, by degrees of freedom
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
    return _T975[max(k for k in _T975 if k <= df)] if df < 30 else 1.96 + 2.4 / df


def verdict_from_diffs(diffs: list[float], unit: str = "pt") -> dict:
    """Several paired differences (seeds or folds): the 95% t-interval of their mean."""
    m, s, n = mean_sd(diffs)
    if n >= 2 and s is not None:
        half = t975(n - 1) * s / math.sqrt(n)
        v = "holds" if m - half > 0 else "does not hold" if m + half < 0 else "inconclusive"
        return {"margin": m, "spread": f"95% t-interval [{100 * (m - half):+.1f}, "
                                       f"{100 * (m + half):+.1f}] {unit}, sd {100 * s:.1f} "
                                       f"(n = {n}); {sum(d > 0 for d in diffs)}/{n} positive",
                "verdict": v}
    if n == 1:
        return {"margin": m, "spread": "one value: no spread", "verdict": "inconclusive"}
    return {"margin": None, "spread": "not measured", "verdict": "not measured"}


def verdict_from_bootstrap(margin: float, draws: np.ndarray, seeds: int,
                           unit: str = "pt") -> dict:
    lo, hi = np.percentile(draws, [2.5, 97.5])
    v = "holds" if lo > 0 else "does not hold" if hi < 0 else "inconclusive"
    what = "one seed" if seeds == 1 else f"mean of {seeds} seeds"
    return {"margin": margin, "spread": f"95% bootstrap CI [{100 * lo:+.1f}, {100 * hi:+.1f}] "
                                        f"{unit} (test images; {what})", "verdict": v}


def paired_claim(runs: list[dict], a: str, b: str, where: tuple[str, ...], k: int) -> dict:
    """Macro F1 of model ``a`` minus model ``b`` at ``where`` (e.g. ("private",)) over the
    seeds that have both; one seed: bootstrap over the test images."""
    pairs = [(get(r, "models", a, *where), get(r, "models", b, *where)) for r in runs]
    pairs = [(x, y) for x, y in pairs if x and y]
    if not pairs:
        return {"margin": None, "spread": "not measured", "verdict": "not measured"}
    diffs = [x["f1"] - y["f1"] for x, y in pairs]
    if len(pairs) >= 3:
        return verdict_from_diffs(diffs)
    truths = {x.get("truth") for pair in pairs for x in pair}
    if len(truths) == 1 and None not in truths and all(x.get("pred") and y.get("pred")
                                                       for x, y in pairs):
        truth = decode(truths.pop())
        draws = np.mean([bootstrap_diff(truth, decode(x["pred"]), decode(y["pred"]), k)
                         for x, y in pairs], axis=0)
        return verdict_from_bootstrap(float(np.mean(diffs)), draws, len(pairs))
    return verdict_from_diffs(diffs)


def fold_claim(runs: list[dict], a: str, b: str, metric) -> dict:
    """Per-fold differences of ``metric(fold_row)`` between CK+ models, averaged over
    seeds per fold."""
    per_fold = defaultdict(list)
    for r in runs:
        fa, fb = get(r, "models", a, "folds"), get(r, "models", b, "folds")
        if not fa or not fb:
            continue
        by_b = {x["fold"]: x for x in fb}
        for x in fa:
            if x["fold"] in by_b:
                per_fold[x["fold"]].append(metric(x) - metric(by_b[x["fold"]]))
    diffs = [float(np.mean(v)) for _, v in sorted(per_fold.items())]
    out = verdict_from_diffs(diffs)
    if diffs:
        out["spread"] = out["spread"].replace("(n = ", "(folds = ")
    return out


def speed_claim(runs: list[dict], names: list[str]) -> dict:
    """Larger mask -> faster: probe img/s (median of interleaved rounds) at increasing r,
    averaged over seeds; holds if strictly increasing and r=0.75 is >= 1.1x r=0."""
    probe = {n: mean_sd(get(r, "extra", "speed_probe", n, "median") for r in runs)[0]
             for n in names}
    runs_ips = {n: mean_sd(get(r, "models", n, "train", "train_img_per_s") for r in runs)[0]
                for n in names}
    src, vals = "probe", probe
    if any(v is None for v in probe.values()):
        src, vals = "training runs", runs_ips
    if any(v is None for v in vals.values()) or len(vals) < 2:
        return {"margin": None, "spread": "not measured", "verdict": "not measured"}
    seq = [vals[n] for n in names]
    increasing = all(b > a for a, b in zip(seq, seq[1:]))
    r75 = next((n for n in names if n.endswith("-r0.75")), names[-1])
    ratio = vals[r75] / seq[0]
    v = "holds" if increasing and ratio >= 1.1 else (
        "does not hold" if ratio <= 1.0 else "inconclusive")
    also = " / ".join(f"{runs_ips[n]:,.0f}" if runs_ips[n] else "–" for n in names)
    return {"margin": ratio, "margin_text": f"{ratio:.2f}x at r = 0.75 vs r = 0",
            "spread": f"{src} img/s " + " / ".join(f"{x:,.0f}" for x in seq)
                      + f"; whole training runs {also}",
            "verdict": v}


# ----------------------------------------------------------------------------- tables


def _env_line(runs: list[dict]) -> str:
    envs = {(get(r, "environment", "device_name"), get(r, "environment", "torch"),
             get(r, "environment", "timm"), get(r, "environment", "affectkit"),
             (get(r, "environment", "git_sha") or "?")[:10]
             + ("+dirty" if get(r, "environment", "git_dirty") else "")) for r in runs}
    parts = [f"{d} ({get(runs[0], 'environment', 'cores')} cores), torch {t}, timm {tm}, "
             f"affectkit {a}, git {g}" for d, t, tm, a, g in sorted(envs, key=str)]
    seeds = sorted(r["seed"] for r in runs)
    wall = ", ".join(f"{num((r.get('wall_s') or 0) / 60, 1)} min" for r in
                     sorted(runs, key=lambda r: r["seed"]))
    cmds = sorted({r.get("command", "") for r in runs})
    return (f"Seeds {', '.join(map(str, seeds))}; {'; '.join(parts)}; wall time {wall} "
            f"(last invocation). Command: " + ", ".join(f"`{c}`" for c in cmds) + ".")


def _not_measured(runs: list[dict]) -> list[str]:
    out = []
    for r in runs:
        for k, v in (r.get("not_measured") or {}).items():
            out.append(f"- not measured (seed {r['seed']}): `{k}`: {v}")
        if r.get("error"):
            out.append(f"- error (seed {r['seed']}): {r['error']}")
    return out


def _pretrain_line(runs: list[dict]) -> str | None:
    pre = [r["pretrain"] for r in runs if r.get("pretrain")]
    if not pre:
        return None
    p = pre[0]
    rl = [x for x in (p.get("recon_loss_by_epoch") or []) if x is not None]
    missing = get(p, "fine_tune_load", "missing", default=[])
    mae_seeds = sorted({x.get("seed", r["seed"]) for x, r in
                        ((r["pretrain"], r) for r in runs if r.get("pretrain"))})
    shared = "" if mae_seeds == sorted(r["seed"] for r in runs) else \
        f"MAE seed {', '.join(map(str, mae_seeds))} for every training seed; "
    return (f"MAE pretraining ({shared}recipe `{p.get('recipe')}`, "
            f"{p.get('train_images'):,} FER2013 "
            f"Training images, labels unused, {p.get('epochs')} epochs, "
            f"{num(p.get('train_img_per_s'))} img/s): validation reconstruction loss "
            + (f"{rl[0]:.3f} -> {rl[-1]:.3f}" if rl else "–")
            + "; fine-tuning loads every encoder weight"
            + (f" except {', '.join(missing)} (new, random init)." if missing else "."))


def _models(runs: list[dict]) -> list[str]:
    names: list[str] = []
    for r in runs:
        for n in r.get("models", {}):
            if n not in names:
                names.append(n)
    return names


def _collect(runs, name, *keys):
    return [get(r, "models", name, *keys) for r in runs]


def f1_always_on(rate: float) -> float:
    """F1 of predicting a class (or an AU) for every image: precision = its rate, recall 1."""
    return 2 * rate / (1 + rate) if rate else 0.0


def majority(train_counts: dict | None, test_counts: dict | None) -> tuple[float, float] | None:
    """(accuracy, macro F1) of always predicting the training set's most frequent class:
    what a model that learned nothing but the class prior scores on the test set."""
    if not train_counts or not test_counts:
        return None
    top = max(train_counts, key=train_counts.get)
    n = sum(test_counts.values())
    p = test_counts.get(top, 0) / n if n else 0.0
    return p, f1_always_on(p) / len(test_counts)


def all_aus_on(data: dict) -> list[float] | None:
    """Per-AU F1 (ABAW's 12) of marking every AU present in every CK+ image."""
    pos, n = data.get("au_positives") or {}, data.get("au_images") or 0
    if not pos or not n:
        return None
    return [f1_always_on(pos.get(a, 0) / n) for a in ABAW_AUS]


def truth_counts(runs: list[dict], where: str) -> dict | None:
    """Test-set class counts from the per-image truth a model stored at ``where`` (for
    test sets whose counts the results do not list, e.g. the 6-class PrivateTest)."""
    classes = get(runs[0], "data", "classes") if runs else None
    for m in (runs[0].get("models") or {}).values() if classes else ():
        truth = (m.get(where) or {}).get("truth")
        if truth:
            counts = np.bincount(decode(truth), minlength=len(classes))
            return {c: int(n) for c, n in zip(classes, counts)}
    return None


def mae_section(runs: list[dict]) -> list[str]:
    lines = ["| seed | epochs | images | reconstruction loss by epoch (held-out faces) | "
             "train img/s | pretraining wall time |", "| ---: | ---: | ---: | --- | ---: | ---: |"]
    for r in runs:
        p = r.get("pretrain") or {}
        rl = " / ".join(f"{x:.3f}" for x in p.get("recon_loss_by_epoch") or [] if x is not None)
        wall = p.get("train_call_wall_s")
        lines.append(f"| {r['seed']} | {p.get('epochs')} | {p.get('train_images', 0):,} | "
                     f"{rl or '–'} | {num(p.get('train_img_per_s'))} | "
                     f"{num(wall / 60, 1) + ' min' if wall else '–'} |")
    lines += ["", "The reconstruction loss is the MSE on the per-patch normalised pixels of the "
              "masked patches (1.0: predicting each patch's mean). Reconstructions per epoch: "
              "`recon/epoch_XXX.png` in the run folder."]
    return lines


def fer2013_section(runs: list[dict]) -> list[str]:
    lines = ["| model | init | backbone @ px | PrivateTest acc % | PrivateTest macro F1 % | "
             "PublicTest F1 % (selection) | best epoch / epochs | train img/s |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for n in _models(runs):
        m = next(get(r, "models", n) for r in runs if get(r, "models", n))
        eps = _collect(runs, n, "train", "epochs")
        best = _collect(runs, n, "train", "best_epoch")
        patch = get(runs[0], "settings", "train", "patch")
        grid = f", patch {patch}" if patch and m.get("kind") != "cnn" else ""
        lines.append(
            f"| `{n}` | {m.get('init')} | {m.get('backbone')} @ {m.get('img_size')}{grid} | "
            f"{pct_sd(_collect(runs, n, 'private', 'acc'))} | "
            f"{pct_sd(_collect(runs, n, 'private', 'f1'))} | "
            f"{pct_sd(_collect(runs, n, 'public', 'f1'))} | "
            f"{'/'.join(str(b + 1) for b in best if b is not None)} / {eps[0]} | "
            f"{num(mean_sd(_collect(runs, n, 'train', 'train_img_per_s'))[0])} |")
    maj = majority(get(runs[0], "data", "train", "classes"),
                   get(runs[0], "data", "test", "classes"))
    if maj:
        lines.append(f"| *majority class of the training set (the class prior, learned "
                     f"nothing else)* | | | *{pct(maj[0])}* | *{pct(maj[1])}* | | | |")
    for label, _, text in get(runs[0], "extra", "published_private_acc", default=[]) or []:
        lines.append(f"| *published: {label}* | | | *{text}* | | | | |")
    for n in _models(runs):
        m = next(get(r, "models", n) for r in runs if get(r, "models", n))
        eq = m.get("equal_time")
        if not eq:
            continue
        ref = next((get(r, "models", eq["reference"]) for r in runs
                    if get(r, "models", eq["reference"])), None) or {}
        walls = [get(x, "train", "train_call_wall_s") for x in (m, ref)]
        wall = (f"; the runs' own wall times, {walls[0] / 60:.0f} against {walls[1] / 60:.0f} "
                "min, moved with the machine's load while each ran (the interleaved probe is "
                "the controlled figure)" if all(w for w in walls)
                and not get(m, "train", "reused_finished_run") else "")
        lines += ["", f"`{n}` trains for the time `{eq['reference']}` spends on "
                      f"{eq['reference_epochs']} epochs: it steps {eq['speed_ratio']:.2f}x as "
                      f"fast (interleaved probe, img/s {eq['probe_img_per_s']}), so "
                      f"{eq['epochs']} epochs{wall}."]
    classes = get(runs[0], "data", "classes") or []
    if classes:
        lines += ["", "PrivateTest F1 per class (%):", "",
                  "| model | " + " | ".join(classes) + " | argmax outside the classes % |",
                  "| --- |" + " ---: |" * (len(classes) + 1)]
        for n in _models(runs):
            per = [mean_sd(_collect(runs, n, "private", "f1_per_class", c))[0] for c in classes]
            out = mean_sd(_collect(runs, n, "private", "argmax_outside_classes"))[0]
            lines.append(f"| `{n}` | " + " | ".join(pct(x) for x in per) + f" | {pct(out)} |")
    return lines


def ckplus_section(runs: list[dict]) -> list[str]:
    names = _models(runs)
    au = [n for n in names if n.startswith("au/")]
    ex = [n for n in names if n.startswith("expr/")]
    d = runs[0].get("data", {})
    lines = [f"{d.get('subjects')} subjects, {d.get('folds')} subject-independent folds "
             f"(fold seed {d.get('fold_seed')}); AU: {d.get('au_images')} AU-coded images; "
             f"expression: {d.get('expression_images')} images, 7 classes. Pooled = every "
             "image scored once, in its test fold; folds = mean ± sd over folds.", ""]
    if au:
        lines += ["AU detection, F1 % on ABAW's 12 AUs (threshold 0.5 on probabilities; "
                  "tuned = per-AU thresholds chosen on each fold's validation subjects):", "",
                  "| model | init | pooled mean F1 | folds mean F1 | pooled, tuned | "
                  + " | ".join(ABAW_AUS) + " | train img/s |",
                  "| --- | --- | ---: | ---: | ---: |" + " ---: |" * (len(ABAW_AUS) + 1)]
        for n in au:
            m = next(get(r, "models", n) for r in runs if get(r, "models", n))
            folds = [x["at_0.5"]["mean_f1"] for r in runs
                     for x in (get(r, "models", n, "folds") or [])]
            per = [mean_sd(_collect(runs, n, "pooled", "f1_per_au", a))[0] for a in ABAW_AUS]
            lines.append(
                f"| `{n}` | {m.get('init')} | {pct_sd(_collect(runs, n, 'pooled', 'mean_f1'))}"
                f" | {pct_sd(folds)} | {pct_sd(_collect(runs, n, 'pooled', 'tuned_mean_f1'))}"
                f" | " + " | ".join(pct(x, 0) for x in per)
                + f" | {num(mean_sd(_collect(runs, n, 'train_img_per_s'))[0])} |")
        pos = d.get("au_positives") or {}
        if pos:
            lines.append("| *positives (of " + str(d.get("au_images")) + ")* | | | | | "
                         + " | ".join(str(pos.get(a, "")) for a in ABAW_AUS) + " | |")
            f1 = all_aus_on(d)
            if f1:
                lines.append(f"| *every AU always on (learned nothing)* | | {pct(np.mean(f1))}"
                             " | | | " + " | ".join(pct(x, 0) for x in f1) + " | |")
        lines.append("")
    if ex:
        lines += ["Expression, 7 classes (contempt included):", "",
                  "| model | init | pooled acc % | folds acc % | pooled macro F1 % | "
                  "train img/s |", "| --- | --- | ---: | ---: | ---: | ---: |"]
        for n in ex:
            m = next(get(r, "models", n) for r in runs if get(r, "models", n))
            folds = [x["expr"]["acc"] for r in runs
                     for x in (get(r, "models", n, "folds") or [])]
            lines.append(f"| `{n}` | {m.get('init')} | {pct_sd(_collect(runs, n, 'pooled', 'acc'))}"
                         f" | {pct_sd(folds)} | {pct_sd(_collect(runs, n, 'pooled', 'f1'))} | "
                         f"{num(mean_sd(_collect(runs, n, 'train_img_per_s'))[0])} |")
        maj = majority(d.get("classes"), d.get("classes"))  # folds share the class mix
        if maj:
            lines.append(f"| *majority class (learned nothing)* | | *{pct(maj[0])}* | | "
                         f"*{pct(maj[1])}* | |")
        for label, _, text in get(runs[0], "extra", "published", default=[]) or []:
            lines.append(f"| *published: {label}* | | *{text}* | | | |")
    return lines


def cross_section(runs: list[dict]) -> list[str]:
    d = runs[0].get("data", {})
    lines = [f"Train: {get(d, 'train', 'images')} FER2013 Training faces of the 6 LSD classes; "
             f"select on {get(d, 'val', 'images')} PublicTest faces; test: "
             f"{get(d, 'test', 'images')} CK+ faces (P_LSD = macro F1 over the 6 classes) "
             f"and {get(d, 'fer_test', 'images')} FER2013 PrivateTest faces (in-domain). "
             f"Init: {d.get('init')}. Probe: one training step on a resident batch, "
             "interleaved rounds (median).", "",
             "| model | init | mask ratio | CK+ P_LSD % | CK+ acc % | FER PrivateTest F1 % | "
             "PublicTest F1 % | train img/s (run) | probe img/s | probe vs CoTEX r = 0 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    names = _models(runs)
    base = next((n for n in names if n.endswith("-r0")), None)
    base_probe = mean_sd(get(r, "extra", "speed_probe", base, "median") for r in runs)[0] \
        if base else None
    for n in names:
        m = next(get(r, "models", n) for r in runs if get(r, "models", n))
        probe = mean_sd(get(r, "extra", "speed_probe", n, "median") for r in runs)[0]
        rel = f"{probe / base_probe:.2f}x" if probe and base_probe else "–"
        lines.append(
            f"| `{n}` | {m.get('init')} | {m.get('mask_ratio'):g} | "
            f"{pct_sd(_collect(runs, n, 'ckplus', 'p_lsd'))}"
            f" | {pct_sd(_collect(runs, n, 'ckplus', 'acc'))} | "
            f"{pct_sd(_collect(runs, n, 'fer_private', 'f1'))} | "
            f"{pct_sd(_collect(runs, n, 'fer_public', 'f1'))} | "
            f"{num(mean_sd(_collect(runs, n, 'train', 'train_img_per_s'))[0])} | "
            f"{num(probe)} | {rel} |")
    maj = majority(get(d, "train", "classes"), get(d, "test", "classes"))
    if maj:
        lines.append(f"| *majority class of the training set* | | | *{pct(maj[1])}* | "
                     f"*{pct(maj[0])}* | | | | | |")
    lines.append("| *published (ABAW4 Table 6, LSD validation, ViT-B MAE-CelebA, batch 64): "
                 "ViT 64.24, CoTEX r=0 64.67, r=0.75 67.67* | | | | | | | | | |")
    return lines


# ----------------------------------------------------------------------------- claims


def claim_rows(groups: dict, profile: str) -> list[tuple[str, list[tuple[str, dict]]]]:
    """The claims and their evidence rows ``(measured on, verdict dict)`` on one profile's
    numbers, limited to the benchmarks (and, for a partial profile, models) it runs."""
    fer = groups.get(("fer2013", profile), [])
    ck = groups.get(("ckplus", profile), [])
    cd = groups.get(("cross-domain", profile), [])
    init = get(cd[0], "data", "init") if cd else "mae"
    ratios = [n for n in _models(cd) if n.startswith("cotex-")] if cd else []
    ratios.sort(key=lambda n: float(n.rsplit("-r", 1)[1]))
    single = f"vit-{init}"
    r0 = next((n for n in ratios if n.endswith("-r0")), None)
    r75 = next((n for n in ratios if n.endswith("-r0.75")), None)
    r0_, r75_ = r0 or f"cotex-{init}-r0", r75 or f"cotex-{init}-r0.75"  # names in the table

    def au_f1(x):
        return x["at_0.5"]["mean_f1"]

    def ex_acc(x):
        return x["expr"]["acc"]

    # a comparison of two models that both stayed at the class prior says nothing about
    # the claim: flag it instead of judging it
    fer_maj = majority(get(fer[0], "data", "train", "classes"),
                       get(fer[0], "data", "test", "classes")) if fer else None
    ck_maj = majority(get(cd[0], "data", "train", "classes"),
                      get(cd[0], "data", "test", "classes")) if cd else None
    fer6_maj = majority(get(cd[0], "data", "train", "classes"),
                        truth_counts(cd, "fer_private")) if cd else None

    def at_prior(v: dict, scores: list[float], base: float | None, baseline: str) -> dict:
        if not v or v.get("verdict") == "not measured" or base is None:
            return v
        if all(x < base + CHANCE_MARGIN for x in scores):
            v = {**v, "verdict": "inconclusive", "at_prior": True,
                 "spread": v["spread"] + f"; both within {100 * CHANCE_MARGIN:.0f} pt of "
                 f"{baseline} ({pct(base)}%): neither model learned"}
        return v

    def chance_checked(v: dict, runs: list[dict], a: str, b: str, where: str, maj) -> dict:
        acc = [mean_sd(_collect(runs, n, where, "acc"))[0] or 0 for n in (a, b)]
        return at_prior(v, acc, maj[0] if maj else None, "the majority-class accuracy")

    au_on = all_aus_on(ck[0].get("data", {})) if ck else None

    def au_chance_checked(v: dict, a: str, b: str) -> dict:
        f1 = [mean_sd(_collect(ck, n, "pooled", "mean_f1"))[0] or 0 for n in (a, b)]
        return at_prior(v, f1, float(np.mean(au_on)) if au_on else None,
                        "marking every AU present")

    rows = [
        ("Face-MAE init beats random init (ABAW4 Table 5: face MAE > ImageNet MAE; "
         "no random-init row in the paper)",
         [("fer2013", "FER2013 PrivateTest macro F1, `vit-mae` − `vit-random`",
           chance_checked(paired_claim(fer, "vit-mae", "vit-random", ("private",), 7), fer,
                          "vit-mae", "vit-random", "private", fer_maj)),
          ("ckplus", "CK+ AU mean F1 per fold, `vit-mae` − `vit-random`",
           au_chance_checked(fold_claim(ck, "au/vit-mae", "au/vit-random", au_f1),
                             "au/vit-mae", "au/vit-random")),
          ("ckplus", "CK+ expression accuracy per fold, `cotex-mae` − `cotex-random`",
           fold_claim(ck, "expr/cotex-mae", "expr/cotex-random", ex_acc))]),
        ("Two-view (masked) CoTEX beats a single ViT (ABAW4 Table 6: 64.24 -> 64.67 at r = 0, "
         "67.67 at r = 0.75, batch 64)",
         [("fer2013", "FER2013 PrivateTest macro F1, `cotex-mae` (r = 0.75) − `vit-mae`",
           chance_checked(paired_claim(fer, "cotex-mae", "vit-mae", ("private",), 7), fer,
                          "cotex-mae", "vit-mae", "private", fer_maj)),
          ("fer2013", "FER2013 PrivateTest macro F1 at equal training time, "
                      "`cotex-mae-eqtime` (r = 0.75) − `vit-mae`",
           chance_checked(paired_claim(fer, "cotex-mae-eqtime", "vit-mae", ("private",), 7),
                          fer, "cotex-mae-eqtime", "vit-mae", "private", fer_maj)),
          ("cross-domain", f"CK+ P_LSD (cross-domain), `{r75_}` − `{single}`",
           chance_checked(paired_claim(cd, r75, single, ("ckplus",), 6), cd, r75, single,
                          "ckplus", ck_maj) if r75 else {}),
          ("cross-domain",
           f"CK+ P_LSD (cross-domain), `{r0_}` − `{single}` (co-training without masking)",
           chance_checked(paired_claim(cd, r0, single, ("ckplus",), 6), cd, r0, single,
                          "ckplus", ck_maj) if r0 else {}),
          ("cross-domain", f"FER2013 PrivateTest 6-class F1, `{r75_}` − `{single}`",
           chance_checked(paired_claim(cd, r75, single, ("fer_private",), 6), cd, r75,
                          single, "fer_private", fer6_maj) if r75 else {})]),
        ("A larger mask ratio trains faster (ABAW4 3.3: ~4x fewer block FLOPs at r = 0.75)",
         [("cross-domain",
           "train img/s of CoTEX at r = " + (", ".join(n.rsplit("-r", 1)[1] for n in ratios)
                                             or "0, 0.5, 0.75, 0.9"),
           speed_claim(cd, ratios) if len(ratios) > 1 else {})]),
        ("A larger mask ratio gives a higher F1 (ABAW4 Table 6, batch 64: r = 0 64.67 -> "
         "r = 0.75 67.67; larger r with larger batches up to 78.62)",
         [("cross-domain", f"CK+ P_LSD, `{r75_}` − `{r0_}`",
           chance_checked(paired_claim(cd, r75, r0, ("ckplus",), 6), cd, r75, r0, "ckplus",
                          ck_maj) if r0 and r75 else {}),
          ("cross-domain", f"FER2013 PrivateTest 6-class F1, `{r75_}` − `{r0_}`",
           chance_checked(paired_claim(cd, r75, r0, ("fer_private",), 6), cd, r75, r0,
                          "fer_private", fer6_maj) if r0 and r75 else {})]),
    ]
    # a profile that defines only some benchmarks (cpu-long) is judged on those alone
    settings = [r.get("settings") or {} for (_, p), rs in groups.items() if p == profile
                for r in rs]
    defined = set().union(*settings) if settings else set(BENCH_ORDER)
    partial = not set(BENCH_ORDER) - {"mae"} <= defined  # and its models alone
    out = []
    for claim, evidence in rows:
        evidence = [(what, v or {"verdict": "not measured"}) for bench, what, v in evidence
                    if bench in defined and not (
                        partial and (v or {}).get("verdict", "not measured") == "not measured")]
        if evidence:
            out.append((claim, evidence))
    return out


def claims(groups: dict, profile: str) -> list[str]:
    """The claims section of one profile: the overall verdict per claim, then one table
    row per piece of evidence. Rows whose models stayed at the class prior and that the
    successor profile (``SUPERSEDED_BY``) measured with models that learned are left out
    here, with a line that points to the verdict there."""
    rows = claim_rows(groups, profile)
    newer = SUPERSEDED_BY.get(profile)
    if newer and any(p == newer for _, p in groups):
        there = {(c, what): v for c, ev in claim_rows(groups, newer) for what, v in ev}
        superseded, kept = [], []
        for claim, evidence in rows:
            ev = []
            for what, v in evidence:
                w = there.get((claim, what))
                if v.get("at_prior") and w and not w.get("at_prior") \
                        and w["verdict"] != "not measured":
                    superseded.append(f"{what}: {w['verdict']} there")
                else:
                    ev.append((what, v))
            if ev:
                kept.append((claim, ev))
        rows = kept
    else:
        superseded = []
    out = ["| claim | measured on | margin | uncertainty | verdict |",
           "| --- | --- | ---: | --- | --- |"]
    summary = []
    for claim, evidence in rows:
        counts = defaultdict(int)
        for i, (what, v) in enumerate(evidence):
            counts[v["verdict"]] += 1
            margin = v.get("margin_text") or (
                f"{100 * v['margin']:+.1f} pt" if v.get("margin") is not None else "–")
            out.append(f"| {claim if i == 0 else ''} | {what} | {margin} | "
                       f"{v.get('spread', 'not measured')} | **{v['verdict']}** |")
        measured = {k: c for k, c in counts.items() if k != "not measured"}
        if not measured:
            overall = "not measured"
        elif set(measured) == {"holds"}:
            overall = "holds"
        elif set(measured) == {"does not hold"}:
            overall = "does not hold"
        else:
            overall = ", ".join(f"{k} on {c}" for k, c in sorted(measured.items()))
        summary.append(f"- **{overall}**: {claim}.")
    best = None
    fer = groups.get(("fer2013", profile), [])
    for n in _models(fer):
        acc = mean_sd(_collect(fer, n, "private", "acc"))[0]
        if acc is not None and (best is None or acc > best[1]):
            best = (n, acc)
    context = []
    if best:
        context.append(f"- Context, not a paper claim: the best FER2013 model here (`{best[0]}`) "
                       f"reaches {pct(best[1])}% PrivateTest accuracy, against human ~65%, "
                       "mini-Xception ~66% and the best published single model 73.3%.")
    note = []
    if superseded:
        n = len(superseded)
        note = ["", f"Judged in profile `{newer}` instead ({n} comparison{'s' * (n > 1)} "
                "whose two models both stayed at the class prior here and learned there): "
                + "; ".join(superseded) + "."]
    return ["Overall:", "", *summary, *context, *note, "", *out]


# ----------------------------------------------------------------------------- document


def load_results(results_dir: Path, include_smoke: bool | None = None) -> list[dict]:
    runs = []
    for p in sorted(Path(results_dir).glob("*.json")):
        try:
            r = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            print(f"skipping unreadable {p}", file=sys.stderr)
            continue
        if {"benchmark", "profile", "seed", "models"} <= set(r):
            r["_file"] = p.name
            runs.append(r)
    if include_smoke is None:
        include_smoke = all(r["profile"] == "smoke" for r in runs)
    return [r for r in runs if include_smoke or r["profile"] != "smoke"]


def default_model_section(runs: list[dict]) -> list[str]:
    """The shipped default model: FER2013 by test-time augmentation, CK+ transfer, AUs,
    and the issue's targets met or missed."""
    lines = []
    for r in runs:
        for name, m in (r.get("models") or {}).items():
            tr, fer = m.get("train", {}), m.get("fer2013", {})
            lines += [f"`{name}`: {m.get('backbone')} ({m.get('parameters', 0):,} parameters) "
                      f"@ {m.get('img_size')} px, recipe `{m.get('recipe')}`, "
                      f"{tr.get('epochs')} epochs"
                      + (f" of the recipe's {tr.get('planned_epochs')} (stopped early)"
                         if (tr.get("planned_epochs") or 0) > (tr.get("epochs") or 0) else "")
                      + f" (best {(tr.get('best_epoch') or 0) + 1}), "
                      f"{num(tr.get('train_img_per_s'))} train img/s, "
                      f"{num((tr.get('wall_s') or 0) / 60)} min of training.", "",
                      "| test-time augmentation | PublicTest acc % | PrivateTest acc % | "
                      "PrivateTest macro F1 % |", "| --- | ---: | ---: | ---: |"]
            chosen = fer.get("tta_selected_on_publictest")
            for tta, sc in (fer.get("by_tta") or {}).items():
                mark = " (selected on PublicTest)" if tta == chosen else ""
                lines.append(f"| {tta}{mark} | {pct(get(sc, 'public', 'acc'))} | "
                             f"{pct(get(sc, 'private', 'acc'))} | "
                             f"{pct(get(sc, 'private', 'f1'))} |")
            for label, acc, f1 in get(r, "extra", "published_private", default=[]) or []:
                lines.append(f"| *{label}* | | *{pct(acc)}* | *{pct(f1)}* |")
            ck = m.get("ckplus_expression_6") or {}
            lines += ["", "| CK+, 6 classes (FER2013 -> CK+) | subjects | faces | acc % | "
                      "macro F1 % |", "| --- | ---: | ---: | ---: | ---: |"]
            for where, sc in ck.items():
                lines.append(f"| {where.replace('_', ' ')} | {sc.get('subjects')} | "
                             f"{sc.get('n')} | {pct(sc.get('acc'))} | {pct(sc.get('f1'))} |")
            fer6 = get(r, "extra", "fer_ckplus6_f1")
            if fer6:
                lines.append(f"| *fer (mini-Xception), all 927 faces* | | 927 | | "
                             f"*{pct(fer6)}* |")
            au = m.get("ckplus_au_held_out") or {}
            if au:
                names = list(get(au, "tuned", "f1_per_au", default={}) or {})
                lines += ["", f"CK+ AUs on the {au.get('subjects')} held-out subjects "
                          f"(F1 %, thresholds tuned on the validation subjects): mean "
                          f"{pct(get(au, 'tuned', 'mean_f1'))} (at 0.5: "
                          f"{pct(get(au, 'at_0.5', 'mean_f1'))})", "",
                          "| " + " | ".join(names) + " |", "|" + " ---: |" * len(names),
                          "| " + " | ".join(pct(get(au, "tuned", "f1_per_au", a))
                                            for a in names) + " |"]
            lines += ["", "| target (issue 13) | target | measured | |",
                      "| --- | ---: | ---: | --- |"]
            targets = m.get("targets") or {}
            for k, t in targets.items():
                verdict = "met" if t.get("met") else f"missed by {t.get('miss_points')} pt"
                lines.append(f"| {k} | {pct(t.get('target'))} | {pct(t.get('measured'))} | "
                             f"{verdict} |")
            if m.get("tried") and not all(t.get("met") for t in targets.values()):
                lines += ["", "What was tried:", "", *(f"- {x}" for x in m["tried"])]
    return lines


SECTIONS = {
    "default-model": ("The shipped default model (`affectkit models`): FER2013 expressions "
                      "+ CK+ AUs", default_model_section),
    "mae": ("MAE pretraining on the FER2013 Training faces (shared by the benchmarks)",
            mae_section),
    "fer2013": ("FER2013: 7 expressions, PrivateTest", fer2013_section),
    "ckplus": ("CK+: AU detection and expression, subject-independent folds", ckplus_section),
    "cross-domain": ("Cross-domain: FER2013 (6 LSD classes) -> CK+, single ViT vs masked "
                     "CoTEX by mask ratio", cross_section),
}


def render(runs: list[dict], source: str) -> str:
    groups: dict = defaultdict(list)
    for r in runs:
        groups[(r["benchmark"], r["profile"])].append(r)
    doc = ["# Real-data benchmarks", "",
           f"Generated by `python benchmarks/real/report.py` from `{source}/*.json`; do not "
           "edit by hand (rerun the report). How the benchmarks work, the exact commands and "
           "the profiles: `benchmarks/real/README.md`. Numbers are percentages unless marked; "
           "`a ± b` is the mean ± sd over seeds (or folds) where there are several.", ""]
    if not runs:
        doc += ["No results yet: run `python -m benchmarks.real.run all --profile cpu`."]
    profiles = sorted({p for _, p in groups}, key=lambda p: PROFILE_ORDER.get(p, 9))
    for profile in profiles:
        doc += [f"## Profile `{profile}`", ""]
        if profile == "smoke":
            doc += ["Smoke results: a few hundred images and one or two epochs. They show "
                    "that the harness runs end to end; the numbers say nothing about the "
                    "models.", ""]
        benches = sorted((b for b, p in groups if p == profile),
                         key=lambda b: BENCH_ORDER.get(b, 9))
        for bench in benches:
            rs = sorted(groups[(bench, profile)], key=lambda r: r["seed"])
            title, fn = SECTIONS.get(bench, (bench, None))
            doc += [f"### {title}", "", _env_line(rs), ""]
            pre = _pretrain_line(rs) if bench != "mae" else None
            if pre:
                doc += [pre, ""]
            if fn is not None:
                doc += fn(rs)
            nm = _not_measured(rs)
            if nm:
                doc += ["", *nm]
            doc.append("")
        doc += [f"### The paper's claims on these numbers (profile `{profile}`)", "",
                *claims(groups, profile), ""]
    return "\n".join(doc).rstrip() + "\n"


def write_report(results_dir: Path = DEFAULT_RESULTS, out: Path | None = None,
                 include_smoke: bool | None = None) -> Path:
    results_dir = Path(results_dir)
    if out is None:
        out = DEFAULT_MD if results_dir.resolve() == DEFAULT_RESULTS.resolve() \
            else results_dir / "RESULTS.md"
    try:
        source = str(results_dir.resolve().relative_to(REPO))
    except ValueError:
        source = str(results_dir)
    text = render(load_results(results_dir, include_smoke), source)
    return atomic_write_text(out, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--out", type=Path, help="default: benchmarks/RESULTS.md for the default "
                                             "results folder, else <results>/RESULTS.md")
    ap.add_argument("--include-smoke", action="store_true", default=None)
    args = ap.parse_args(argv)
    print(write_report(args.results, args.out, args.include_smoke))
    return 0


if __name__ == "__main__":
    sys.exit(main())
