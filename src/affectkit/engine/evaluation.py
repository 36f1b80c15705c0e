"""Inference over a whole dataset and the task's official scores.

``infer`` runs a model over a dataset in eval mode and returns per-sample arrays in
dataset order. Under DDP each rank takes every ``world_size``-th sample (no padding, no
duplicates, unlike ``DistributedSampler``) and the arrays are gathered and put back in
order, so scores are those of the exact dataset whatever the number of processes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..labels import ABAW_AU, LabelSet
from ..metrics import au_scores, binarize_au, expr_scores, p_lsd, p_mtl, va_scores
from ..models.ensemble import member_probabilities
from . import dist


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if k == "image" and channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def collect_predictions(outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
    """Per-sample predictions (``va``, ``expr_probs``, ``au_probs`` as the model has them)
    and the labels (``va_true``, ``expr_true``, ``au_true``; sentinels kept)."""
    out = {k: v.float() for k, v in member_probabilities(outputs).items()}
    out["expr_true"] = batch["expression"]
    if "va" in out:
        out["va_true"] = batch["va"]
    if "au_probs" in out:
        out["au_true"] = batch["au"]
    return out


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as numpy; bf16 / fp16 (mixed precision outputs) as float32."""
    t = t.detach().cpu()
    return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()


@torch.no_grad()
def infer(model: torch.nn.Module, dataset: Dataset,
          collect: Callable[[dict, dict], dict] = collect_predictions, *, batch_size: int = 64,
          num_workers: int = 0, device: torch.device | str = "cpu",
          amp_dtype: torch.dtype | None = None, channels_last: bool = False,
          progress: Callable[[int], None] | None = None,
          forward: Callable[[torch.nn.Module, dict], dict] | None = None
          ) -> dict[str, np.ndarray]:
    """``collect(outputs, batch)`` for every sample, as numpy arrays in dataset order,
    plus ``index``. ``forward(model, batch)``: default ``model(batch["image"])``. Call it
    on every rank when distributed; all ranks get the result."""
    device = torch.device(device)
    info = dist.current()
    shard = range(info.rank, len(dataset), info.world_size)
    loader = DataLoader(Subset(dataset, list(shard)) if info.enabled else dataset,
                        batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda",
                        # its own generator: an iterator otherwise draws its worker seed
                        # from the global RNG, and validating would shift training's streams
                        generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    try:
        for batch in loader:
            batch = to_device(batch, device, channels_last)
            ctx = torch.autocast(device.type, amp_dtype) if amp_dtype else nullcontext()
            with ctx:
                outputs = forward(model, batch) if forward else model(batch["image"])
            arrays = {k: _numpy(v) for k, v in collect(outputs, batch).items()}
            arrays["index"] = batch["index"].cpu().numpy()
            for k, v in arrays.items():
                parts.setdefault(k, []).append(v)
            if progress is not None:
                progress(len(arrays["index"]))
    finally:
        model.train(was_training)
    local = {k: np.concatenate(v) for k, v in parts.items()}
    gathered = [g for g in dist.gather_objects(local) if g]
    if not gathered:
        return {}
    merged = {k: np.concatenate([g[k] for g in gathered]) for k in gathered[0]}
    order = np.argsort(merged["index"], kind="stable")
    return {k: v[order] for k, v in merged.items()}


TASK_SCORE = {"au": "au_f1", "expr": "expr_f1", "va": "va"}  # each task's official score


def task_scores(pred: dict[str, np.ndarray], truth: dict[str, np.ndarray], labels: LabelSet,
                au_thresholds: float | np.ndarray = 0.5) -> dict:
    """The scores of the tasks ``pred`` has (``expr_probs``, ``au_probs``, ``va``) against
    ``truth`` (``expr``, ``au``, ``va``): EXPR macro F1 over ``labels``, AU mean F1 at
    ``au_thresholds`` (on probabilities), VA CCC; and ``p``, the sum of the three tasks'
    official scores that are there (ABAW's P_MTL when all are)."""
    scores: dict = {}
    if "expr_probs" in pred:
        scores.update(expr_scores(np.asarray(truth["expr"]).astype(np.int64),
                                  pred["expr_probs"].argmax(-1), labels.classes))
    if "au_probs" in pred:
        scores.update(au_scores(np.asarray(truth["au"]).astype(np.int64),
                                binarize_au(pred["au_probs"], au_thresholds), ABAW_AU.classes))
    if "va" in pred:
        scores.update(va_scores(truth["va"], pred["va"]))
    scores["p"] = float(sum(scores[k] for k in TASK_SCORE.values() if k in scores))
    return scores


def score_predictions(arrays: dict[str, np.ndarray], labels: LabelSet,
                      au_thresholds: float | np.ndarray = 0.5) -> dict:
    """The official scores of ``infer`` output. Multi-task: VA CCC, EXPR macro F1 over
    ``labels``, AU mean F1 at ``au_thresholds`` (on probabilities) and ``p_mtl``.
    Expression only: macro F1 and, for LSD's 6 classes, ``p_lsd``. Other task
    combinations (progressive heads, a model without VA): the sum of their scores.
    ``score`` is the task's official number."""
    truth = {k: arrays[f"{k}_true"] for k in TASK_SCORE if f"{k}_true" in arrays}
    scores = task_scores(arrays, truth, labels, au_thresholds)
    total = scores.pop("p")
    tasks = [k for k in ("expr_probs", "au_probs", "va") if k in arrays]
    if tasks == ["expr_probs"] and labels.name == "lsd":
        scores["p_lsd"] = p_lsd(truth["expr"].astype(np.int64),
                                arrays["expr_probs"].argmax(-1), len(labels))
        scores["score"] = scores["p_lsd"]
    elif len(tasks) == 3:
        scores["p_mtl"] = p_mtl(scores)
        scores["score"] = scores["p_mtl"]
    else:
        scores["score"] = total
    return scores
