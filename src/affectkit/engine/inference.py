"""Trained runs at work: load a run or checkpoint, predict over a table.

``load_run`` turns a run folder (``best.pt``, else ``last.pt``) or a checkpoint file
(``.pt`` / ``.pth`` / ``.safetensors``) into its config and a ready model; the config
comes from the checkpoint's ``config`` entry, else ``config.yaml`` beside it. Loading
is ``weights_only``: a checkpoint is data and cannot run code.

``open_table`` opens what to predict on: a dataset root and split, an annotation file,
a test list of images (``MTL_Challenge_test_set_release.txt``), a list of video names
(the per-video challenges' test lists), a CSV with a path column, or a bare folder of
images. ``predict_table`` runs ``engine.evaluation.infer`` over it (batched, on CUDA
when there is one, sharded under ``torchrun``) and returns per-image arrays:
``va`` (N, 2), ``expr_probs`` (N, C), ``au_probs`` (N, 12) as the model has them, and
the labels (``va_true``, ``expr_true``, ``au_true``; sentinels where unlabelled).

The readers of test lists live in ``data.videos``, the submission writers in
``data.submission``; ``engine.commands`` puts them together for the CLI.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Config, ConfigError, config_from_dict, load_config, parse_value
from ..data.augment import eval_transform, transforms_for
from ..data.dataset import FaceDataset
from ..data.discover import detect_layouts, open_dataset
from ..data.errors import DataError
from ..data.images import find_missing
from ..data.table import FaceTable
from ..data.videos import is_video_list, read_image_folder, read_video_list
from ..kinds import ModelKind, get_kind
from ..labels import ABAW_AU, LabelSet, au_valid, expr_valid, get_label_set, va_valid
from ..metrics import binarize_au, load_au_thresholds
from ..models.checkpoint import _strip_ddp, _torch_load
from ..models.ensemble import average_members
from ..models.tta import TestTimeAugment
from . import dist
from .build import build_model, model_labels, open_splits, pick_split, relabel
from .evaluation import collect_predictions, infer

log = logging.getLogger(__name__)

CHECKPOINTS = ("best.pt", "last.pt")  # a run folder's checkpoints, in order of preference
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")
THRESHOLDS = "au_thresholds.json"  # per-AU thresholds kept in a run folder (evaluate --tune)
PREDICTED = ("va", "expr_probs", "au_probs")  # what ensembles average


class RunError(ValueError):
    """A run folder or checkpoint that cannot be used; the message names the file."""


class RunKind:
    """What a run predicts, from its config (shared by ``RunFiles`` and ``LoadedRun``)."""

    cfg: Config
    checkpoint: Path

    @property
    def kind(self) -> ModelKind:
        return get_kind(self.cfg.model.kind)

    @property
    def multitask(self) -> bool:
        """VA + EXPR + AU (EMMA and its baselines); False: expression only (CoTEX)."""
        return self.kind.multitask

    @property
    def labels(self) -> LabelSet:
        """The expression classes the model predicts."""
        return self.kind.labels(self.cfg)

    @property
    def task(self) -> str:
        """The ``affectkit score --task`` of this model's predictions."""
        return self.kind.score_task(self.cfg)

    @property
    def run_dir(self) -> Path:
        """The checkpoint's folder (config.yaml, au_thresholds.json, eval-*/)."""
        return self.checkpoint.parent


@dataclass
class RunFiles(RunKind):
    """What a run folder or checkpoint holds, before any model is built."""

    checkpoint: Path
    cfg: Config
    state: dict[str, torch.Tensor]
    epoch: int | None


@dataclass
class LoadedRun(RunKind):
    cfg: Config
    model: nn.Module | None  # on ``device``, in eval mode
    checkpoint: Path
    epoch: int | None
    device: torch.device


# ----------------------------------------------------------------------------- loading


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint a path names: the file itself, or a run folder's best.pt / last.pt."""
    path = Path(path)
    if path.is_dir():
        for name in CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        raise RunError(f"{path}: no checkpoint in this run folder (looked for "
                       f"{' and '.join(CHECKPOINTS)})")
    if not path.exists():
        raise RunError(f"{path}: no such run folder or checkpoint file")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise RunError(f"{path}: not a run folder or checkpoint file (expected a folder or "
                       f"{', '.join(CHECKPOINT_SUFFIXES)})")
    return path


