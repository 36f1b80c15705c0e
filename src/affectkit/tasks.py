"""Tasks: a model's outputs + a batch -> named losses. The engine only backpropagates
``loss``; every other entry is for logging.

Batches follow ``affectkit.data.FaceDataset``: ``va`` (B, 2) with -5 for unlabelled,
``expression`` (B,) with -1, ``au`` (B, 12) with -1 per AU. Invalid labels contribute
nothing to any loss, and a batch with none of a task's labels gives that loss as a
graph-connected 0, never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import losses


@dataclass
class MTLTask:
    """EMMA and the single-model multi-task baselines: L = w_au L_AU + w_expr L_EXPR + w_va L_VA,
    over the heads the model has (a model without a VA head has no VA loss).

    The weights are applied in training (the ABAW7 public code forgot to).
    """

    au_weight: float = 1.0
    expr_weight: float = 1.0
    va_weight: float = 1.0
    au_pos_weight: torch.Tensor | None = None
    label_smoothing: float = 0.0

    def __call__(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        named, total = {}, None
        if "au_logits" in outputs:
            named["au_loss"] = losses.masked_bce(outputs["au_logits"], batch["au"],
                                                 self.au_pos_weight)
            total = self.au_weight * named["au_loss"]
        if "expr_logits" in outputs:
            named["expr_loss"] = losses.masked_ce(outputs["expr_logits"], batch["expression"],
                                                  self.label_smoothing)
            term = self.expr_weight * named["expr_loss"]
            total = term if total is None else total + term
        if "va" in outputs:
            named["va_loss"] = losses.ccc_loss(outputs["va"], batch["va"])
            term = self.va_weight * named["va_loss"]
            total = term if total is None else total + term
        if total is None:
            raise KeyError(f"{type(self).__name__}: no au_logits, expr_logits or va in "
                           f"{sorted(outputs)}")
        return {**named, "loss": total}


@dataclass
class WindowTask(MTLTask):
    """Progressive learning's stage 2: the same weighted loss over every real frame of a
    batch of windows (outputs and labels (B, L, ...); ``batch["valid"]`` (B, L) False at
    padding, which is dropped before any loss, so CCC is a statistic of real frames only).
    Only the heads the joint model has are trained (the strategy search's task
    combinations); a zero weight gives its head no gradient."""

    def __call__(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        keep = batch["valid"].reshape(-1)
        frames = {k: batch[k].flatten(0, 1)[keep] for k in ("au", "expression", "va")}
        return super().__call__({k: v.flatten(0, 1)[keep] for k, v in outputs.items()},
                                frames)


@dataclass
class CoTEXTask:
    """Masked CoTEX: CE on each view + ``js_weight`` * JS(view 1, view 2).

    The paper gives no value for the JS weight λ (its best LSD submission used λ = 0); the
    recipes keep 1.0. The method is supervised, so JS runs over the labelled rows only by
    default (``js_rows="labelled"``); ``"all"`` makes unlabelled rows agree too, the
    semi-supervised variant.
    """

    js_weight: float = 1.0
    label_smoothing: float = 0.0
    js_rows: str = "labelled"

    def __post_init__(self):
        if self.js_rows not in ("labelled", "all"):
            raise ValueError(f"js_rows must be 'labelled' or 'all', got {self.js_rows!r}")

    def __call__(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        target = batch["expression"]
        logits_1, logits_2 = outputs["expr_logits_1"], outputs["expr_logits_2"]
        ce_1 = losses.masked_ce(logits_1, target, self.label_smoothing)
        ce_2 = losses.masked_ce(logits_2, target, self.label_smoothing)
        rows = target >= 0 if self.js_rows == "labelled" else None
        js = losses.js_divergence(logits_1, logits_2, rows)
        return {"ce_1": ce_1, "ce_2": ce_2, "js_loss": js,
                "loss": ce_1 + ce_2 + self.js_weight * js}


@dataclass
class MAETask:
    """MAE pretraining: the model computes its reconstruction loss itself (it needs the
    mask and the input's patches), so the task names it; labels in the batch are ignored."""

    def __call__(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        if "loss" not in outputs:
            raise KeyError(f"MAETask needs the MAE model's 'loss' output, got {sorted(outputs)}")
        return {"loss": outputs["loss"]}
