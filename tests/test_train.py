"""The training loop and `affectkit train` / `affectkit recipes` on the synthetic sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from affectkit.cli import main
from affectkit.config import load_config
from affectkit.engine.build import build_datasets, build_model, build_task, open_splits
from affectkit.engine.loop import SimulatedKill, epoch_order, read_metrics, train
from affectkit.models.checkpoint import _torch_load
from affectkit.models.mtl import MultiTaskBaseline
from affectkit.tasks import MTLTask


def _cfg(root: Path, out: Path, *extra: str):
    return load_config("demo", [f"data.root={root}", f"run.out_dir={out}", "optim.epochs=2",
                                "optim.batch_size=4", "data.img_size=32", "data.resize=34",
                                "run.log_every=2", *extra])


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return _torch_load(run_dir / "last.pt")["model"]


def test_build_pieces(sample):
    cfg = _cfg(sample["root"], sample["root"] / "unused", "loss.au_pos_weight=true")
    train_table, val_table = open_splits(cfg)
    train_ds, val_ds = build_datasets(cfg, (train_table, val_table))
    assert len(train_ds) == len(train_table) > 0 and len(val_ds) > 0
    assert train_ds[0]["image"].shape == (3, 32, 32)
    assert isinstance(build_model(cfg), MultiTaskBaseline)  # the demo is a Table 1 baseline
    task = build_task(cfg, train_table)
    assert isinstance(task, MTLTask) and task.au_pos_weight.shape == (12,)


def test_unknown_split_names_available(sample):
    from affectkit.data.errors import DataError

    cfg = _cfg(sample["root"], sample["root"] / "unused", "data.val_split=valid")
    with pytest.raises(DataError, match=r"valid.*mtl/val"):
        open_splits(cfg)


def test_epoch_order_is_seeded_per_epoch():
    assert epoch_order(10, 0, 1) == epoch_order(10, 0, 1)
    assert epoch_order(10, 0, 1) != epoch_order(10, 0, 2)
    assert sorted(epoch_order(10, 3, 0)) == list(range(10))


def test_kill_and_resume_is_bitwise_identical(sample, tmp_path):
    # 21 train images, batch 4: 5 steps per epoch, 10 in all; last.pt every 2 steps
    ref = train(_cfg(sample["root"], tmp_path / "ref"), progress=False)

    run = tmp_path / "killed"
    cfg = _cfg(sample["root"], run)
    with pytest.raises(SimulatedKill):  # killed at step 3: last.pt is from step 2, mid-epoch
        train(cfg, stop_after_steps=3, progress=False)
    state = _torch_load(run / "last.pt")["state"]
    assert (state["epoch"], state["step"], state["micro_step"]) == (0, 2, 2)
    with pytest.raises(SimulatedKill):  # resumed, killed again in epoch 1 (saved at step 6)
        train(cfg, stop_after_steps=5, progress=False)
    state = _torch_load(run / "last.pt")["state"]
    assert (state["epoch"], state["step"], state["micro_step"]) == (1, 6, 1)
    assert [r["epoch"] for r in read_metrics(run)] == [0]
    train(cfg, progress=False)  # to the end

    a, b = _weights(ref), _weights(run)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _torch_load(run / "last.pt")["state"]["step"] == 10
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert [r["val"]["p_mtl"] for r in rows] == [r["val"]["p_mtl"] for r in read_metrics(ref)]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert "git_sha" in saved and saved["optim"]["batch_size"] == 4
    assert (run / "best.pt").is_file()


def test_two_epoch_demo_run(sample, tmp_path):
    run = train(_cfg(sample["root"], tmp_path / "run", "optim.accum_steps=2"), progress=False)
    rows = read_metrics(run)
    assert len(rows) == 2
    for r in rows:
        assert all(math.isfinite(v) for v in r["train"].values())
        assert math.isfinite(r["val"]["p_mtl"])
        assert r["img_per_s"] > 0
    assert rows[-1]["step"] == 4  # 5 batches of 4 -> 2 optimiser steps of 2 per epoch
    best = _torch_load(run / "best.pt")
    assert best["metrics"]["p_mtl"] == max(r["val"]["p_mtl"] for r in rows)


def test_cli_recipes(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("demo ") for line in out.splitlines())


def test_cli_train_dry_run(sample, tmp_path, capsys):
    code = main(["train", "demo", "--dry-run", f"data.root={sample['root']}",
                 f"run.out_dir={tmp_path / 'run'}"])
    assert code == 0
    out = capsys.readouterr().out
    cfg = yaml.safe_load(out)
    assert cfg["data"]["root"] == str(sample["root"]) and cfg["recipe"] == "demo"
    assert not (tmp_path / "run").exists()  # nothing trained
    # flags after the overrides work too
    assert main(["train", "demo", f"data.root={sample['root']}", "--dry-run"]) == 0


def test_cli_train_errors(sample, tmp_path, capsys):
    assert main(["train", "demo", f"data.root={sample['root']}", "optim.base_lrr=1",
                 "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "optim.base_lrr" in err and "optim.base_lr" in err
    missing = tmp_path / "nowhere"
    assert main(["train", "demo", f"data.root={missing}", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "data.root" in err and str(missing) in err
    assert main(["train", "demo", f"data.root={sample['root']}", "data.train_split=nope",
                 "--dry-run"]) == 2
    assert "available splits" in capsys.readouterr().err


def test_cli_train_runs(sample, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "demo", f"data.root={sample['root']}", f"run.out_dir={run}",
                 "optim.epochs=1", "optim.warmup_epochs=0", "data.img_size=32",
                 "data.resize=34"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and "p_mtl" in rows[0]["val"]


def _hook_task(monkeypatch, hook):
    """Make ``build_task`` return the real task with ``hook(n, losses)`` run on each call's
    losses (``n`` counts the calls from 1); ``hook`` may raise."""
    import affectkit.engine.build as build

    real_build_task = build.build_task
    calls = {"n": 0}

    def hooked(cfg, table):
        task = real_build_task(cfg, table)

        def call(outputs, batch):
            calls["n"] += 1
            return hook(calls["n"], lambda: task(outputs, batch))
        return call

    monkeypatch.setattr(build, "build_task", hooked)
    return lambda: monkeypatch.setattr(build, "build_task", real_build_task)


def test_ctrl_c_saves_and_resumes_exactly(sample, tmp_path, monkeypatch):
    """A KeyboardInterrupt in the middle of a batch saves last.pt at the last optimiser
    step (not a torn one), and resuming from it matches an uninterrupted run."""
    no_periodic = "run.log_every=100"
    ref = train(_cfg(sample["root"], tmp_path / "ref", no_periodic), progress=False)
    run = tmp_path / "run"

    def interrupt(n, losses):
        if n == 7:  # forward of the 7th batch: epoch 1, after step 6
            raise KeyboardInterrupt
        return losses()

    unhook = _hook_task(monkeypatch, interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(sample["root"], run, no_periodic), progress=False)
    state = _torch_load(run / "last.pt")["state"]
    assert (state["epoch"], state["step"], state["micro_step"]) == (1, 6, 1)
    unhook()
    train(_cfg(sample["root"], run, no_periodic), progress=False)
    a, b = _weights(ref), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in read_metrics(run)] == [0, 1]


def test_packed_folder_is_used_per_split(sample, tmp_path):
    from affectkit.data.dataset import pack_images

    cfg = _cfg(sample["root"], tmp_path / "run", f"data.packed={tmp_path / 'packs'}")
    train_table, val_table = open_splits(cfg)
    pack_images(train_table, tmp_path / "packs" / "mtl_train.npy", size=112)
    train_ds, val_ds = build_datasets(cfg, (train_table, val_table))
    assert train_ds.packed is not None and val_ds.packed is None  # val: no pack -> JPEGs
    assert train_ds[0]["image"].shape == val_ds[0]["image"].shape == (3, 32, 32)


def test_resume_refuses_another_config(sample, tmp_path):
    from affectkit.config import ConfigError

    run = tmp_path / "run"
    with pytest.raises(SimulatedKill):
        train(_cfg(sample["root"], run), stop_after_steps=2, progress=False)
    with pytest.raises(ConfigError, match=r"optim\.base_lr"):
        train(_cfg(sample["root"], run, "optim.base_lr=0.001"), progress=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["base_lr"] == 1.6e-2
    # a fresh start in the same folder is allowed, and restarts the metrics
    train(_cfg(sample["root"], run, "optim.base_lr=0.001", "optim.epochs=1"), resume=False,
          progress=False)
    assert [r["epoch"] for r in read_metrics(run)] == [0]


def test_interrupt_during_last_validation_still_logs_it(sample, tmp_path, monkeypatch):
    import affectkit.engine.loop as loop

    run = tmp_path / "run"
    cfg = _cfg(sample["root"], run, "optim.epochs=1", "optim.warmup_epochs=0")
    real_infer = loop.infer

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "infer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    state = _torch_load(run / "last.pt")["state"]
    assert (state["epoch"], state["step"], state["micro_step"]) == (0, 5, 5)
    monkeypatch.setattr(loop, "infer", real_infer)
    train(cfg, progress=False)
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [0] and "p_mtl" in rows[0]["val"]
    assert rows[0]["train"]["loss"] > 0


def test_max_steps_stops_mid_epoch(sample, tmp_path):
    run = train(_cfg(sample["root"], tmp_path / "run"), max_steps=3, progress=False)
    state = _torch_load(run / "last.pt")["state"]
    assert (state["epoch"], state["step"], state["micro_step"]) == (0, 3, 3)


def test_demo_cnn_learns_the_synthetic_faces(tmp_path):
    """The quick start's recipe must visibly learn: validation P_MTL of the last epoch well
    above the first (measured 0.39 -> 0.86 with seed 0 on 2 CPU cores, about 45 s)."""
    from affectkit.data.sample import write_sample

    root = tmp_path / "sample"
    write_sample(root, frames_per_video=150, seed=0)
    cfg = load_config("demo-cnn", [f"data.root={root}", f"run.out_dir={tmp_path / 'run'}"])
    run = train(cfg, resume=False, progress=False)
    scores = [m["val"]["p_mtl"] for m in read_metrics(run)]
    assert len(scores) == cfg.optim.epochs
    assert scores[-1] > scores[0] + 0.2, scores
    assert max(scores) > 0.6, scores


def test_resume_accepts_keys_added_to_the_schema_at_their_default(sample, tmp_path):
    """A last.pt written before a config key existed resumes when the key is at its default."""
    run = tmp_path / "run"
    with pytest.raises(SimulatedKill):
        train(_cfg(sample["root"], run), stop_after_steps=2, progress=False)
    ckpt = _torch_load(run / "last.pt")
    del ckpt["config"]["data"]["corrupt"], ckpt["config"]["mae"]
    torch.save(ckpt, run / "last.pt")
    train(_cfg(sample["root"], run), progress=False)
    assert [r["epoch"] for r in read_metrics(run)] == [0, 1]


def test_cli_run_dir_after_the_overrides(sample, tmp_path, capsys):
    run = tmp_path / "elsewhere"
    assert main(["train", "demo", f"data.root={sample['root']}", "optim.epochs=1",
                 "optim.warmup_epochs=0", "data.img_size=32", "data.resize=34",
                 "--run-dir", str(run)]) == 0
    assert (run / "last.pt").is_file()


def test_batch_augment_on_the_device_trains_and_resumes_exactly(sample, tmp_path):
    """data.augment=batch: the DataLoader hands uint8 faces to BatchAugment on the training
    device; the run is still exactly resumable, and differs from per-sample augmentation."""
    from affectkit.engine.build import build_job

    cfg = _cfg(sample["root"], tmp_path / "ref", "data.augment=batch")
    job = build_job(cfg, device="cpu")
    assert job.augment is not None and job.train_ds[0]["image"].dtype == torch.uint8
    assert build_job(_cfg(sample["root"], tmp_path / "x"), device="cpu").augment is None  # auto
    ref = train(cfg, progress=False)
    run = tmp_path / "killed"
    with pytest.raises(SimulatedKill):
        train(_cfg(sample["root"], run, "data.augment=batch"), stop_after_steps=3,
              progress=False)
    train(_cfg(sample["root"], run, "data.augment=batch"), progress=False)
    a, b = _weights(ref), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    per_sample = _weights(train(_cfg(sample["root"], tmp_path / "sample"), progress=False))
    assert not all(torch.equal(a[k], per_sample[k]) for k in a)
    for r in read_metrics(ref):
        assert 0.0 <= r["data_wait"] <= 1.0


def test_batch_of_mixed_image_sizes_is_an_error_naming_them(tmp_path):
    from PIL import Image

    from affectkit.data.dataset import FaceDataset, LoadResize
    from affectkit.data.errors import DataError
    from affectkit.data.folders import read_image_tree

    for name, size in (("a.png", 40), ("b.png", 40), ("odd.png", 56)):
        Image.new("RGB", (size, size), (90, 40, 20)).save(tmp_path / name)
    table = read_image_tree(tmp_path, val_fraction=0.0)["train"]
    ds = FaceDataset(table, LoadResize(None))
    with pytest.raises(DataError, match=r"odd\.png.*\(3, 56, 56\).*data\.load_size"):
        ds.collate([ds[i] for i in range(len(ds))])
    fixed = FaceDataset(table, LoadResize(48))
    assert fixed.collate([fixed[i] for i in range(len(fixed))])["image"].shape == (3, 3, 48, 48)


def test_non_finite_loss_stops_before_it_is_saved(sample, tmp_path, monkeypatch):
    """Losses are read from the device at log points only; a NaN loss still stops the run
    there, naming the steps, and last.pt keeps the last finite weights."""
    def nan_at_step_3(n, losses):
        out = losses()
        if n == 3:  # log_every 2: found at the flush of step 4
            out["loss"] = out["loss"] * float("nan")
        return out

    _hook_task(monkeypatch, nan_at_step_3)
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"steps 2\.\.4"):
        train(_cfg(sample["root"], run), progress=False)
    ckpt = _torch_load(run / "last.pt")
    assert ckpt["state"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
