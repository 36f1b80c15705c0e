"""Stage 2 of progressive learning (ABAW7 winner): the joint model trained on windows of
one video's frames over the stage-1 task models' features, and scored per frame exactly
as ``predict`` will predict.

- Features come from feature stores (``engine.features``), one per task model and split,
  built on first use and rebuilt when the task model changed; end to end
  (``progressive.end_to_end``), the task backbones read the face images instead and are
  fine-tuned with the joint model.
- Training windows tile each video segment (``data.windows``); validation and prediction
  use overlapping windows (``progressive.eval_stride``) whose outputs are averaged per
  frame, then optionally smoothed over time (``affectkit.smoothing``) with each task's
  width tuned on validation and kept per epoch in ``smoothing/epoch_XXX.json``.
- Scores are per frame, padding never counted: EXPR macro F1, AU mean F1 (0.5), VA mean
  CCC over the tasks the model has, and ``p`` = their sum (``p_mtl`` with all three).
"""

from __future__ import annotations

import json
import logging
import re
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import Config, ConfigError
from ..data.augment import transforms_for
from ..data.dataset import FaceDataset
from ..data.table import FaceTable
from ..data.windows import PAD, Windows, average_windows, make_windows
from ..io import atomic_write_json
from ..labels import AU_INVALID, EXPR_INVALID, VA_INVALID, LabelSet
from ..models.ensemble import member_probabilities
from ..smoothing import smooth_per_video, video_segments
from .evaluation import TASK_SCORE, task_scores  # smoothing is tuned for TASK_SCORE
from .features import FeatureStore, encode_frames, ensure_features, feature_extractor
from .job import Job

log = logging.getLogger(__name__)

PREDICTED = ("va", "expr_probs", "au_probs")
SMOOTHING_DIR = "smoothing"


# ----------------------------------------------------------------------------- task models


def task_model_paths(cfg: Config) -> list[Path]:
    return [Path(p).expanduser() for p in cfg.progressive.task_models]


def load_task_runs(cfg: Config, device=None) -> list:
    """The stage-1 runs (config + model, eval mode) named by ``progressive.task_models``."""
    from .inference import RunError, load_run

    runs = []
    for i, path in enumerate(task_model_paths(cfg)):
        try:
            runs.append(load_run(path, device))
        except RunError as e:
            raise ConfigError(f"progressive.task_models.{i}: {e}") from None
    return runs


def feature_width(run) -> int:
    """The width of a loaded run's per-frame features."""
    return int(feature_extractor(run.model).num_features)


def resolve(cfg: Config) -> Config:
    """``cfg`` with the task models as absolute paths and ``progressive.feature_dims`` read
    from them, as the run's config.yaml keeps them: the joint model is then built from
    the saved config alone."""
    import dataclasses

    from .inference import RunError, read_run

    p = cfg.progressive
    paths = tuple(str(x.resolve()) for x in task_model_paths(cfg))
    dims = p.feature_dims
    if dims is None:
        dims = []
        for i, path in enumerate(paths):
            try:
                files = read_run(path)
            except RunError as e:
                raise ConfigError(f"progressive.task_models.{i}: {e}") from None
            head = files.state.get("au_head.weight", files.state.get("expr_head.weight"))
            if head is None:
                from .inference import load_run

                dims.append(feature_width(load_run(files, "cpu")))
            else:
                dims.append(int(head.shape[1]))
        dims = tuple(dims)
    return dataclasses.replace(cfg, progressive=dataclasses.replace(
        p, task_models=paths, feature_dims=dims))


def store_folder(cfg: Config, task_path: Path, role: str) -> Path:
    """Where the store of one task model and split lives: ``<features>/<task run>/<split>``
    (default ``<task run>/features/<split>``; ``affectkit features RUN --out`` writes
    there too). A store of other frames or weights there is rebuilt, never reused."""
    task_path = Path(task_path)
    run_dir = task_path if task_path.is_dir() else task_path.parent
    root = (Path(cfg.progressive.features) / run_dir.name if cfg.progressive.features
            else run_dir / "features")
    split = cfg.data.train_split if role == "train" else cfg.data.val_split
    return root / re.sub(r"[^A-Za-z0-9_.-]+", "-", split)


