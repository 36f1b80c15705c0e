"""CK+ (CK+48): AU detection and 7-class expression, subject-independent k-fold.

Folds are by subject (every image of a subject, hence every frame of each of its
sequences, is in one fold), balanced by image count and fixed (fold seed 0) whatever the
training seed, so runs with other seeds see the same splits. Inside each training fold a
seeded 15% of the training subjects is held out for checkpoint selection (the epoch with
the best validation score); the test fold is never looked at before evaluation.

- AU: the 684 AU-coded images (``au_labels_from_ck_codes.csv``), the 12 AUs ABAW uses
  (AU1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26; CK+ codes them all). Models: the
  library's multi-task CNN / ViT (recipes ``cnn-mtl`` / ``vit-mtl``) with only AU labels
  (expression and VA unlabelled: their losses are 0), BCE with positives weighted by the
  training fold's neg/pos ratio (``loss.au_pos_weight``). Per-AU F1 at the fixed 0.5 on
  probabilities (primary) and at per-AU thresholds tuned on the validation subjects
  (``metrics.tune_au_thresholds``), pooled over the test folds and per fold.
- Expression: all 981 images, CK+'s 7 classes (contempt included), so a 7-class head:
  masked CoTEX (recipe ``cotex-lsd``, 7 classes, mask 0.75); the library's single-ViT
  model has ABAW's 8 classes, which lack contempt. Accuracy and macro F1 pooled over the
  test folds, and per fold.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from affectkit.engine.build import model_labels
from affectkit.labels import ABAW_AU, CKPLUS
from affectkit.metrics import au_scores, binarize_au, expr_scores

from .common import (
    Context,
    NotMeasured,
    au_eval,
    class_counts,
    decode_labels,
    expression_eval,
    model_config,
    open_ckplus,
    parse_model,
    pick_subjects,
    predict,
    subject_folds,
    train_and_load,
    tuned_thresholds,
    without_expression,
)

log = logging.getLogger("benchmarks.real.ckplus")

FOLD_SEED = 0
PUBLISHED = [("CK+ 7-class expression, subject-independent 10-fold (literature)", 0.95,
              "95-99% accuracy")]


def _rows(table, subjects: set[str]):
    return table.subset(np.flatnonzero(table.df["subject"].astype(str).isin(subjects)))


def _mean_sd(values) -> dict:
    v = np.asarray([x for x in values if x is not None], np.float64)
    return {"mean": float(v.mean()) if v.size else None,
            "sd": float(v.std(ddof=1)) if v.size > 1 else None, "n": int(v.size)}


def run(ctx: Context) -> None:
    p, tr = ctx.profile["ckplus"], ctx.profile["train"]
    expr_all, au_all = open_ckplus(ctx.data_root)
    au_all = without_expression(au_all.with_au_labels(ABAW_AU))
    subjects = expr_all.df["subject"].astype(str).to_numpy()
    fold_of_row = subject_folds(subjects, p["folds"], FOLD_SEED)
    fold_of = dict(zip(subjects, fold_of_row.tolist()))
    missing = set(au_all.df["subject"].astype(str)) - set(fold_of)
    if missing:
        raise NotMeasured(f"AU-coded subjects not in labels.csv: {sorted(missing)[:5]}")
    splits = []
    for f in range(p["folds"]):
        test_s = {s for s, g in fold_of.items() if g == f}
        train_s = set(fold_of) - test_s
        val_s = pick_subjects(sorted(train_s), p["val_subject_fraction"], 1000 + f)
        splits.append({"test": test_s, "val": val_s, "train": train_s - val_s})
    ctx.results.set("data", {
        "expression_images": len(expr_all), "au_images": len(au_all),
        "subjects": len(fold_of), "folds": p["folds"], "fold_seed": FOLD_SEED,
        "classes": class_counts(expr_all),
        "au_positives": {a: int((au_all.au[:, j] == 1).sum())
                         for j, a in enumerate(ABAW_AU.classes)},
        "fold_sizes": [{"subjects": len(s["test"]),
                        "expression_images": len(_rows(expr_all, s["test"])),
                        "au_images": len(_rows(au_all, s["test"]))} for s in splits],
    })
    ctx.results.set("extra", {"published": PUBLISHED})
    tasks = [("au", n) for n in p["au_models"]] + [("expr", n) for n in p["expr_models"]]
    for task, name in tasks:
        key = f"{task}/{name}"
        if not (ctx.wants(key) or ctx.wants(name)):
            continue
        spec = parse_model(name)
        if task == "au" and spec["kind"] == "cotex":
            ctx.results.skip(key, "CoTEX has no AU head")
            continue
        if task == "expr" and spec["kind"] != "cotex":
            ctx.results.skip(key, "the single-backbone models predict ABAW's 8 classes, "
                                  "which lack contempt")
            continue
        try:
            weights = ctx.init_weights(spec["init"])
        except NotMeasured as e:
            ctx.results.skip(key, str(e))
            continue
        table = au_all if task == "au" else expr_all
        folds, pooled = [], {"probs": [], "true": [], "tuned": [], "pred": [], "truth": []}
        t_all = time.perf_counter()
        for f, s in enumerate(splits):
            run_dir = ctx.work / "ckplus" / task / name / f"fold{f}"
            train_t, val_t, test_t = (_rows(table, s[k]) for k in ("train", "val", "test"))
            extra = ("loss.au_pos_weight=true",) if task == "au" else ()
            cfg, ov = model_config(
                spec["kind"], tr, run_dir=run_dir, seed=ctx.seed,
                epochs=p["au_epochs" if task == "au" else "expr_epochs"],
                data_root=ctx.data_root / "ckplus48", pretrained=weights,
                mask_ratio=spec["mask_ratio"], num_classes=len(CKPLUS), expr_labels="ckplus",
                batch=p["batch"], extra=extra)
            log.info("ckplus %s fold %d/%d: %d train / %d val / %d test images", key, f + 1,
                     len(splits), len(train_t), len(val_t), len(test_t))
            model, info = train_and_load(cfg, ov, train_t, val_t, run_dir)
            test_arrays = predict(model, test_t, cfg, tr["eval_batch"])
            row = {"fold": f, "train": info, "test_images": len(test_t),
                   "test_subjects": len(s["test"])}
            if task == "au":
                thr = tuned_thresholds(predict(model, val_t, cfg, tr["eval_batch"]))
                row["at_0.5"] = au_eval(test_arrays)
                row["tuned"] = au_eval(test_arrays, thr)
                row["thresholds"] = [float(t) for t in thr]
                pooled["probs"].append(test_arrays["au_probs"])
                pooled["true"].append(test_arrays["au_true"].astype(np.int64))
                pooled["tuned"].append(binarize_au(test_arrays["au_probs"], thr))
                log.info("ckplus %s fold %d: AU mean F1 %.4f at 0.5, %.4f tuned", key, f + 1,
                         row["at_0.5"]["mean_f1"], row["tuned"]["mean_f1"])
            else:
                ev = expression_eval(test_arrays, model_labels(cfg), test_t, CKPLUS)
                pooled["pred"].append(ev.pop("pred"))
                pooled["truth"].append(ev.pop("truth"))
                row["expr"] = ev
                log.info("ckplus %s fold %d: accuracy %.4f, macro F1 %.4f", key, f + 1,
                         ev["acc"], ev["f1"])
            folds.append(row)
        entry = {**spec, "task": task, "backbone": cfg.model.backbone,
                 "img_size": cfg.data.img_size, "folds": folds,
                 "train_img_per_s": float(np.median([r["train"]["train_img_per_s"] or 0
                                                     for r in folds])),
                 "wall_s": round(time.perf_counter() - t_all, 1)}
        if task == "au":
            true = np.concatenate(pooled["true"])
            at = au_scores(true, binarize_au(np.concatenate(pooled["probs"])), ABAW_AU.classes)
            tu = au_scores(true, np.concatenate(pooled["tuned"]), ABAW_AU.classes)
            entry["pooled"] = {"mean_f1": at["au_f1"], "f1_per_au": at["au_f1_per_au"],
                               "tuned_mean_f1": tu["au_f1"],
                               "tuned_f1_per_au": tu["au_f1_per_au"], "n": int(len(true))}
            entry["fold_mean_f1"] = _mean_sd(r["at_0.5"]["mean_f1"] for r in folds)
            entry["fold_tuned_mean_f1"] = _mean_sd(r["tuned"]["mean_f1"] for r in folds)
            log.info("ckplus %s: pooled AU mean F1 %.4f at 0.5 (folds %.4f +- %.4f), %.4f "
                     "tuned", key, at["au_f1"], entry["fold_mean_f1"]["mean"],
                     entry["fold_mean_f1"]["sd"] or 0.0, tu["au_f1"])
        else:
            pred = np.concatenate([decode_labels(x) for x in pooled["pred"]])
            truth = np.concatenate([decode_labels(x) for x in pooled["truth"]])
            s = expr_scores(truth, pred, CKPLUS.classes)
            entry["pooled"] = {"acc": s["expr_acc"], "f1": s["expr_f1"],
                               "f1_per_class": s["expr_f1_per_class"], "n": int(len(truth))}
            entry["fold_acc"] = _mean_sd(r["expr"]["acc"] for r in folds)
            entry["fold_f1"] = _mean_sd(r["expr"]["f1"] for r in folds)
            log.info("ckplus %s: pooled accuracy %.4f, macro F1 %.4f (fold acc %.4f +- %.4f)",
                     key, s["expr_acc"], s["expr_f1"], entry["fold_acc"]["mean"],
                     entry["fold_acc"]["sd"] or 0.0)
        ctx.results.model(key, entry)
