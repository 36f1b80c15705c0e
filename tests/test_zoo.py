"""Shipped models and what they are built from: the small-face CNN, mixed datasets
(``data.extra``), models without a VA head, test-time augmentation, packaging into the zoo,
``affectkit models`` / ``predict --model`` / ``load_model`` / EMMA's ``affectkit:NAME``
branch, and a smoke check of the real shipped model on real faces."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image

import affectkit
from affectkit import zoo
from affectkit.cli import main
from affectkit.config import ConfigError, load_config
from affectkit.data.augment import BatchAugment, eval_transform
from affectkit.engine.build import build_model, open_splits
from affectkit.labels import FER2013
from affectkit.models.backbone import create_backbone
from affectkit.models.tta import TestTimeAugment as TTA

# ----------------------------------------------------------------------------- pieces


def test_face_vgg_is_a_timm_model_and_a_backbone():
    m = timm.create_model("face_vgg_s", num_classes=7)
    assert m(torch.randn(2, 3, 48, 48)).shape == (2, 7)
    b = create_backbone("face_vgg_s", img_size=40)
    assert not b.is_vit and b.num_features == 256
    assert b(torch.randn(2, 3, 40, 40)).shape == (2, 256)
    assert b.group_matcher()["blocks"]  # timm's optimiser helpers see its stages
    with pytest.raises(ValueError, match="no stochastic depth"):
        create_backbone("face_vgg_s", drop_path=0.1)


def test_eval_crop_takes_the_centre_at_the_training_scale():
    img = torch.zeros(3, 48, 48, dtype=torch.uint8)
    img[:, 4:44, 4:44] = 255  # the centre 40 px white, a 4 px black border
    out = eval_transform(40, mean=(0, 0, 0), std=(1, 1, 1), resize=48)(img)
    assert out.shape == (3, 40, 40) and out.min() == 1.0  # the border is cropped away
    whole = eval_transform(40, mean=(0, 0, 0), std=(1, 1, 1))(img)
    assert whole.min() < 0.5  # resizing the whole face keeps the border


def test_batch_augment_erases_boxes_and_rotates():
    x = torch.full((64, 3, 40, 40), 200, dtype=torch.uint8)
    aug = BatchAugment(40, scale=(1.0, 1.0), brightness=0, contrast=0, saturation=0, hue=0,
                       mean=(0, 0, 0), std=(1, 1, 1), erase=1.0)
    out = aug(x)
    erased = (out == 0).all(1).float().mean((1, 2))  # share of each face erased
    assert (erased > 0).all() and (erased <= 0.25).all()
    ramp = torch.arange(40, dtype=torch.uint8).mul(6).expand(8, 3, 40, 40).contiguous()
    rot = BatchAugment(40, scale=(1.0, 1.0), flip=0, brightness=0, contrast=0, saturation=0,
                       hue=0, mean=(0, 0, 0), std=(1, 1, 1), rotate=30)
    still = BatchAugment(40, scale=(1.0, 1.0), flip=0, brightness=0, contrast=0,
                         saturation=0, hue=0, mean=(0, 0, 0), std=(1, 1, 1))
    assert torch.allclose(still(ramp), ramp.float() / 255, atol=1e-3)
    assert not torch.allclose(rot(ramp), ramp.float() / 255, atol=1e-2)


class _Linear(torch.nn.Module):
    def forward(self, x):
        return {"expr_logits": x.mean((2, 3)), "va": x[:, :2, 0, 0]}


def test_tta_averages_the_views():
    x = torch.randn(4, 3, 48, 48)
    flip = TTA(_Linear(), "flip")(x)
    torch.testing.assert_close(flip["expr_logits"], x.mean((2, 3)))
    ten = TTA(_Linear(), "ten-crop", 40)(x)
    crops = [x[..., :40, :40], x[..., :40, 8:], x[..., 8:, :40], x[..., 8:, 8:],
             x[..., 4:44, 4:44]]
    torch.testing.assert_close(ten["expr_logits"],
                               torch.stack([c.mean((2, 3)) for c in crops]).mean(0))
    with pytest.raises(ValueError, match="one of"):
        TTA(_Linear(), "five-crop")


# ----------------------------------------------------------------------------- mixed data


def _faces(root, names, size=48, seed=0):
    rng = np.random.default_rng(seed)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).convert(
            "RGB").save(path)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """An expression dataset (CSV with splits) and an AU dataset with subjects."""
    root = tmp_path_factory.mktemp("mixed")
    expr = root / "fer"
    classes = list(FER2013.classes)
    rows = [(f"img/{i}.png", classes[i % 7], "Training" if i < 48 else "PublicTest")
            for i in range(64)]
    _faces(expr, [r[0] for r in rows])
    pd.DataFrame(rows, columns=["path", "expression", "usage"]).to_csv(expr / "labels.csv",
                                                                       index=False)
    au = root / "ck"
    aus = [(f"au/S{s}_{k}.png", s, "happy", *(int((s + k + j) % 3 == 0) for j in range(4)))
           for s in range(1, 7) for k in range(4)]
    _faces(au, [r[0] for r in aus], seed=1)
    pd.DataFrame(aus, columns=["path", "subject", "expression", "AU1", "AU6", "AU12", "AU25"]
                 ).to_csv(au / "aus.csv", index=False)
    return root


def _mixed_overrides(root, **extra):
    entry = {"root": "../ck/aus.csv", "tasks": ["au"], "repeat": 2,
             "held_out_subjects": ["1"], "val_subjects": ["2"], **extra}
    return [f"data.root={root / 'fer'}", "data.layout=csv", "data.expr_labels=fer2013",
            "data.train_split=Training", "data.val_split=PublicTest",
            f"data.extra=[{json.dumps(entry)}]"]


def test_extra_data_mixes_tasks_subjects_and_repeats(mixed):
    cfg = load_config("default-model", _mixed_overrides(mixed))
    train, val = open_splits(cfg)
    ck = train.df[train.df.image.str.contains("/ck/")]
    assert len(train) == 48 + 2 * 4 * 4  # subjects 3..6, 4 faces each, twice
    assert not ck.image.str.contains("S1_|S2_").any()  # held out / validation: never trained
    assert (ck.expression == -1).all()  # tasks: [au] keeps CK+ expressions out
    assert set(ck.AU1.unique()) <= {0, 1} and (ck.AU2 == -1).all()  # not coded: unlabelled
    fer = train.df[~train.df.image.str.contains("/ck/")]
    assert (fer.AU1 == -1).all() and (fer.expression >= 0).all()
    vck = val.df[val.df.image.str.contains("/ck/")]
    assert len(val) == 16 + 4 and vck.image.str.contains("S2_").all()
    assert build_model(cfg, load_weights=False) is not None


def test_extra_data_config_errors(mixed):
    with pytest.raises(ConfigError, match=r"unknown key 'data.extra.0.subjects'"):
        load_config("default-model", _mixed_overrides(mixed, subjects=["1"]))
    with pytest.raises(ConfigError, match=r"data.extra.0.tasks.*'va', 'expr', 'au'"):
        load_config("default-model", _mixed_overrides(mixed, tasks=["age"]))
    with pytest.raises(ConfigError, match=r"both validate and are held out: \['1'\]"):
        load_config("default-model", _mixed_overrides(mixed, val_subjects=["1"]))
    cfg = load_config("default-model", _mixed_overrides(mixed, subject_column="person"))
    with pytest.raises(Exception, match="data.extra.0.subject_column.*person"):
        open_splits(cfg)


# ----------------------------------------------------------------------------- the zoo


@pytest.fixture(scope="module")
def tiny_zoo(mixed, tmp_path_factory):
    """A tiny default-model run on the mixed data, packaged into a temporary zoo."""
    out = tmp_path_factory.mktemp("run")
    ov = _mixed_overrides(mixed) + [
        "model.backbone=face_vgg_s", "data.img_size=32", "data.resize=36", "optim.epochs=1",
        "optim.warmup_epochs=0", "optim.batch_size=16", f"run.out_dir={out}"]
    assert main(["train", "default-model", *ov]) == 0
    assert main(["evaluate", str(out), "--au-thresholds", "tune"]) == 0
    folder = tmp_path_factory.mktemp("zoo")
    card = {"summary": "tiny test model", "expression_classes": list(FER2013.classes),
            "absent_classes": ["Other"], "aus": ["AU1"], "va": False, "recipe": "default-model",
            "scores": {"acc": {"what": "nothing", "value": 0.5}},
            "per_class": {"happy": {"F1": 0.1}}, "limits": ["random faces"],
            "licence": "test only", "licence_short": "test only"}
    zoo.package_run(out, "tiny", card, zoo=folder)
    return {"zoo": folder, "run": out, "data": mixed}


@pytest.fixture
def shipped(tiny_zoo, monkeypatch):
    monkeypatch.setattr(zoo, "ZOO", tiny_zoo["zoo"])
    monkeypatch.setattr(zoo, "DEFAULT", "tiny")
    return tiny_zoo


def test_packaged_model_is_small_half_precision_and_loads(shipped):
    folder = shipped["zoo"] / "tiny"
    assert {p.name for p in folder.iterdir()} == {zoo.WEIGHTS, zoo.CARD, zoo.THRESHOLDS}
    assert (folder / zoo.WEIGHTS).stat().st_size < (shipped["run"] / "best.pt").stat().st_size / 2
    thr = json.loads((folder / zoo.THRESHOLDS).read_text())
    assert thr["checkpoint_file"] == zoo.WEIGHTS
    assert thr["rows"] == 16 + 4  # tuned on the run's own validation: data.extra's rows too
    run = affectkit.load_model()  # the default one
    assert run.model.va_head is None and next(run.model.parameters()).dtype == torch.float32
    out = run.model(torch.randn(2, 3, 32, 32))
    assert set(out) == {"au_logits", "expr_logits"}  # no VA: it has none


def test_models_command_lists_and_renders_cards(shipped, capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "tiny (default): expression, AU" in text and "test only" in text
    assert main(["models", "--card", "default"]) == 0
    card = capsys.readouterr().out
    assert "# tiny (default)" in card and "valence/arousal: no" in card and "| happy |" in card
    assert main(["models", "--card", "nope"]) == 2
    assert "no shipped model 'nope' (shipped: tiny" in capsys.readouterr().err


def test_predict_model_writes_the_per_image_table(shipped, tmp_path, capsys):
    folder = tmp_path / "faces"
    _faces(folder, ["a.png", "b/c.png", "d.jpg"], size=60)
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", "default", "--data", str(folder), "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert sorted(df.image) == ["a.png", "b/c.png", "d.jpg"]
    classes = [c.lower() for c in affectkit.load_model().labels.classes]
    assert np.allclose(df[classes].sum(axis=1), 1, atol=1e-3)
    assert set(df.expression) <= set(classes)
    assert df.valence.isna().all() and df.arousal.isna().all()  # no VA head: empty
    assert {"AU01", "AU01_present", "AU26", "AU26_present"} <= set(df.columns)
    assert set(df.AU12_present.unique()) <= {0, 1}
    # Parquet: written with pyarrow, else refused by name before anything is written
    pq = tmp_path / "pred.parquet"
    rc = main(["predict", "--model", "tiny", "--data", str(folder), "--out", str(pq)])
    try:
        import pyarrow  # noqa: F401
        assert rc == 0 and len(pd.read_parquet(pq)) == 3
    except ImportError:
        assert rc == 2 and not pq.exists()
        assert "pred.parquet: writing Parquet needs pyarrow" in capsys.readouterr().err
    # ten-crop TTA runs through the same path
    assert main(["predict", "--model", "tiny", "--data", str(folder), "--out",
                 str(tmp_path / "tta.csv"), "--tta", "ten-crop"]) == 0
    # the challenge's MTL format needs VA: refused with the reason, nothing written
    sub = tmp_path / "sub.txt"
    assert main(["predict", "--model", "tiny", "--format", "submission", "--data",
                 str(folder), "--out", str(sub)]) == 2
    assert "no VA head" in capsys.readouterr().err and not sub.exists()


def test_predict_model_bad_input_names_it(shipped, tmp_path, capsys):
    assert main(["predict", "--model", "nope", "--data", str(tmp_path), "--out",
                 str(tmp_path / "x.csv")]) == 2
    assert "no shipped model 'nope'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "--model", "tiny", "--data", str(empty), "--out",
                 str(tmp_path / "x.csv")]) == 2
    assert str(empty) in capsys.readouterr().err
    bad = tmp_path / "bad"
    _faces(bad, ["ok.png"])
    (bad / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["predict", "--model", "tiny", "--data", str(bad), "--out",
                 str(tmp_path / "x.csv")]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert main(["predict", "--data", str(bad), "--out", str(tmp_path / "x.csv")]) == 2
    assert "a run folder or --model" in capsys.readouterr().err


def test_shipped_model_is_emmas_frozen_branch(shipped):
    cfg = load_config("emma-mtl", ["data.root=.", "model.expr_branch=affectkit:tiny",
                                   "model.backbone=vit_tiny_patch16_224", "model.pretrained=null",
                                   "data.img_size=64"])
    assert cfg.model.expr_branch_checkpoint is None  # the weights are in the package
    model = build_model(cfg)
    branch = model.expr_branch
    assert branch.labels.name == "fer2013" and branch.num_classes == 7
    assert not any(p.requires_grad for p in branch.parameters())
    out = model.train()(torch.randn(2, 3, 64, 64))
    assert out["expr_logits_cnn"].shape == (2, 7) and out["va"].shape == (2, 2)
    probs = out["expr_scores_cnn"]
    assert torch.allclose(probs.sum(1), torch.ones(2)) and (probs[:, 7] == 0).all()  # Other


# ----------------------------------------------------------------------------- the real one


def test_the_shipped_default_model_beats_chance_on_real_faces(shared_data):
    """A smoke check (the benchmark is benchmarks/real/default_model.py): on real
    FER2013 PrivateTest and CK+ faces, far above the class prior."""
    if zoo.DEFAULT not in zoo.model_names():
        pytest.fail(f"the default model {zoo.DEFAULT} is not shipped in {zoo.ZOO}")
    from affectkit.data.discover import open_dataset
    from affectkit.engine.inference import predict_table

    run = affectkit.load_model("default", device="cpu")
    fer = open_dataset(shared_data / "fer2013")["csv/labels/PrivateTest"]
    fer = fer.subset(np.random.default_rng(0).permutation(len(fer))[:300])
    arrays, table = predict_table(run, fer.with_expr_labels(run.labels), batch_size=100)
    acc = (arrays["expr_probs"].argmax(1) == table.expression).mean()
    assert acc > 0.5  # the majority class is 25% of PrivateTest
    ck = open_dataset(shared_data / "ckplus48")["csv/labels"]
    keep = np.flatnonzero(ck.df.expression.map(lambda e: ck.expr_labels.classes[e])
                          .isin(["anger", "disgust", "fear", "happy", "sadness", "surprise"]))
    ck = ck.subset(keep[::3]).with_expr_labels(run.labels)
    arrays, table = predict_table(run, ck, batch_size=100)
    assert (arrays["expr_probs"].argmax(1) == table.expression).mean() > 0.5


def test_a_corrupt_card_names_the_file_and_line(tmp_path, monkeypatch):
    from affectkit import zoo

    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / zoo.WEIGHTS).write_bytes(b"")
    (folder / zoo.CARD).write_text('{\n  "name": "broken-model",\n  "summary": oops\n}\n')
    monkeypatch.setattr(zoo, "ZOO", tmp_path)
    with pytest.raises(ValueError, match=r"card\.json, line 3, column 14: not valid JSON"):
        zoo.read_card("broken-model")