def open_stores(cfg: Config, runs: list, table: FaceTable, role: str, batch_size: int = 128
                ) -> list[tuple[FeatureStore, np.ndarray]]:
    """One (store, store row of every table row) per task model: reused when current,
    extracted otherwise."""
    out = []
    for path, run in zip(task_model_paths(cfg), runs):
        folder = store_folder(cfg, path, role)
        store, rebuilt = ensure_features(run, table, folder, batch_size=batch_size)
        log.info("%s features of %s: %s (%s, %d x %d)", role, path, folder,
                 "extracted" if rebuilt else "reused", len(store.features), store.dim)
        out.append((store, store.rows_for(table)))
    return out


# ----------------------------------------------------------------------------- data


class WindowDataset(Dataset):
    """Items: one window of one video. ``features`` (L, sum of task widths) from the
    stores, or ``image`` (L, 3, H, W) through ``transform`` (end to end), ``frames`` (L,)
    and ``valid`` (L,) (False at padding), the per-frame labels ``va`` (L, 2),
    ``expression`` (L,), ``au`` (L, 12) with the unlabelled sentinels at padding,
    ``index``."""

    def __init__(self, table: FaceTable, windows: Windows,
                 stores: list[tuple[FeatureStore, np.ndarray]] | None = None,
                 transform=None):
        if (stores is None) == (transform is None):
            raise ValueError("a window dataset reads feature stores or images, one of them")
        self.table, self.windows, self.stores = table, windows, stores
        self.faces = FaceDataset(table, transform) if transform is not None else None
        self.va = table.va.astype(np.float32)
        self.expression = table.expression.astype(np.int64)
        self.au = table.au.astype(np.float32)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        rows = self.windows.rows[i]
        valid = rows != PAD
        r = np.where(valid, rows, 0)
        va, expr, au = self.va[r], self.expression[r], self.au[r]
        va[~valid], expr[~valid], au[~valid] = VA_INVALID, EXPR_INVALID, AU_INVALID
        item = {"frames": torch.from_numpy(self.windows.frames[i].copy()),
                "valid": torch.from_numpy(valid), "va": torch.from_numpy(va),
                "expression": torch.from_numpy(expr), "au": torch.from_numpy(au), "index": i}
        if self.stores is not None:
            item["features"] = torch.cat(
                [store.read(np.where(valid, srows[r], PAD)) for store, srows in self.stores], -1)
        else:
            faces = [self.faces[int(k)]["image"] for k in rows[valid]]
            image = torch.zeros(len(rows), *faces[0].shape, dtype=faces[0].dtype)
            image[torch.from_numpy(valid)] = torch.stack(faces)
            item["image"] = image
        return item


def window_forward(model, batch: dict) -> dict:
    """What the stage-2 model reads of a batch (``Job.forward``)."""
    inputs = batch["features"] if "features" in batch else batch["image"]
    return model(inputs, batch["frames"], batch["valid"])


