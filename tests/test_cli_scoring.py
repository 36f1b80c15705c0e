"""CLI (`data sample|check|pack`, `score`), file-level scoring and submission writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from affectkit.cli import main
from affectkit.data import (
    DataError,
    PackedImages,
    read_mtl_annotations,
    read_mtl_predictions,
    write_mtl_submission,
    write_per_video_predictions,
)
from affectkit.data.abaw import read_per_video
from affectkit.labels import ABAW_AU, LSD
from affectkit.scoring import score_files

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    assert main(["data", "sample", str(root), "--frames", "40"]) == 0
    return root


def _ccc(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    cov = ((x - x.mean()) * (y - y.mean())).mean()
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_check_sample_ok(sample, capsys):
    assert main(["data", "check", str(sample), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == []
    splits = report["splits"]
    assert {"mtl/train", "mtl/val", "mtl/test", "per-video/train", "per-video/val"} <= set(splits)
    train = splits["mtl/train"]
    assert train["rows"] > 0 and train["missing_images"]["count"] == 0
    assert sum(train["expression"]["counts"].values()) == train["expression"]["valid"]
    assert set(train["au"]["positive_rate"]) == set(ABAW_AU.classes)
    assert splits["per-video/train"]["skipped"]["annotated frames without a face crop"] > 0


def test_check_fails_on_malformed_and_missing(sample, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    good = (sample / "training_set_annotations.txt").read_text().splitlines()
    good[3] = good[3].rsplit(",", 1)[0] + ",7"  # AU26 = 7 on line 4
    (bad / "training_set_annotations.txt").write_text("\n".join(good) + "\n")
    assert main(["data", "check", str(bad), "--no-images"]) == 1
    err = capsys.readouterr().err
    assert "training_set_annotations.txt:4" in err and "AU26" in err

    # images missing: an error unless explicitly allowed
    (bad / "training_set_annotations.txt").write_text(
        (sample / "training_set_annotations.txt").read_text())
    assert main(["data", "check", str(bad)]) == 1
    assert "missing image" in capsys.readouterr().err
    assert main(["data", "check", str(bad), "--allow-missing"]) == 0


def test_check_missing_root_is_clear_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_score_mtl_matches_independent_computation(sample, capsys):
    truth = sample / "validation_set_annotations.txt"
    pred = sample / "predictions" / "validation_predictions.txt"
    assert main(["score", "--task", "mtl", "--truth", str(truth), "--pred", str(pred)]) == 0
    got = json.loads(capsys.readouterr().out)
    t = read_mtl_annotations(truth).df.set_index("image")
    p = read_mtl_predictions(pred).df.set_index("image").loc[t.index]
    va_ok = (t.valence != -5) & (t.arousal != -5)
    assert got["ccc_valence"] == pytest.approx(_ccc(t.valence[va_ok], p.valence[va_ok]))
    assert got["ccc_arousal"] == pytest.approx(_ccc(t.arousal[va_ok], p.arousal[va_ok]))
    ex_ok = t.expression >= 0
    assert got["expr_f1"] == pytest.approx(f1_score(
        t.expression[ex_ok], p.expression[ex_ok], labels=range(8), average="macro",
        zero_division=0))
    au_f1 = [f1_score(t[a][t[a] >= 0], p[a][t[a] >= 0], zero_division=0) for a in ABAW_AU.classes]
    assert got["au_f1"] == pytest.approx(np.mean(au_f1))
    assert got["p_mtl"] == pytest.approx(got["va"] + got["expr_f1"] + got["au_f1"])
    assert len(got["expr_f1_per_class"]) == 8


@pytest.mark.parametrize("edit, needle", [
    (lambda rows: rows[:-1], "not predicted"),
    (lambda rows: rows + [rows[-1]], "duplicate image"),
    (lambda rows: rows + ["zzz/00001.jpg" + rows[-1][rows[-1].index(","):]], "not in the truth"),
])
def test_score_rejects_missing_extra_duplicate(sample, tmp_path, capsys, edit, needle):
    lines = (sample / "predictions" / "validation_predictions.txt").read_text().splitlines()
    pred = tmp_path / "pred.txt"
    pred.write_text("\n".join([lines[0], *edit(lines[1:])]) + "\n")
    truth = sample / "validation_set_annotations.txt"
    assert main(["score", "--task", "mtl", "--truth", str(truth), "--pred", str(pred)]) == 2
    assert needle in capsys.readouterr().err


def test_score_rejects_sentinel_in_submission(sample, tmp_path):
    lines = (sample / "predictions" / "validation_predictions.txt").read_text().splitlines()
    f = lines[2].split(",")
    f[3] = "-1"
    lines[2] = ",".join(f)
    pred = tmp_path / "pred.txt"
    pred.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"pred.txt:3: expression"):
        score_files("mtl", sample / "validation_set_annotations.txt", pred)


def test_per_video_prediction_folder_round_trip(sample, tmp_path):
    truth_dir = sample / "Annotations" / "VA_Estimation_Challenge" / "Validation_Set"
    truth = {f.stem: f.read_text().splitlines()[1:] for f in truth_dir.glob("*.txt")}
    # a perfect prediction where labelled, anything in [-1, 1] elsewhere
    preds = {v: np.array([[float(x) for x in line.split(",")] for line in lines])
             for v, lines in truth.items()}
    for v in preds:
        preds[v][preds[v] == -5] = 0.0
    write_per_video_predictions(tmp_path / "va", "VA", preds)
    got = score_files("va", truth_dir, tmp_path / "va")
    assert got["ccc_valence"] == pytest.approx(1.0) and got["ccc_arousal"] == pytest.approx(1.0)
    assert got["rows"] == sum(len(x) for x in truth.values())
    # one line short: named as missing
    short = tmp_path / "va_short"
    write_per_video_predictions(short, "VA", {v: p[:-1] for v, p in preds.items()})
    with pytest.raises(DataError, match="not predicted"):
        score_files("va", truth_dir, short)


def test_per_video_expr_and_au_scores(sample, tmp_path):
    base = sample / "Annotations"
    pv = read_per_video(sample, sample / "cropped_aligned", "val")
    assert len(pv) > 0
    for task, folder, n in (("EXPR", "EXPR_Classification_Challenge", 1),
                            ("AU", "AU_Detection_Challenge", 12)):
        truth_dir = base / folder / "Validation_Set"
        preds = {}
        truth, pred = [], []
        for f in sorted(truth_dir.glob("*.txt")):
            vals = np.array([[int(x) for x in line.split(",")]
                             for line in f.read_text().splitlines()[1:]]).reshape(-1, n)
            guess = np.where(vals < 0, 0, vals)
            guess[::3] = 1 - guess[::3] if task == "AU" else (guess[::3] + 1) % 8
            preds[f.stem] = guess.squeeze(1) if n == 1 else guess
            truth.append(vals)
            pred.append(guess)
        write_per_video_predictions(tmp_path / task, task, preds)
        got = score_files(task.lower(), truth_dir, tmp_path / task)
        t, p = np.concatenate(truth), np.concatenate(pred)
        if task == "EXPR":
            ok = t[:, 0] >= 0
            want = f1_score(t[ok, 0], p[ok, 0], labels=range(8), average="macro",
                            zero_division=0)
            assert got["expr_f1"] == pytest.approx(want)
        else:
            want = np.mean([f1_score(t[t[:, j] >= 0, j], p[t[:, j] >= 0, j], zero_division=0)
                            for j in range(12)])
            assert got["au_f1"] == pytest.approx(want)


def test_score_lsd_class_folders_and_csv(tmp_path):
    from PIL import Image

    root = tmp_path / "validation_set_real_images"
    rows = ["image,label"]
    for k, folder in enumerate(["ANGERE", "disgust", "Fear", "HAPPINESS", "sadness", "SURPRISE"]):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8)).save(root / folder / f"{i}.jpg")
            pred = LSD.classes[k] if i < 2 else LSD.classes[(k + 1) % 6]
            rows.append(f"{folder}/{i}.jpg,{pred}")
    (tmp_path / "pred.csv").write_text("\n".join(rows) + "\n")
    got = score_files("lsd", root, tmp_path / "pred.csv")
    y_true = np.repeat(np.arange(6), 3)
    y_pred = np.array([[k, k, (k + 1) % 6] for k in range(6)]).ravel()
    assert got["p_lsd"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert list(got["expr_f1_per_class"]) == list(LSD.classes)


def test_write_mtl_submission_validates_and_round_trips(tmp_path):
    images = ["a/00001.jpg", "a/00003.jpg", "b/00001.jpg"]
    va = np.array([[0.1, -0.2], [1.0, -1.0], [0.0, 0.5]])
    expr = np.array([0, 7, 4])
    au = np.random.default_rng(0).integers(0, 2, (3, 12))
    path = write_mtl_submission(tmp_path / "sub.txt", images, va, expr, au)
    assert path.read_text().splitlines()[0] == "image,valence,arousal,expression,aus"
    back = read_mtl_predictions(path)
    assert back.images == images
    np.testing.assert_allclose(back.va, va, atol=1e-6)
    np.testing.assert_array_equal(back.expression, expr)
    np.testing.assert_array_equal(back.au, au)
    with pytest.raises(ValueError, match="valence/arousal"):
        write_mtl_submission(tmp_path / "x.txt", images, va * 2, expr, au)
    with pytest.raises(ValueError, match="0/1"):
        write_mtl_submission(tmp_path / "x.txt", images, va, expr, au * 0.7)
    with pytest.raises(ValueError, match="class indices"):
        write_mtl_submission(tmp_path / "x.txt", images, va, [0, 8, 1], au)
    with pytest.raises(ValueError, match="duplicate"):
        write_mtl_submission(tmp_path / "x.txt", images[:2] * 2, np.zeros((4, 2)), [0] * 4,
                             np.zeros((4, 12), int))
    assert not (tmp_path / "x.txt").exists()


def test_pack_cli(sample, tmp_path):
    assert main(["data", "pack", str(sample), "--split", "mtl/val", "--out",
                 str(tmp_path / "cache")]) == 0
    packed = PackedImages(tmp_path / "cache" / "mtl_val.npy")
    table = read_mtl_annotations(sample / "validation_set_annotations.txt")
    assert len(packed) == len(table) and packed.size == 112


@pytest.mark.skipif(not (SHARED / "ckplus48").is_dir(), reason="../shared/data/ckplus48 absent")
def test_check_real_ckplus(capsys):
    assert main(["data", "check", str(SHARED / "ckplus48"), "--json"]) == 0
    splits = json.loads(capsys.readouterr().out)["splits"]
    assert splits["csv/labels"]["rows"] == 981
    assert splits["csv/labels"]["expression"]["counts"]["contempt"] == 54
    au = splits["csv/au_labels_from_ck_codes"]
    assert au["rows"] == 684 and au["au"]["labels"] == "ckplus_au"
