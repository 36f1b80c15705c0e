"""`affectkit evaluate | predict | ensemble | pretrain` on tiny runs trained on the sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from affectkit.cli import main
from affectkit.config import load_config
from affectkit.data import read_image_list, read_mtl_predictions
from affectkit.data.submission import read_label_csv, read_per_video_folder
from affectkit.engine.evaluation import score_predictions
from affectkit.engine.inference import load_run, open_table, predict_table
from affectkit.engine.loop import train
from affectkit.labels import ABAW_AU, ABAW_EXPR
from affectkit.metrics import load_au_thresholds
from affectkit.models.checkpoint import _torch_load
from affectkit.scoring import load_predictions, score_files

TINY = ["optim.epochs=1", "optim.warmup_epochs=0", "optim.batch_size=4", "data.img_size=32",
        "data.resize=34"]
OFFICIAL = ("ccc_valence", "ccc_arousal", "va", "expr_f1", "au_f1", "p_mtl")


@pytest.fixture(scope="module")
def mtl_run(sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mtl") / "run"
    return train(load_config("demo", [f"data.root={sample['root']}", f"run.out_dir={out}",
                                      *TINY]), progress=False)


@pytest.fixture(scope="module")
def cotex_run(sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cotex") / "run"
    cfg = load_config("cotex-expr", [
        f"data.root={sample['root']}", f"run.out_dir={out}", "data.layout=mtl", *TINY,
        "model.backbone=vit_tiny_patch16_224", "model.pretrained=null", "model.drop_path=0.0",
        "data.num_workers=0", "optim.accum_steps=1", "optim.layer_decay=null", "run.amp=off"])
    return train(cfg, progress=False)


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def _close(a: dict, b: dict, keys=OFFICIAL, tol=1e-5) -> None:
    for k in keys:
        assert a[k] == pytest.approx(b[k], abs=tol), k


def test_evaluate_report_scores_and_tuned_thresholds(mtl_run, sample, tmp_path, capsys):
    assert main(["evaluate", str(mtl_run), "--au-thresholds", "tune"]) == 0
    printed = _json_out(capsys)
    out = mtl_run / "eval-val"
    for name in ("scores.json", "report.md", "predictions.csv", "per_class.csv", "per_au.csv",
                 "confusion.png", "au_f1.png", "va_scatter.png", "au_thresholds.json"):
        assert (out / name).stat().st_size > 0, name
    for name in ("confusion.png", "au_f1.png", "va_scatter.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({name})" in (out / "report.md").read_text()
    scores = json.loads((out / "scores.json").read_text())
    assert scores == printed and scores["task"] == "mtl" and scores["split"] == "mtl/val"

    # the library path gives the same numbers
    run = load_run(mtl_run)
    arrays, table = predict_table(run, open_table(run.cfg).table,
                                  batch_size=run.cfg.optim.batch_size)  # the CLI's batches
    _close(scores, score_predictions(arrays, run.labels), tol=1e-12)
    assert scores["rows"] == len(table)

    # predictions.csv (at 0.5) is what `affectkit score` reads, with the same scores
    truth = sample["root"] / "validation_set_annotations.txt"
    _close(scores, score_files("mtl", truth, out / "predictions.csv"))

    # tuned thresholds: saved beside the report and kept with the run, never worse
    tuned = scores["tuned"]
    assert tuned["optimistic"] and "optimistic" in tuned["note"]
    assert tuned["au_f1"] >= scores["au_f1"]
    thr = load_au_thresholds(out / "au_thresholds.json", ABAW_AU.classes)
    assert np.allclose(thr, tuned["au_thresholds"])
    assert np.allclose(load_au_thresholds(mtl_run / "au_thresholds.json", ABAW_AU.classes), thr)
    per_au = (out / "per_au.csv").read_text().splitlines()
    assert per_au[0].startswith("AU,F1,threshold,positives") and len(per_au) == 13
    assert (out / "per_class.csv").read_text().startswith("class,precision,recall,F1,support")

    # predict on the same split uses the run's tuned thresholds; `affectkit score` agrees
    pred = tmp_path / "val_pred.txt"
    assert main(["predict", str(mtl_run), "--split", "val", "--out", str(pred)]) == 0
    assert "tuned" in capsys.readouterr().err
    assert main(["score", "--task", "mtl", "--truth", str(truth), "--pred", str(pred)]) == 0
    _close({**scores, **tuned}, _json_out(capsys))


def test_predict_test_list_in_order(mtl_run, sample, tmp_path, capsys):
    out = tmp_path / "sub" / "mtl_submission.txt"
    # a checkpoint file works as well as a run folder
    assert main(["predict", str(mtl_run / "last.pt"), "--data", str(sample["test"]),
                 "--out", str(out)]) == 0
    assert "MTL submission" in capsys.readouterr().out
    assert out.read_text().splitlines()[0] == "image,valence,arousal,expression,aus"
    sub = read_mtl_predictions(out)
    assert sub.images == read_image_list(sample["test"]).images
    assert load_predictions("mtl", out).images == sub.images
    assert set(np.unique(sub.au)) <= {0, 1} and np.abs(sub.va).max() <= 1


def test_predict_refuses_missing_images(mtl_run, sample, tmp_path, capsys):
    listed = tmp_path / "list.txt"
    first = read_image_list(sample["test"]).images[0]
    listed.write_text(f"{first}\nvideo5/99999.jpg\n")
    code = main(["predict", str(mtl_run), "--data", str(listed), "--images",
                 str(sample["root"] / "cropped_aligned"), "--out", str(tmp_path / "x.txt")])
    assert code == 2
    err = capsys.readouterr().err
    assert "video5/99999.jpg" in err and "cropped_aligned" in err and str(listed) in err
    assert not (tmp_path / "x.txt").exists()


def test_ensemble_of_copies_equals_the_run(mtl_run, sample, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(mtl_run, copy, ignore=shutil.ignore_patterns("eval-*", "tb"))
    out = tmp_path / "ens"
    assert main(["ensemble", str(mtl_run), str(copy), "--out", str(out)]) == 0
    scores = _json_out(capsys)
    assert scores == json.loads((out / "scores.json").read_text())
    single = _torch_load(mtl_run / "best.pt")["metrics"]  # the run's own validation
    _close(scores, single)
    assert scores["member_scores"] == [pytest.approx(single["p_mtl"], abs=1e-5)] * 2
    assert scores["tuned"]["au_f1"] >= scores["au_f1"]
    thr = out / "au_thresholds.json"
    assert (out / "report.md").is_file()

    # on a test list: a submission with the validation ensemble's thresholds
    sub = tmp_path / "ens_sub.txt"
    assert main(["ensemble", str(mtl_run), str(copy), "--data", str(sample["test"]),
                 "--out", str(sub), "--au-thresholds", str(thr)]) == 0
    assert read_mtl_predictions(sub).images == read_image_list(sample["test"]).images


def test_cotex_predicts_labels_and_per_video(cotex_run, mtl_run, sample, tmp_path, capsys):
    out = tmp_path / "expr.csv"
    assert main(["predict", str(cotex_run), "--data", str(sample["test"]),
                 "--out", str(out)]) == 0
    assert "image,label CSV" in capsys.readouterr().out
    assert out.read_text().splitlines()[0] == "image,label"
    table = read_label_csv(out, ABAW_EXPR)
    assert table.images == read_image_list(sample["test"]).images
    assert (table.expression >= 0).all()
    assert load_predictions("expr", out).images == table.images  # what `score` reads

    # a list of video names: the per-video EXPR format, frames 1..last crop
    videos = tmp_path / "videos.txt"
    videos.write_text("video5\nvideo9_left\n")
    folder = tmp_path / "per_video"
    assert main(["predict", str(cotex_run), "--data", str(videos), "--images",
                 str(sample["root"] / "cropped_aligned"), "--out", str(folder)]) == 0
    capsys.readouterr()
    pred = read_per_video_folder(folder, "EXPR", prediction=True)
    for video in ("video5", "video9_left"):
        crops = sorted((sample["root"] / "cropped_aligned" / video).glob("*.jpg"))
        assert (pred.df["video"] == video).sum() == int(crops[-1].stem)

    # evaluate: expression scores only; AU thresholds make no sense here
    assert main(["evaluate", str(cotex_run), "--out", str(tmp_path / "ev")]) == 0
    scores = _json_out(capsys)
    assert scores["task"] == "expr" and "expr_f1" in scores and "p_mtl" not in scores
    assert (tmp_path / "ev" / "confusion.png").is_file()
    assert not (tmp_path / "ev" / "per_au.csv").exists()
    assert main(["evaluate", str(cotex_run), "--au-thresholds", "tune"]) == 2
    assert "no AU thresholds" in capsys.readouterr().err

    # an ensemble must not mix task kinds
    assert main(["ensemble", str(mtl_run), str(cotex_run), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "same tasks" in err and str(cotex_run) in err


def test_run_errors_exit_2(mtl_run, sample, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty") in err and "best.pt" in err
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    assert main(["evaluate", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert main(["evaluate", str(mtl_run), "--data", str(sample["test"])]) == 2
    assert "no labels" in capsys.readouterr().err


def test_pretrain_and_train_refuse_the_other_kind(sample, tmp_path, capsys):
    mae = tmp_path / "mae.yaml"
    mae.write_text("base: demo\ndata: {jitter: 0.0, hue: 0.0}\n"
                   "model: {kind: mae, pool: cls, mask_ratio: 0.75}\n")
    root = f"data.root={sample['root']}"
    assert main(["train", str(mae), root, "--dry-run"]) == 2
    assert "affectkit pretrain" in capsys.readouterr().err
    assert main(["pretrain", "demo", root, "--dry-run"]) == 2
    assert "affectkit train demo" in capsys.readouterr().err
    assert main(["pretrain", str(mae), root, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "kind: mae" in out and "# pretrain:" in out