def collect_windows(outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
    """Per window: ``va`` (L, 2), ``expr_probs`` (L, 8), ``au_probs`` (L, 12) as the model
    has them; the labels are the table's, per frame."""
    return {k: v.float() for k, v in member_probabilities(outputs).items()}


def frame_predictions(arrays: dict[str, np.ndarray], windows: Windows, n_rows: int
                      ) -> dict[str, np.ndarray]:
    """Per-window outputs -> one prediction per table row, overlapping windows averaged."""
    return {k: average_windows(windows, arrays[k], n_rows).astype(np.float32)
            for k in PREDICTED if k in arrays}


# ----------------------------------------------------------------------------- scores


def frame_scores(pred: dict[str, np.ndarray], table: FaceTable, labels: LabelSet,
                 au_thresholds=0.5) -> dict:
    """Per-frame scores of the tasks in ``pred``; ``p`` is their sum (AU F1 + EXPR F1 +
    mean CCC; ``p_mtl`` when all three are there) and ``score``."""
    scores = task_scores(pred, {"expr": table.expression, "au": table.au, "va": table.va},
                         labels, au_thresholds)
    if all(k in scores for k in TASK_SCORE.values()):
        scores["p_mtl"] = scores["p"]
    scores["score"] = scores["p"]
    return scores


_TASK_OF = {"au_probs": "au", "expr_probs": "expr", "va": "va"}


def tune_smoothing(pred: dict[str, np.ndarray], table: FaceTable, labels: LabelSet,
                   mode: str, widths, max_gap: int) -> tuple[dict[str, int], dict]:
    """Each task's smoothing width chosen on ``table`` (the smallest of the best), and the
    scores with every task smoothed at its width."""
    parts = video_segments(table, max_gap)
    chosen, smoothed = {}, {}
    for key, values in pred.items():
        task = _TASK_OF[key]
        best = None
        for w in sorted(set(widths)):
            candidate = smooth_per_video(values, table, w, mode, parts=parts)
            s = frame_scores({key: candidate}, table, labels)[TASK_SCORE[task]]
            if best is None or s > best[0] + 1e-12:
                best = (s, w, candidate)
        chosen[task] = best[1]
        smoothed[key] = best[2].astype(np.float32)
    return chosen, frame_scores(smoothed, table, labels)


def apply_smoothing(pred: dict[str, np.ndarray], table: FaceTable, mode: str,
                    widths: dict[str, int], max_gap: int) -> dict[str, np.ndarray]:
    parts = video_segments(table, max_gap)
    return {k: smooth_per_video(v, table, int(widths.get(_TASK_OF[k], 1)), mode,
                                parts=parts).astype(np.float32) if k in _TASK_OF else v
            for k, v in pred.items()}


def score_windows(arrays: dict[str, np.ndarray], *, windows: Windows, table: FaceTable,
                  labels: LabelSet, cfg: Config) -> dict:
    """Validation: window outputs -> per-frame predictions -> scores; with smoothing on,
    also each task's tuned width (``smooth_<task>``) and the smoothed scores
    (``<score>_smoothed``)."""
    p = cfg.progressive
    pred = frame_predictions(arrays, windows, len(table))
    scores = frame_scores(pred, table, labels)
    if p.smoothing != "none":
        widths, smoothed = tune_smoothing(pred, table, labels, p.smoothing,
                                          p.smoothing_widths, p.max_gap)
        scores.update({f"smooth_{t}": w for t, w in widths.items()})
        scores.update({f"{k}_smoothed": smoothed[k] for k in ("au_f1", "expr_f1", "va", "p")
                       if k in smoothed})
    return scores


def save_smoothing(model, run_dir: Path, epoch: int, scores: dict, *, mode: str) -> None:
    """``Job.on_epoch_end``: the widths tuned at this epoch, read by ``predict`` for the
    checkpoint of this epoch."""
    widths = {k.removeprefix("smooth_"): int(v) for k, v in scores.items()
              if k.startswith("smooth_")}
    atomic_write_json(Path(run_dir) / SMOOTHING_DIR / f"epoch_{epoch:03d}.json",
                      {"mode": mode, "epoch": epoch, "widths": widths,
                       "tuned_on": "validation", "scores_smoothed": {
                           k: v for k, v in scores.items() if k.endswith("_smoothed")}})


def read_smoothing(run) -> dict | None:
    """The widths tuned for the loaded checkpoint's epoch, None when there are none."""
    if run.epoch is None:
        return None
    path = run.run_dir / SMOOTHING_DIR / f"epoch_{run.epoch:03d}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: unreadable smoothing widths ({e})") from None


# ----------------------------------------------------------------------------- the job


def _end_to_end_transform(runs: list):
    """The evaluation transform the task backbones all share (end to end reads each face
    once for every backbone, so they must agree on size and normalisation)."""
    first = runs[0].cfg.data
    for i, r in enumerate(runs[1:], 1):
        d = r.cfg.data
        if (d.img_size, d.mean, d.std) != (first.img_size, first.mean, first.std):
            raise ConfigError(
                f"progressive.end_to_end: task model {i} reads {d.img_size} px faces "
                f"(mean {d.mean}, std {d.std}), task model 0 {first.img_size} px "
                f"(mean {first.mean}, std {first.std}): end to end they must agree")
    return transforms_for(first)[1]