def _read_checkpoint(path: Path) -> tuple[dict, dict | None, int | None]:
    """(state dict, config dict or None, epoch or None) of a checkpoint file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            # half-precision weights (shipped models) compute in fp32 like the rest
            state = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
                     for k, v in load_file(str(path), device="cpu").items()}
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            config = parse_value(meta["config"]) if meta.get("config") else None  # JSON/YAML
            epoch = int(meta["epoch"]) if str(meta.get("epoch", "")).isdigit() else None
            return _strip_ddp(state), config, epoch
        obj = _torch_load(path)
    except RunError:
        raise
    except Exception as exc:  # corrupt, truncated, pickled objects, not a checkpoint
        raise RunError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise RunError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    state = obj.get("model") if isinstance(obj.get("model"), dict) else obj
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad or not state:
        raise RunError(f"{path} holds no model weights (expected an affectkit checkpoint "
                       f"with 'model' and 'config', e.g. a run's best.pt / last.pt)")
    config = obj.get("config") if isinstance(obj.get("config"), dict) else None
    epoch = obj.get("epoch")
    if epoch is None and isinstance(obj.get("state"), dict):  # last.pt
        epoch = obj["state"].get("epoch")
    return _strip_ddp(state), config, epoch if isinstance(epoch, int) else None


def _config_of(checkpoint: Path, raw: dict | None) -> Config:
    try:
        if raw is not None:
            return config_from_dict(raw)
        saved = checkpoint.parent / "config.yaml"
        if not saved.is_file():
            raise RunError(f"{checkpoint} holds no config and there is no {saved}: cannot "
                           "tell which model it is")
        return load_config(str(saved))
    except ConfigError as e:
        where = "its 'config' entry" if raw is not None else str(checkpoint.parent /
                                                                 "config.yaml")
        raise RunError(f"{checkpoint}: the config ({where}) is not valid: "
                       + "; ".join(e.problems)) from None


def read_run(path: str | os.PathLike) -> RunFiles:
    """The checkpoint, config and weights a run folder or checkpoint file names.

    Raises ``RunError`` naming the file for a missing checkpoint, a missing or invalid
    config, and for MAE pretraining runs (they predict no labels).
    """
    checkpoint = find_checkpoint(path)
    state, raw, epoch = _read_checkpoint(checkpoint)
    cfg = _config_of(checkpoint, raw)
    if get_kind(cfg.model.kind).pretraining:
        raise RunError(f"{checkpoint} is a pretraining run (model.kind: {cfg.model.kind}): it "
                       "predicts no labels; fine-tune from its encoder.pth "
                       "(model.pretrained=...) and evaluate that run")
    return RunFiles(checkpoint, cfg, state, epoch)


def _without_init(cfg: Config, state: dict[str, torch.Tensor]) -> nn.Module | None:
    """The model of ``cfg`` holding ``state``, built on the meta device and handed the
    checkpoint's tensors: no random initialisation, which costs seconds for a ViT on a
    CPU and is thrown away. None when that cannot work (a constructor that computes with
    tensor values, weights that do not fit, a tensor the checkpoint does not hold): the
    caller then builds it the ordinary way."""
    try:
        with torch.device("meta"):
            model = build_model(cfg, load_weights=False)
        model.load_state_dict(state, assign=True)
    except (RuntimeError, NotImplementedError, ValueError):
        return None
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        return None
    return model


def load_run(path: str | os.PathLike | RunFiles, device: torch.device | str | None = None
             ) -> LoadedRun:
    """A run folder or checkpoint file (or its ``read_run``) -> config and model, the
    weights loaded strictly, on ``device`` (default: CUDA when there is one) in eval mode.

    The model is built with ``load_weights=False``: the checkpoint holds every weight
    (the branch's too), and the pretraining files need not exist any more. ``RunError``
    naming the file when the weights do not fit the config's model (see ``read_run``).
    """
    files = path if isinstance(path, RunFiles) else read_run(path)
    checkpoint, cfg = files.checkpoint, files.cfg
    m = cfg.model
    model = _without_init(cfg, files.state)
    if model is None:
        model = build_model(cfg, load_weights=False)
        try:
            model.load_state_dict(files.state)
        except RuntimeError as exc:
            lines = str(exc).strip().splitlines()
            raise RunError(f"{checkpoint} does not fit the model of its config (kind "
                           f"{m.kind!r}, backbone {m.backbone!r}): "
                           f"{' '.join(lines[:3])[:600]}") from None
    device = torch.device(device) if device is not None else dist.device_for(dist.current())
    model.to(device).eval()
    is_cnn = not getattr(getattr(model, "backbone", None), "is_vit", True)
    if is_cnn:
        model.to(memory_format=torch.channels_last)
    files.state = {}  # the model holds the weights now
    return LoadedRun(cfg, model, checkpoint, files.epoch, device)


def run_thresholds(run: RunKind) -> tuple[np.ndarray | None, str]:
    """The run folder's tuned AU thresholds (``evaluate --au-thresholds tune`` on its
    validation split) when they were tuned for this checkpoint, and a note saying so."""
    path = run.run_dir / THRESHOLDS
    if not run.multitask or not path.is_file():
        return None, "AU thresholds: 0.5"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        thr = load_au_thresholds(path, ABAW_AU.classes)
    except (ValueError, KeyError, OSError) as exc:
        raise RunError(f"{path}: unreadable AU thresholds ({exc})") from None
    tuned_for = meta.get("checkpoint_file")
    if tuned_for not in (None, run.checkpoint.name):
        return None, (f"AU thresholds: 0.5 ({path} was tuned for {tuned_for}, not "
                      f"{run.checkpoint.name})")
    return thr, f"AU thresholds: tuned, from {path}"


def read_thresholds(path: str | os.PathLike) -> np.ndarray:
    """Per-AU thresholds of a ``save_au_thresholds`` file; ``RunError`` naming it otherwise."""
    try:
        return load_au_thresholds(path, ABAW_AU.classes)
    except FileNotFoundError:
        raise RunError(f"{path}: no such AU thresholds file") from None
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise RunError(f"{path}: not an AU thresholds file ({exc})") from None


# ----------------------------------------------------------------------------- data


@dataclass
class EvalData:
    table: FaceTable
    name: str  # the split's name (``mtl/val``) or the list file's stem
    source: Path  # the dataset root or list file
    videos: bool = False  # a list of video names: per-video submission format

    def has_labels(self, multitask: bool) -> bool:
        t = self.table
        if not multitask:
            return bool(expr_valid(t.expression).any())
        return bool(va_valid(t.va).any() or expr_valid(t.expression).any()
                    or au_valid(t.au).any())


def open_table(cfg: Config, data: str | os.PathLike | None = None, *, layout: str | None = None,
               split: str | None = None, images: str | os.PathLike | None = None,
               default_split: str | None = None) -> EvalData:
    """The table to predict on, expressions in the model's label order.

    ``data``: a dataset root (then ``split`` picks the split, default ``default_split``,
    else the run's ``data.val_split``), an annotation or test-list file, a list of video
    names, a CSV with a path column, or a folder of images. ``None``: the run's
    ``data.root`` (and its ``data.layout`` and ``data.images`` unless given).
    """
    d = cfg.data
    if data is None and d.extra and split in (None, d.val_split) and default_split is None:
        # the run's own validation: the table training scored, data.extra's rows included
        return EvalData(open_splits(cfg)[1], d.val_split, Path(d.root))
    if data is None:
        root = Path(d.root)
        layout = layout or d.layout
        images = images if images is not None else d.images
    else:
        root = Path(data)
        layout = layout or "auto"
    if not root.exists():
        raise DataError(root, None, "no such file or directory")
    if root.is_file() and layout in ("auto", "per-video") and is_video_list(root):
        return EvalData(read_video_list(root, images), root.stem, root, videos=True)
    if root.is_dir() and layout == "auto" and not detect_layouts(root):
        table = read_image_folder(root)
        if table is not None:
            return EvalData(table, root.name, root)
    labels = get_label_set(d.expr_labels) if d.expr_labels else None
    tables = open_dataset(root, layout, images, labels)
    want = split or default_split or d.val_split
    if root.is_file() and len(tables) == 1 and split is None:
        name = next(iter(tables))
        table = tables[name]
        if isinstance(table, DataError):
            raise table
    else:
        table = pick_split(tables, want, root, "--split")
        name = next(n for n, t in tables.items() if t is table)
    return EvalData(relabel(table, model_labels(cfg)), name, root)


def check_images(data: EvalData) -> None:
    """Every listed image is on disk, else a ``DataError`` naming them and the folder."""
    missing = find_missing(data.table)
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise DataError(data.source, None, f"{len(missing)} listed image(s) missing under "
                                           f"{data.table.image_root}: {shown} (a submission "
                                           "needs every one; set --images to the face crops)")


# ----------------------------------------------------------------------------- prediction


def predict_table(run: LoadedRun, table: FaceTable, *, batch_size: int = 128,
                  num_workers: int = 0, missing: str = "error", tta: str | None = None,
                  progress: bool = False) -> tuple[dict[str, np.ndarray], FaceTable]:
    """``infer`` over ``table`` at the run's evaluation transform: per-image arrays in
    table order (``missing='skip'`` drops absent images first) and the table used.
    ``tta``: ``"flip"`` or ``"ten-crop"`` (``models.tta``; ten-crop reads the faces at
    the training ``data.resize`` and crops ``data.img_size``), None: one view."""
    from .loop import (
        amp_dtype_for,  # the training loop's mixed-precision rule, for the same numbers
    )

    own = run.kind.predict_table(run, table, batch_size=batch_size, num_workers=num_workers,
                                 missing=missing, tta=tta,
                                 progress=progress and dist.current().is_main)
    if own is not None:
        return own, table
    d = run.cfg.data
    model = run.model
    transform = transforms_for(d)[1]
    if tta:
        model = TestTimeAugment(run.model, tta, d.img_size)
        if tta == "ten-crop":
            transform = eval_transform(d.resize)
    ds = FaceDataset(table, transform, missing=missing)
    if len(ds) == 0:
        raise DataError(table.source, None, "no images to predict")
    bar = None
    if progress and dist.current().is_main:
        from tqdm import tqdm

        bar = tqdm(total=len(ds), unit="img", desc="predict", disable=None)
    channels_last = not getattr(getattr(run.model, "backbone", None), "is_vit", True)
    try:
        arrays = infer(model, ds, collect_predictions, batch_size=batch_size,
                       num_workers=num_workers, device=run.device,
                       amp_dtype=amp_dtype_for(run.cfg, run.device), channels_last=channels_last,
                       progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return arrays, ds.table


def ensemble_arrays(members: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Members' predictions averaged (probabilities and VA values), labels of the first."""
    first = members[0]
    for i, m in enumerate(members[1:], 1):
        if not np.array_equal(m["index"], first["index"]):
            raise ValueError(f"ensemble member {i} predicted other images than member 0")
    out = average_members([{k: m[k] for k in PREDICTED if k in m} for m in members])
    out.update({k: v for k, v in first.items() if k not in PREDICTED})
    return out


def check_same_kind(runs: list[RunKind], names: list[str]) -> None:
    """Ensemble members must predict the same tasks and the same classes."""
    kinds = {("multi-task (VA, EXPR, AU)" if r.multitask else "expression only")
             + f", classes {r.labels.name}" for r in runs}
    if len(kinds) > 1:
        listing = "; ".join(f"{n}: {'multi-task' if r.multitask else 'expression only'} "
                            f"({r.cfg.model.kind}), classes {r.labels.name}"
                            for n, r in zip(names, runs))
        raise RunError(f"ensemble members must predict the same tasks and classes: {listing}")


def hard_predictions(arrays: dict[str, np.ndarray], au_thresholds=0.5) -> dict[str, np.ndarray]:
    """Submission values: ``va`` clipped to [-1, 1], ``expression`` argmax, ``au`` 0/1."""
    if "expr_probs" not in arrays:
        raise RunError("this model predicts no expressions (model.heads leaves EXPR out): "
                       "it cannot write a challenge submission, which needs every column")
    out = {"expression": arrays["expr_probs"].argmax(-1).astype(np.int64)}
    if "va" in arrays:
        out["va"] = np.clip(arrays["va"].astype(np.float64), -1.0, 1.0)
    if "au_probs" in arrays:
        out["au"] = binarize_au(np.clip(arrays["au_probs"], 0.0, 1.0), au_thresholds)
    return out
