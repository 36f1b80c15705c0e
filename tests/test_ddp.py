"""Multi-process training: torchrun + DDP on CPU (gloo), and exact sharded validation."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from affectkit.config import load_config
from affectkit.engine import dist, evaluation
from affectkit.engine.build import build_datasets, build_model, model_labels, open_splits
from affectkit.engine.evaluation import infer, score_predictions
from affectkit.engine.loop import epoch_order, read_metrics
from affectkit.models.checkpoint import _torch_load


class _Numbers(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": torch.full((1,), float(i)), "index": i}


class _Double(torch.nn.Module):
    def forward(self, x):
        return {"y": 2 * x[:, 0]}


def test_sharded_inference_counts_each_sample_once(monkeypatch):
    """13 samples over 2 ranks: 7 + 6, no padding, merged back in dataset order."""
    ds, model = _Numbers(13), _Double()
    collect = lambda out, batch: {"y": out["y"]}  # noqa: E731
    shards = []
    for rank in range(2):
        monkeypatch.setattr(dist, "current", lambda r=rank: dist.DistInfo(r, 2))
        monkeypatch.setattr(dist, "gather_objects", lambda obj: [obj])
        shards.append(infer(model, ds, collect, batch_size=4))
    assert [len(s["index"]) for s in shards] == [7, 6]
    monkeypatch.setattr(dist, "gather_objects", lambda obj: shards)
    merged = infer(model, ds, collect, batch_size=4)
    assert merged["index"].tolist() == list(range(13))
    assert np.array_equal(merged["y"], 2 * np.arange(13, dtype=np.float32))
    monkeypatch.undo()
    assert np.array_equal(infer(model, ds, collect, batch_size=5)["y"], merged["y"])


def test_rank_orders_partition_the_epoch():
    """The DistributedSampler orders: disjoint per rank, equal lengths, one process = all."""
    a, b = epoch_order(11, 0, 3, 0, 2), epoch_order(11, 0, 3, 1, 2)
    assert len(a) == len(b) == 5 and not set(a) & set(b)
    assert sorted(epoch_order(11, 0, 3)) == list(range(11))
    assert epoch_order(11, 0, 3) != epoch_order(11, 0, 4)


def test_init_distributed_needs_torchrun_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        dist.init_distributed()


def test_two_gloo_processes_validate_like_one(sample, tmp_path):
    """torchrun, 2 processes: the run's validation scores are those of one process
    evaluating the same weights on the whole validation set."""
    run = tmp_path / "ddp"
    overrides = [f"data.root={sample['root']}", f"run.out_dir={run}", "optim.epochs=2",
                 "optim.warmup_epochs=0", "optim.batch_size=4", "data.img_size=32",
                 "data.resize=34", "run.log_every=100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node=2", "-m", "affectkit.cli", "train", "demo", *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [0, 1] and rows[-1]["world_size"] == 2
    ckpt = _torch_load(run / "last.pt")
    assert len(ckpt["extra"]["rank_rng"]) == 2  # each rank resumes its own streams

    cfg = load_config("demo", overrides)
    train_table, val_table = open_splits(cfg)
    train_ds, val_ds = build_datasets(cfg, (train_table, val_table))
    # each rank took 4-image batches from its half: steps per epoch of the 2-process run
    assert rows[0]["step"] == len(train_ds) // 2 // 4
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    one = score_predictions(infer(model, val_ds, evaluation.collect_predictions,
                                  batch_size=4), labels=model_labels(cfg))
    for key in ("va", "ccc_valence", "ccc_arousal", "expr_f1", "au_f1", "p_mtl"):
        assert rows[-1]["val"][key] == pytest.approx(one[key], abs=1e-6), key


_STOPPABLE = """
import sys
from affectkit.config import load_config
from affectkit.engine.loop import SimulatedKill, train

stop = int(sys.argv[1])
try:
    train(load_config("demo", sys.argv[2:]), progress=False, checkpoint_every=1,
          stop_after_steps=stop if stop > 0 else None)
except SimulatedKill:
    sys.exit(3)
"""


def test_killed_two_process_run_resumes_bitwise(sample, tmp_path):
    """A 2-process run killed after 3 steps and started again ends with exactly the
    weights of an uninterrupted 2-process run (every rank's RNG comes back from last.pt)."""
    script = tmp_path / "stoppable.py"
    script.write_text(_STOPPABLE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(run, stop):
        overrides = [f"data.root={sample['root']}", f"run.out_dir={run}", "optim.epochs=2",
                     "optim.batch_size=4", "data.img_size=32", "data.resize=34"]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node=2", str(script), str(stop), *overrides]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)

    ref = torchrun(tmp_path / "ref", 0)
    assert ref.returncode == 0, ref.stderr[-4000:]
    killed = torchrun(tmp_path / "run", 3)
    assert killed.returncode != 0
    assert _torch_load(tmp_path / "run" / "last.pt")["state"]["step"] == 3
    resumed = torchrun(tmp_path / "run", 0)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    a = _torch_load(tmp_path / "ref" / "last.pt")["model"]
    b = _torch_load(tmp_path / "run" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [0, 1]