def eval_stride(cfg: Config) -> int:
    p = cfg.progressive
    return p.eval_stride or max(1, p.window // 2)


def build_job(cfg: Config, tables: tuple[FaceTable, FaceTable], device=None) -> Job:
    from .build import build_model, build_task, model_labels

    p = cfg.progressive
    train_t, val_t = tables
    train_w = make_windows(train_t, p.window, p.stride or p.window, p.max_gap)
    val_w = make_windows(val_t, p.window, eval_stride(cfg), p.max_gap)
    if len(train_w) == 0:
        raise ConfigError(f"data.train_split: no frames to make windows of in {train_t.source}")
    runs = load_task_runs(cfg, device)
    if p.end_to_end:
        transform = _end_to_end_transform(runs)
        train_ds = WindowDataset(train_t, train_w, transform=transform)
        val_ds = WindowDataset(val_t, val_w, transform=transform) if len(val_w) else None
        model = build_model(cfg, load_weights=False)
        for backbone, run in zip(model.backbones, runs):
            backbone.load_state_dict(run.model.backbone.state_dict())
    else:
        train_ds = WindowDataset(train_t, train_w, stores=open_stores(cfg, runs, train_t, "train"))
        val_ds = (WindowDataset(val_t, val_w, stores=open_stores(cfg, runs, val_t, "val"))
                  if len(val_w) else None)
        model = build_model(cfg)
    del runs
    log.info("stage 2: %d training windows of %d frames (stride %d), %d validation windows "
             "(stride %d), max gap %d frames", len(train_w), p.window, p.stride or p.window,
             len(val_w), eval_stride(cfg), p.max_gap)
    labels = model_labels(cfg)
    return Job(model=model, task=build_task(cfg, train_t), train_ds=train_ds, val_ds=val_ds,
               collect=collect_windows,
               score=partial(score_windows, windows=val_w, table=val_t, labels=labels, cfg=cfg),
               forward=window_forward,
               on_epoch_end=(partial(save_smoothing, mode=p.smoothing)
                             if p.smoothing != "none" else None))


# ----------------------------------------------------------------------------- prediction


@torch.no_grad()
def predict_table(run, table: FaceTable, *, batch_size: int = 128, num_workers: int = 0,
                  progress: bool = False, smoothing: bool = True) -> dict[str, np.ndarray]:
    """Whole videos, one at a time (memory bounded by the longest video): every frame's
    features (task models, or the fine-tuned backbones end to end), overlapping windows
    through the joint model, averaged per frame, smoothed with the widths tuned for this
    checkpoint. Arrays in table order, with the labels and ``index``."""
    cfg, model = run.cfg, run.model
    p = cfg.progressive
    if p.end_to_end:  # the fine-tuned backbones, on the faces as the task models read them
        from .inference import read_run

        transform = _end_to_end_transform([read_run(x) for x in task_model_paths(cfg)])
        encoders = [(b, transform) for b in model.backbones]
    else:
        encoders = [(feature_extractor(r.model), transforms_for(r.cfg.data)[1])
                    for r in load_task_runs(cfg, run.device)]
    widths = None
    if smoothing and p.smoothing != "none":
        saved = read_smoothing(run)
        if saved is None:
            log.warning("%s: no smoothing widths tuned for epoch %s: not smoothed",
                        run.run_dir, run.epoch)
        else:
            widths = saved["widths"]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(table), unit="frame", desc="predict", disable=None)
    out: dict[str, np.ndarray] = {}
    try:
        for rows in table.videos().values():
            video = table.subset(rows)
            feats = np.concatenate([np.concatenate(list(encode_frames(
                e, t, video, run.device, batch_size, num_workers))) for e, t in encoders], axis=1)
            windows = make_windows(video, p.window, eval_stride(cfg), p.max_gap)
            outs: dict[str, list] = {}
            for s in range(0, len(windows), batch_size):
                w = windows.rows[s:s + batch_size]
                x = torch.from_numpy(np.where((w != PAD)[..., None], feats[np.maximum(w, 0)],
                                              0.0).astype(np.float32)).to(run.device)
                fr = torch.from_numpy(windows.frames[s:s + batch_size]).to(run.device)
                valid = torch.from_numpy(w != PAD).to(run.device)
                o = model.joint(list(x.split(model.dims, dim=-1)), fr, valid)
                for k, v in collect_windows(o, {}).items():
                    outs.setdefault(k, []).append(v.cpu().numpy())
            pred = frame_predictions({k: np.concatenate(v) for k, v in outs.items()},
                                     windows, len(video))
            if widths is not None:
                pred = apply_smoothing(pred, video, p.smoothing, widths, p.max_gap)
            for k, v in pred.items():
                if k not in out:
                    out[k] = np.zeros((len(table), *v.shape[1:]), np.float32)
                out[k][rows] = v
            if bar is not None:
                bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
    out.update({"va_true": table.va, "expr_true": table.expression,
                "au_true": table.au.astype(np.int64), "index": np.arange(len(table))})
    if "va" not in out:
        out.pop("va_true")
    if "au_probs" not in out:
        out.pop("au_true")
    return out
