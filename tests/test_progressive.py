"""Progressive learning's stage-2 pieces: windows over videos (gaps, padding, overlap) and
the joint model (fusion variants, temporal modules, padding never counted, loss weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectkit.data.table import FaceTable, make_table_frame
from affectkit.data.windows import PAD, average_windows, make_windows, window_starts
from affectkit.labels import EXPR_INVALID
from affectkit.models.progressive import FUSIONS, TEMPORALS, JointModel, frame_encoding
from affectkit.tasks import MTLTask


def _table(frames_by_video: dict[str, list[int]]) -> FaceTable:
    images = [f"{v}/{f:05d}.jpg" for v, fs in frames_by_video.items() for f in fs]
    return FaceTable(make_table_frame(images), None)


def test_windows_never_cross_a_gap_and_cover_every_frame():
    frames = [1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 30, 31]  # gaps of 3 and 18 frames
    t = _table({"vid": frames, "other": list(range(1, 9))})
    for max_gap, length in ((1, 4), (3, 4), (1, 1), (5, 30)):
        w = make_windows(t, length, max_gap=max_gap)
        assert w.rows.shape[1] == length
        for rows, fr in zip(w.rows, w.frames):
            real = fr[fr != PAD]
            assert (np.diff(real) <= max_gap).all() and (np.diff(real) > 0).all()
            assert (rows[: len(real)] >= 0).all() and (rows[len(real):] == PAD).all()
        covered = set(w.rows[w.valid].tolist())
        assert covered == set(range(len(t)))  # every frame in some window
        assert {v for v in w.videos} == {"vid", "other"}
    w = make_windows(t, 4, max_gap=1)
    # segments 1-7 (the last window moved back: overlap, no padding), 10-12 and 30-31
    # (shorter than the window: padded at the end)
    vid = [f for f, v in zip(w.frames.tolist(), w.videos) if v == "vid"]
    assert vid == [[1, 2, 3, 4], [4, 5, 6, 7], [10, 11, 12, PAD], [30, 31, PAD, PAD]]
    with pytest.raises(ValueError, match="max_gap"):
        make_windows(t, 4, max_gap=0)


def test_window_starts_and_overlap_averaging():
    assert window_starts(10, 4, 4) == [0, 4, 6]
    assert window_starts(3, 4, 4) == [0]
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    t = _table({"v": list(range(1, 11))})
    w = make_windows(t, 4, stride=2)
    values = np.zeros((len(w), 4, 1))
    values[w.valid] = w.rows[w.valid, None] * 10.0  # each position says its row x 10
    avg = average_windows(w, values, len(t))
    assert np.allclose(avg[:, 0], np.arange(10) * 10.0)


def test_frame_encoding_counts_real_frames():
    enc = frame_encoding(torch.tensor([[5, 6, 10]]), 8)
    ref = frame_encoding(torch.tensor([[0, 1, 5]]), 8)
    assert torch.allclose(enc, ref)  # relative to the window start
    assert not torch.allclose(enc[0, 2], frame_encoding(torch.tensor([[5, 6, 7]]), 8)[0, 2])


@pytest.mark.parametrize("temporal", TEMPORALS)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_padding_never_changes_a_real_frames_output(temporal, fusion):
    torch.manual_seed(0)
    model = JointModel([16, 24, 16], hidden=32, fusion=fusion, temporal=temporal,
                       layers=2, heads=4).eval()
    n, pad = 5, 3
    feats = [torch.randn(1, n, d) for d in (16, 24, 16)]
    frames = torch.arange(1, n + 1).view(1, n)
    out = model(feats, frames, torch.ones(1, n, dtype=torch.bool))
    padded = [torch.cat([f, torch.randn(1, pad, f.shape[-1]) * 100], 1) for f in feats]
    pframes = torch.cat([frames, torch.full((1, pad), PAD)], 1)
    valid = torch.cat([torch.ones(1, n), torch.zeros(1, pad)], 1).bool()
    pout = model(padded, pframes, valid)
    for k in out:
        torch.testing.assert_close(pout[k][:, :n], out[k], atol=1e-5, rtol=1e-5)


def _flat(out: dict) -> dict:
    return {k: v.flatten(0, 1) for k, v in out.items()}


def test_padded_labels_score_nothing_and_zero_weights_give_zero_gradients():
    torch.manual_seed(0)
    model = JointModel([8], hidden=16, temporal="gru")
    feats, frames = [torch.randn(2, 4, 8)], torch.arange(4).repeat(2, 1)
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    batch = {"au": torch.randint(0, 2, (2, 4, 12)), "expression": torch.randint(0, 7, (2, 4)),
             "va": torch.rand(2, 4, 2) * 2 - 1}
    # padding carries the sentinels of unlabelled rows
    batch["au"][~valid] = -1
    batch["expression"][~valid] = EXPR_INVALID
    batch["va"][~valid] = -5.0
    out = model(feats, frames, valid)
    task = MTLTask(au_weight=1.0, expr_weight=0.0, va_weight=1.0)
    flat = {k: v.flatten(0, 1) for k, v in batch.items()}
    losses = task(_flat(out), flat)
    keep = valid.flatten()
    ref = task({k: v[keep] for k, v in _flat(out).items()}, {k: v[keep] for k, v in flat.items()})
    for k in ("au_loss", "expr_loss", "va_loss", "loss"):
        torch.testing.assert_close(losses[k], ref[k])
    losses["loss"].backward()
    assert model.expr_head.weight.grad is None or not model.expr_head.weight.grad.any()
    assert model.au_head.weight.grad.abs().sum() > 0 and model.va_head.weight.grad.any()


# ----------------------------------------------------------------------------- feature store


@pytest.fixture
def tiny_run(sample, tmp_path):
    from affectkit.config import load_config
    from affectkit.engine.build import build_model
    from affectkit.engine.inference import LoadedRun

    cfg = load_config("demo-cnn", [f"data.root={sample['root']}", "model.backbone=face_vgg_s",
                                   "data.img_size=32", "data.resize=32"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return LoadedRun(cfg, model, tmp_path / "best.pt", 0, torch.device("cpu"))


def test_feature_store_round_trip_and_stale_detection(sample, tiny_run, tmp_path):
    from affectkit.data.discover import open_dataset
    from affectkit.engine.features import (
        StaleStore,
        ensure_features,
        extract_features,
        open_store,
    )

    table = open_dataset(sample["root"], "per-video")["per-video/train"]
    table = table.subset(np.arange(min(40, len(table))))
    folder = tmp_path / "store"
    store = extract_features(tiny_run, table, folder, batch_size=16)
    assert not (tmp_path / "store.tmp").exists() and store.dim == 256
    rows = store.rows_for(table)
    from affectkit.data.augment import transforms_for
    from affectkit.data.dataset import FaceDataset

    ds = FaceDataset(table, transforms_for(tiny_run.cfg.data)[1])
    with torch.no_grad():
        ref = tiny_run.model.backbone(torch.stack([ds[i]["image"] for i in range(5)]))
    torch.testing.assert_close(store.read(rows[:5]), ref, atol=2e-2, rtol=1e-2)  # fp16
    w = make_windows(table, 4)
    got = store.read(np.where(w.valid, rows[np.maximum(w.rows, 0)], PAD))
    assert got.shape == (len(w), 4, 256) and (got[torch.from_numpy(~w.valid)] == 0).all()
    # the same model: reused; another checkpoint of it: stale, rebuilt
    assert ensure_features(tiny_run, table, folder)[1] is False
    with torch.no_grad():
        tiny_run.model.expr_head.bias.add_(1.0)
    with pytest.raises(StaleStore, match="another model"):
        open_store(folder, tiny_run)
    assert ensure_features(tiny_run, table, folder, batch_size=16)[1] is True
    assert ensure_features(tiny_run, table, folder)[1] is False
    # frames the store lacks
    bigger = open_dataset(sample["root"], "per-video")["per-video/train"]
    with pytest.raises(StaleStore, match="not in the store"):
        open_store(folder).rows_for(bigger)


# ----------------------------------------------------------------------------- temporal sample


def test_temporal_sample_has_smooth_labels_gaps_and_reads_per_video(tmp_path, shared_data):
    from affectkit.cli import main
    from affectkit.data.discover import open_dataset
    from affectkit.data.sample import read_va_trace

    trace_csv = shared_data / "affwild2_va_sample" / "sample_labelfile_132-30-426x240.csv"
    trace = read_va_trace(trace_csv)
    assert trace.shape == (992, 2)
    root = tmp_path / "temporal"
    assert main(["data", "sample", str(root), "--temporal", "--videos", "3", "--frames", "90",
                 "--va-trace", str(trace_csv)]) == 0
    tables = open_dataset(root, "per-video")
    train, val = tables["per-video/train"], tables["per-video/val"]
    assert len(train.videos()) == 2 and len(val.videos()) == 1
    for t in (train, val):
        for _, rows in t.videos().items():
            frames = t.df.frame.to_numpy()[rows]
            assert (np.diff(frames) > 1).any()  # missing crops leave gaps
            va = t.va[rows]
            assert np.abs(np.diff(va, axis=0)).max() < 0.3  # the real trace: smooth
            expr = t.expression[rows]
            runs = np.diff(np.flatnonzero(np.diff(expr)))
            assert len(runs) == 0 or runs.min() >= 30  # segments of seconds, not frames
    # the VA values are the real trace's, in frame order (a stretch of it, looped)
    rows = next(iter(train.videos().values()))
    frames, va = train.df.frame.to_numpy()[rows], train.va[rows]
    fits = [s for s in range(len(trace))
            if np.abs(trace[(s + frames - 1) % len(trace)] - va).max() < 2e-3]
    assert fits
    assert main(["data", "sample", str(tmp_path / "bad"), "--temporal", "--va-trace",
                 str(tmp_path / "nope.csv")]) == 2


# ----------------------------------------------------------------------------- stage 2


@pytest.fixture(scope="module")
def temporal(tmp_path_factory):
    """A small temporal sample (12 videos of ~100-130 frames) and one stage-1 task model
    trained on it (a small CNN, all three tasks, 8 epochs): what stage 2 reads."""
    from affectkit.config import load_config
    from affectkit.data.sample import write_temporal_sample
    from affectkit.engine.loop import train

    root = tmp_path_factory.mktemp("temporal")
    write_temporal_sample(root / "data", videos=12, frames=100, seed=1)
    cfg = load_config("progressive-demo-stage1", [
        f"data.root={root / 'data'}", "loss.au_weight=1", "loss.va_weight=1",
        "loss.au_pos_weight=true", "run.select_by=score", "optim.epochs=8",
        "optim.batch_size=32", "optim.base_lr=8e-3", f"run.out_dir={root / 'stage1'}",
        "run.log_every=1000"])
    train(cfg, progress=False)
    return {"data": root / "data", "stage1": root / "stage1", "root": root}


def _stage2(temporal, out, *overrides, epochs=10):
    from affectkit.config import load_config

    return load_config("progressive-demo", [
        f"data.root={temporal['data']}", f"progressive.task_models=[{temporal['stage1']}]",
        f"progressive.features={temporal['root'] / 'features'}", f"run.out_dir={out}",
        "progressive.hidden=64", f"optim.epochs={epochs}", "run.log_every=1000", *overrides])


def test_temporal_model_beats_a_per_frame_model(temporal, tmp_path):
    """The sample's labels are smooth in time and each frame is drawn from noisy ones with
    random colours: a window of 16 frames (TCN) must beat one frame (window 1, no temporal
    model) by a clear margin in P, same epochs, same frames per step (64), same lr."""
    from affectkit.engine.loop import read_metrics, train

    scores = {}
    for name, ov in {
        "frame": ["progressive.window=1", "progressive.temporal=none",
                  "optim.batch_size=64", "optim.base_lr=8e-3"],
        "temporal": ["progressive.window=16", "progressive.temporal=tcn",
                     "optim.batch_size=4", "optim.base_lr=0.128"],
    }.items():
        run = train(_stage2(temporal, tmp_path / name, *ov, epochs=30), progress=False)
        scores[name] = max(r["val"]["score"] for r in read_metrics(run))
    print("temporal vs per-frame P:", scores)
    assert scores["temporal"] > scores["frame"] + 0.1, scores


def test_stage2_store_reused_padding_not_counted_smoothing_saved_and_predict(temporal,
                                                                             tmp_path):
    from affectkit.engine.inference import load_run, open_table, predict_table
    from affectkit.engine.loop import read_metrics, train
    from affectkit.engine.progressive import (
        frame_predictions,
        frame_scores,
        read_smoothing,
    )
    from affectkit.labels import ABAW_EXPR

    cfg = _stage2(temporal, tmp_path / "joint", "progressive.smoothing=box", epochs=2)
    run_dir = train(cfg, progress=False)
    rows = read_metrics(run_dir)
    assert {"smooth_va", "smooth_expr", "smooth_au", "p_smoothed"} <= set(rows[-1]["val"])
    saved = load_run(run_dir)
    assert saved.cfg.progressive.feature_dims == (256,)  # fixed in the saved config
    widths = read_smoothing(saved)
    assert widths is not None and set(widths["widths"]) == {"au", "expr", "va"}
    # the stores were extracted once (train + val) and are reused by a second run
    stores = sorted((temporal["root"] / "features").rglob("meta.json"))
    stamps = [p.stat().st_mtime_ns for p in stores]
    train(_stage2(temporal, tmp_path / "again", epochs=1), progress=False)
    assert [p.stat().st_mtime_ns for p in stores] == stamps and len(stores) == 2
    # whole-video prediction = what validation scored: unsmoothed, the same score
    val = open_table(saved.cfg, None, split="val").table
    arrays, _ = predict_table(saved, val)
    assert set(arrays) >= {"va", "expr_probs", "au_probs", "index"}
    from affectkit.engine.progressive import predict_table as predict_windows

    raw = predict_windows(saved, val, smoothing=False)
    best = max(rows, key=lambda r: r["val"]["score"])
    got = frame_scores({k: raw[k] for k in ("va", "expr_probs", "au_probs")}, val, ABAW_EXPR)
    assert got["score"] == pytest.approx(best["val"]["score"], abs=1e-4)
    # padding: windows of 120 over segments shorter than that hold padding; outputs at the
    # padding are garbage here and must not change any score
    w = make_windows(val, 120, 60, max_gap=1)
    assert (~w.valid).any()
    per_row = {k: raw[k] for k in ("va", "expr_probs", "au_probs")}
    arrays = {k: np.where(w.valid[(...,) + (None,) * (v.ndim - 1)],
                          v[np.maximum(w.rows, 0)], 7.0) for k, v in per_row.items()}
    again = frame_predictions(arrays, w, len(val))
    for k, v in per_row.items():
        np.testing.assert_allclose(again[k], v, atol=1e-6)
    # a per-video test list: one VA / EXPR / AU file per video, every frame with a crop
    from affectkit.engine.commands import predict_run

    videos = sorted(set(val.df["video"]))
    listing = tmp_path / "test_videos.txt"
    listing.write_text("\n".join(videos) + "\n")
    written = predict_run(run_dir, tmp_path / "sub", data=listing,
                          images=temporal["data"] / "cropped_aligned")
    assert written["rows"] == len(val) and "per-video" in written["format"]
    va_file = next((tmp_path / "sub").rglob(f"{videos[0]}.txt"))
    assert len(va_file.read_text().splitlines()) >= 2


def test_stage2_end_to_end_fine_tunes_the_task_backbone(temporal, tmp_path):
    import torch

    from affectkit.engine.inference import load_run
    from affectkit.engine.loop import train

    cfg = _stage2(temporal, tmp_path / "e2e", "progressive.end_to_end=true",
                  "progressive.window=4", "optim.batch_size=4", epochs=1)
    run_dir = train(cfg, progress=False, max_steps=3)
    e2e = load_run(run_dir)
    stage1 = load_run(temporal["stage1"])
    tuned = e2e.model.backbones[0].state_dict()
    before = stage1.model.backbone.state_dict()
    assert set(tuned) == set(before)
    assert any(not torch.equal(tuned[k], before[k]) for k in before)  # it trained


def test_search_runs_a_grid_ranks_it_and_resumes_after_a_kill(temporal, tmp_path,
                                                             monkeypatch):
    import yaml

    from affectkit.engine import search
    from affectkit.engine.loop import SimulatedKill
    from affectkit.engine.loop import train as real_train

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "recipe": "progressive-demo",
        "overrides": [f"data.root={temporal['data']}",
                      f"progressive.task_models=[{temporal['stage1']}]",
                      f"progressive.features={temporal['root'] / 'features'}",
                      "progressive.hidden=32", "optim.epochs=2", "run.log_every=2"],
        "out": str(tmp_path / "search"),
        "grid": {"progressive.temporal": ["none", "gru"]},
        "points": [{"progressive.window": 4}, {"progressive.window": 4,
                                               "model.heads": ["au", "va"],
                                               "run.select_by": "au_f1"}]}))
    calls = []

    def killing_train(cfg, run_dir, **kw):  # the third point is killed after 2 steps
        calls.append(run_dir)
        if len(calls) == 3:
            return real_train(cfg, run_dir, stop_after_steps=2, progress=False, **kw)
        return real_train(cfg, run_dir, progress=False, **kw)

    monkeypatch.setattr(search, "train", killing_train)
    with pytest.raises(SimulatedKill):
        search.run_search(spec, note=lambda m: None)
    assert len(calls) == 3 and (calls[2] / "last.pt").is_file()
    calls.clear()
    monkeypatch.setattr(search, "train", lambda cfg, run_dir, **kw: calls.append(run_dir)
                        or real_train(cfg, run_dir, progress=False, **kw))
    result = search.run_search(spec, note=lambda m: None)
    assert len(result["points"]) == 4 and len(calls) == 2  # 2 finished points reused
    table = result["results"]
    assert table["p"].notna().sum() == 2  # P only where all three tasks are predicted
    md = result["paths"]["md"].read_text()
    assert "Ranked by P" in md and "Ranked by AU" in md
    best = yaml.safe_load(result["paths"]["best-au"].read_text())
    assert best["base"] == "progressive-demo" and best["progressive"]["window"] == 4


def test_search_spec_errors_name_the_file_and_key(tmp_path):
    from affectkit.config import ConfigError
    from affectkit.engine.search import run_search

    spec = tmp_path / "bad.yaml"
    spec.write_text("recipe: progressive-demo\ngrid:\n  progressive.windw: [1, 2]\n"
                    "colour: red\n")
    with pytest.raises(ConfigError) as e:
        run_search(spec, note=lambda m: None)
    text = "\n".join(e.value.problems)
    assert "bad.yaml" in text and "colour" in text
    spec.write_text("recipe: progressive-demo\ngrid:\n  progressive.windw: [1, 2]\n")
    with pytest.raises(ConfigError, match="windw"):
        run_search(spec, note=lambda m: None)
    spec.write_text("recipe: progressive-demo\ngrid:\n  progressive.window: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml, line 4, column 1: invalid YAML"):
        run_search(spec, note=lambda m: None)


def test_smoothing_within_segments_only():
    from affectkit.smoothing import smooth_per_video, smooth_sequence

    x = np.array([0.0, 0, 0, 10, 0, 0, 0])
    assert smooth_sequence(x, 3, "median").tolist() == [0] * 7  # an outlier removed
    np.testing.assert_allclose(smooth_sequence(x, 3, "box")[2:5], [10 / 3] * 3)
    g = smooth_sequence(x, 5, "gaussian")
    assert g[3] < 10 and g[3] > g[2] > g[1] and g.sum() == pytest.approx(10.0)
    with pytest.raises(ValueError, match="odd"):
        smooth_sequence(x, 4, "box")
    # two segments of one video (a gap of 20 frames) and another video: never mixed
    t = _table({"a": [1, 2, 3, 24, 25, 26], "b": [1, 2, 3]})
    values = np.array([0, 0, 0, 9, 9, 9, 5, 5, 5], np.float64)
    out = smooth_per_video(values, t, 5, "box", max_gap=10)
    np.testing.assert_allclose(out, values)


def test_features_and_search_commands(temporal, tmp_path, capsys):
    import yaml

    from affectkit.cli import main

    out = tmp_path / "store"
    args = ["features", str(temporal["stage1"]), "--data", str(temporal["data"]),
            "--split", "val", "--out", str(out)]
    assert main(args) == 0
    assert "extracted" in capsys.readouterr().out
    assert main(args) == 0
    assert "reused" in capsys.readouterr().out  # same model, same frames
    assert main(["features", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no such run folder" in capsys.readouterr().err
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"recipe": "progressive-demo",
                                    "grid": {"progressive.window": [1, 8]}}))
    assert main(["search", str(spec), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "2 points" in err and "progressive.window=8" in err
