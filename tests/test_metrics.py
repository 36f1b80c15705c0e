"""Metrics checked against independent computations (sklearn, direct numpy formulas)."""

import json
import math
import time

import numpy as np
import pytest
from sklearn.metrics import f1_score

from affectkit import metrics as M
from affectkit.labels import ABAW_AU, ABAW_EXPR

SEEDS = [0, 1, 2, 3, 4]
AUS = list(ABAW_AU.classes)
EXPRS = list(ABAW_EXPR.classes)


def ref_ccc(x, y):
    """Lin's CCC written out independently: population moments, float64."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    sxy = np.sum((x - x.mean()) * (y - y.mean())) / len(x)
    return 2 * sxy / (np.var(x) + np.var(y) + (x.mean() - y.mean()) ** 2)


def assert_no_nan(obj):
    """Walk a (nested) score dict: every number must be finite."""
    if isinstance(obj, dict):
        for v in obj.values():
            assert_no_nan(v)
    else:
        assert math.isfinite(float(obj)), obj


# ---------------------------------------------------------------- CCC / VA


@pytest.mark.parametrize("seed", SEEDS)
def test_ccc_matches_reference_and_pearson_form(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, 500)
    y = 0.6 * x + 0.3 * rng.normal(size=500) + 0.1
    r = np.corrcoef(x, y)[0, 1]
    pearson_form = 2 * r * x.std() * y.std() / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    assert M.ccc(x, y) == pytest.approx(ref_ccc(x, y), abs=1e-12)
    assert M.ccc(x, y) == pytest.approx(pearson_form, abs=1e-12)
    assert M.ccc(x, y) == pytest.approx(M.ccc(y, x), abs=1e-12)
    # float32 input is computed in float64
    assert M.ccc(x.astype(np.float32), y) == pytest.approx(ref_ccc(x.astype(np.float32), y))


def test_ccc_known_cases():
    x = np.linspace(-1, 1, 101)
    assert M.ccc(x, x) == pytest.approx(1.0)
    assert M.ccc(x, -x) == pytest.approx(-1.0)
    assert M.ccc(x, x + 0.5) < 1.0  # bias is penalised, unlike Pearson
    assert np.corrcoef(x, x + 0.5)[0, 1] == pytest.approx(1.0)


def test_ccc_edge_cases_are_zero_not_nan():
    assert M.ccc([], []) == 0.0
    assert M.ccc([0.3], [0.1]) == 0.0
    assert M.ccc([0.2, 0.2, 0.2], [0.2, 0.2, 0.2]) == 0.0  # zero denominator
    assert M.ccc([0.1, 0.5, -0.3], [0.0, 0.0, 0.0]) == 0.0  # constant prediction: cov 0
    with pytest.raises(ValueError):
        M.ccc([1, 2], [1, 2, 3])


@pytest.mark.parametrize("seed", SEEDS)
def test_va_scores_ignore_sentinel_rows(seed):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(-1, 1, (300, 2))
    pred = np.clip(truth + 0.4 * rng.normal(size=truth.shape), -1, 1)
    bad = rng.random(300) < 0.2
    truth[bad, rng.integers(0, 2, bad.sum())] = -5
    truth = truth.astype(np.float32)  # the sentinel as read from float32 files
    ok = ~(truth == -5).any(axis=1)
    s = M.va_scores(truth, pred)
    assert s["va_count"] == ok.sum()
    assert s["ccc_valence"] == pytest.approx(ref_ccc(truth[ok, 0], pred[ok, 0]))
    assert s["ccc_arousal"] == pytest.approx(ref_ccc(truth[ok, 1], pred[ok, 1]))
    assert s["va"] == pytest.approx((s["ccc_valence"] + s["ccc_arousal"]) / 2)


def test_va_scores_degenerate():
    s = M.va_scores(np.full((4, 2), -5.0), np.zeros((4, 2)))
    assert s == {"ccc_valence": 0.0, "ccc_arousal": 0.0, "va": 0.0, "va_count": 0}
    assert_no_nan(M.va_scores([[0.1, 0.2]], [[0.3, 0.4]]))
    assert_no_nan(M.va_scores(np.zeros((5, 2)), np.zeros((5, 2))))


# ---------------------------------------------------------------- EXPR


def random_expr(seed, n=400, k=8, invalid=0.15):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.5, t, rng.integers(0, k, n))
    t[rng.random(n) < invalid] = -1
    return t, p


@pytest.mark.parametrize("seed", SEEDS)
def test_f1_per_class_matches_sklearn(seed):
    t, p = random_expr(seed)
    ok = t != -1
    ref = f1_score(t[ok], p[ok], labels=range(8), average=None, zero_division=0)
    np.testing.assert_allclose(M.f1_per_class(t, p, 8), ref, atol=1e-12)


def test_f1_absent_classes_and_range_check():
    t = np.array([0, 0, 1, 1, -1, -1])
    p = np.array([0, 1, 1, 1, 7, 9])  # predictions on invalid rows are never looked at
    ref = f1_score(t[:4], p[:4], labels=range(8), average=None, zero_division=0)
    np.testing.assert_allclose(M.f1_per_class(t, p, 8), ref)
    assert M.f1_per_class(t, p, 8)[2:].tolist() == [0.0] * 6
    with pytest.raises(ValueError):
        M.f1_per_class([0, 1], [0, 8], 8)
    with pytest.raises(ValueError):
        M.f1_per_class([0, 1], [0, -1], 8)


@pytest.mark.parametrize("seed", SEEDS)
def test_expr_scores_match_sklearn(seed):
    t, p = random_expr(seed)
    t[t == 7] = -1  # class "Other" absent from truth: still counted in the macro mean
    ok = t != -1
    s = M.expr_scores(t, p, EXPRS)
    ref = f1_score(t[ok], p[ok], labels=range(8), average="macro", zero_division=0)
    assert s["expr_f1"] == pytest.approx(ref)
    assert s["expr_acc"] == pytest.approx(np.mean(t[ok] == p[ok]))
    assert s["expr_count"] == ok.sum()
    assert list(s["expr_f1_per_class"]) == EXPRS
    assert s["expr_f1_per_class"]["Other"] == 0.0


def test_expr_scores_degenerate():
    s = M.expr_scores([-1, -1, -1], [0, 3, 5], EXPRS)
    assert s["expr_f1"] == 0.0 and s["expr_acc"] == 0.0 and s["expr_count"] == 0
    assert_no_nan(s)
    s = M.expr_scores([4], [4], EXPRS)  # single sample
    assert s["expr_acc"] == 1.0 and s["expr_f1"] == pytest.approx(1 / 8)
    assert_no_nan(M.expr_scores([0, 1, 2, 3], [0, 0, 0, 0], EXPRS))  # constant prediction


def test_p_lsd_and_p_mtl():
    t, p = random_expr(7, k=6)
    ok = t != -1
    ref = f1_score(t[ok], p[ok], labels=range(6), average="macro", zero_division=0)
    assert M.p_lsd(t, p) == pytest.approx(ref)
    assert M.p_mtl({"va": 0.5, "expr_f1": 0.25, "au_f1": 0.125, "other": 9}) == 0.875


# ---------------------------------------------------------------- AU


def random_au(seed, n=500, k=12):
    rng = np.random.default_rng(seed)
    rate = rng.uniform(0.05, 0.5, k)
    t = (rng.random((n, k)) < rate).astype(int)
    probs = np.clip(0.35 * t + rng.uniform(0, 0.7, (n, k)), 0, 1)
    t[rng.random((n, k)) < 0.1] = -1
    return t, probs


def ref_au_f1(t, p):
    out = []
    for j in range(t.shape[1]):
        ok = t[:, j] != -1
        out.append(
            f1_score(t[ok, j], p[ok, j], labels=[1], average="macro", zero_division=0)
            if ok.any()
            else 0.0
        )
    return np.array(out)


@pytest.mark.parametrize("seed", SEEDS)
def test_au_f1_matches_sklearn(seed):
    t, probs = random_au(seed)
    t[:, 3] = -1  # an AU without any valid row
    t[t[:, 5] == 1, 5] = 0  # an AU without positives ...
    p = M.binarize_au(probs)
    p[:, 5] = 0  # ... in truth and prediction
    f1 = M.au_f1_per_au(t, p)
    np.testing.assert_allclose(f1, ref_au_f1(t, p), atol=1e-12)
    assert f1[3] == 0.0 and f1[5] == 0.0
    s = M.au_scores(t, p, AUS)
    assert s["au_f1"] == pytest.approx(f1.mean())
    assert s["au_f1_per_au"]["AU6"] == 0.0
    assert s["au_count"]["AU6"] == 0
    assert s["au_count"]["AU1"] == (t[:, 0] != -1).sum()
    assert_no_nan(s)


def test_au_degenerate_and_rejects_probabilities():
    assert_no_nan(M.au_scores(-np.ones((3, 12), int), np.zeros((3, 12), int), AUS))
    assert_no_nan(M.au_scores(np.ones((1, 12), int), np.ones((1, 12), int), AUS))
    with pytest.raises(ValueError, match="binarize"):
        M.au_f1_per_au(np.ones((2, 12), int), np.full((2, 12), 0.7))


def test_binarize_scalar_and_per_au():
    probs = np.array([[0.2, 0.6, 0.9], [0.5, 0.4, 0.1]])
    np.testing.assert_array_equal(M.binarize_au(probs), [[0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(M.binarize_au(probs, 0.3), [[0, 1, 1], [1, 1, 0]])
    np.testing.assert_array_equal(M.binarize_au(probs, [0.1, 0.7, 0.05]), [[1, 0, 1], [1, 0, 1]])
    with pytest.raises(ValueError):
        M.binarize_au(probs, [0.5, 0.5])
    with pytest.raises(ValueError, match="logits"):
        M.binarize_au(np.array([[-2.0, 3.0]]))


@pytest.mark.parametrize("seed", SEEDS)
def test_tuned_thresholds_beat_default_and_match_brute_force(seed):
    t, probs = random_au(seed, n=300)
    thr = M.tune_au_thresholds(probs, t)
    f1_tuned = M.au_f1_per_au(t, M.binarize_au(probs, thr))
    f1_half = M.au_f1_per_au(t, M.binarize_au(probs, 0.5))
    assert (f1_tuned >= f1_half - 1e-12).all()
    # brute force with sklearn: best F1 per AU, ties to the threshold nearest 0.5
    for j in range(12):
        ok = t[:, j] != -1
        scores = [f1_score(t[ok, j], probs[ok, j] > g, zero_division=0) for g in M.DEFAULT_AU_GRID]
        best = max(scores)
        cands = [g for g, s in zip(M.DEFAULT_AU_GRID, scores, strict=True) if math.isclose(s, best)]
        assert min(abs(c - 0.5) for c in cands) == pytest.approx(abs(thr[j] - 0.5))
        assert f1_tuned[j] == pytest.approx(best)


def test_tune_thresholds_degenerate_and_fast():
    t, probs = random_au(0, n=200)
    t[:, 0] = -1  # no valid rows
    t[t[:, 1] == 1, 1] = 0  # no positives: F1 flat at 0 -> tie -> 0.5
    thr = M.tune_au_thresholds(probs, t)
    assert thr[0] == 0.5 and thr[1] == 0.5
    assert set(thr) <= set(M.DEFAULT_AU_GRID)
    assert M.tune_au_thresholds(probs, t, grid=[0.2, 0.8])[0] == 0.5
    t, probs = random_au(1, n=30_000)
    start = time.perf_counter()
    M.tune_au_thresholds(probs, t)
    assert time.perf_counter() - start < 1.0


def test_threshold_save_load_roundtrip(tmp_path):
    thr = np.round(np.linspace(0.1, 0.9, 12), 3)
    path = M.save_au_thresholds(tmp_path / "thr.json", thr, AUS, split="val", seed=3)
    data = json.loads(path.read_text())
    assert data["au_names"] == AUS and data["split"] == "val" and data["seed"] == 3
    np.testing.assert_array_equal(M.load_au_thresholds(path, AUS), thr)
    # another spelling and order of the same AUs: values follow the names
    order = np.random.default_rng(0).permutation(12)
    openface = [f"AU{int(AUS[i][2:]):02d}_r" for i in order]
    np.testing.assert_array_equal(M.load_au_thresholds(path, openface), thr[order])


def test_threshold_load_mismatch(tmp_path):
    path = M.save_au_thresholds(tmp_path / "thr.json", np.full(12, 0.5), AUS)
    wrong = AUS[:-1] + ["AU5"]
    with pytest.raises(ValueError, match=r"thr\.json") as err:
        M.load_au_thresholds(path, wrong)
    assert "AU5" in str(err.value) and "AU26" in str(err.value)
    with pytest.raises(ValueError):
        M.load_au_thresholds(path, AUS[:-1])
    with pytest.raises(ValueError):
        M.save_au_thresholds(tmp_path / "bad.json", np.full(11, 0.5), AUS)
