"""Training checkpoints that resume exactly: weights, optimiser, schedule, loss scaler, the
loop's counters and every RNG, in one file that loads with ``weights_only=True``.

``last.pt`` in the run folder is rewritten (atomically) every epoch and on interruption;
``latest_checkpoint`` finds it. A checkpoint taken mid-epoch records ``micro_step``, the
batches already consumed in that epoch, so the loop can skip them on resume (the data
order must then come from a per-epoch seed, not from the global RNG, as with
``DistributedSampler.set_epoch``). Under DDP only the saving rank's RNG is recorded.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.checkpoint import _torch_load, save_checkpoint

log = logging.getLogger(__name__)

FORMAT = "affectkit-train-v1"
LAST = "last.pt"


@dataclass
class TrainState:
    """The loop's position: ``step`` counts optimizer steps, ``micro_step`` the batches
    consumed in ``epoch`` so far (0 at an epoch boundary)."""

    epoch: int = 0
    step: int = 0
    micro_step: int = 0
    best_score: float | None = None
    best_epoch: int | None = None


def capture_rng() -> dict[str, Any]:
    """python ``random``, numpy's global generator, torch CPU and every CUDA device, as
    tensors and plain numbers only."""
    version, py_state, gauss = random.getstate()
    key, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    out: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss},
        "numpy": {"key": str(key), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    """Undo ``capture_rng``. CUDA states are restored when CUDA is available (a warning if
    the number of devices differs)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state((npy["key"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if len(cuda) != n:
            log.warning("checkpoint has CUDA RNG states of %d devices, this process sees %d",
                        len(cuda), n)
        for i, s in enumerate(cuda[:n]):
            torch.cuda.set_rng_state(s, i)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under DDP / DataParallel (``.module``) and ``torch.compile`` (``_orig_mod``)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _check_plain(obj: Any, where: str) -> None:
    """Refuse, at save time, what ``weights_only`` loading would refuse at resume time."""
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, not str/int")
            _check_plain(v, f"{where}[{k!r}]")
    else:
        raise TypeError(f"{where} is a {type(obj).__name__}: a checkpoint holds tensors, "
                        "numbers, strings, lists and dicts only (convert it, e.g. str(path))")


def save_training_checkpoint(path: str | os.PathLike, model: nn.Module,
                             optimizer: torch.optim.Optimizer, scheduler=None, scaler=None,
                             state: TrainState | None = None,
                             config: dict | None = None, extra: dict | None = None) -> Path:
    """Write everything needed to resume into ``path``, atomically (a crash mid-write
    leaves the previous file). ``config`` and ``extra`` must be plain data."""
    _check_plain(config, "config")
    _check_plain(extra, "extra")
    return save_checkpoint(
        path, unwrap_model(model).state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict() if scheduler is not None else None,
        scaler=scaler.state_dict() if scaler is not None else None,
        rng=capture_rng(),
        state=asdict(state if state is not None else TrainState()),
        config=config, extra=extra, format=FORMAT)


def read_training_checkpoint(path: str | os.PathLike) -> dict:
    """The dict ``save_training_checkpoint`` wrote (``weights_only``). ``ValueError`` naming
    ``path`` for a file that is not an affectkit training checkpoint (wrong format,
    corrupt, truncated, pickled objects)."""
    path = Path(path)
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not an affectkit training checkpoint "
                         f"(format {found!r}, expected {FORMAT!r})")
    return ckpt


def load_training_checkpoint(path: str | os.PathLike, model: nn.Module,
                             optimizer: torch.optim.Optimizer | None = None, scheduler=None,
                             scaler=None, restore_rng_state: bool = True,
                             ckpt: dict | None = None) -> TrainState:
    """Load what ``save_training_checkpoint`` wrote into the objects given, restore the RNGs
    and return the ``TrainState``. ``ckpt``: the file's dict when the caller has already
    read it with ``read_training_checkpoint`` (``path`` then only names it in errors)."""
    path = Path(path)
    if ckpt is None:
        ckpt = read_training_checkpoint(path)
    try:
        unwrap_model(model).load_state_dict(ckpt["model"])
        if optimizer is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path} does not fit this model/optimizer: {exc}") from exc
    for name, obj in (("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if ckpt.get(name) is None:
            log.warning("%s has no %s state; %s starts fresh", path, name, name)
        else:
            obj.load_state_dict(ckpt[name])
    if restore_rng_state:
        restore_rng(ckpt["rng"])
    known = {f.name for f in fields(TrainState)}
    return TrainState(**{k: v for k, v in ckpt["state"].items() if k in known})


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """``run_dir/last.pt`` if it exists, else ``None`` (a fresh run)."""
    p = Path(run_dir) / LAST
    return p if p.is_file() else None
