"""Ensembles of checkpoints or runs (ABAW4 Table 5: epochs and hyper-parameter settings).

Members are averaged in probability space (EXPR softmax, AU sigmoid) and in value space
(VA). The ensemble's AU probabilities are calibrated differently from any member's, so
its per-AU thresholds are re-tuned on validation rather than inherited.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import metrics


def member_probabilities(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model's outputs as what ensembles average: ``va``, ``expr_probs``, ``au_probs``."""
    out = {}
    if "va" in outputs:
        out["va"] = outputs["va"]
    if "expr_probs" in outputs:
        out["expr_probs"] = outputs["expr_probs"]
    elif "expr_logits" in outputs:
        out["expr_probs"] = torch.softmax(outputs["expr_logits"], dim=-1)
    if "au_logits" in outputs:
        out["au_probs"] = torch.sigmoid(outputs["au_logits"])
    return out


def average_members(members: list[dict]) -> dict:
    """Mean of each key over members (tensors or arrays); members must agree on keys."""
    keys = set(members[0])
    for i, m in enumerate(members[1:], 1):
        if set(m) != keys:
            raise ValueError(f"ensemble member {i} gives {sorted(m)}, member 0 {sorted(keys)}")
    stack = torch.stack if isinstance(members[0][next(iter(keys))], torch.Tensor) else np.stack
    return {k: stack([m[k] for m in members]).mean(0) for k in keys}


class Ensemble(nn.Module):
    """Average the probabilities of several models on the same input."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return average_members([member_probabilities(m(images)) for m in self.members])


def retune_au_thresholds(au_probs, au_labels) -> np.ndarray:
    """Per-AU thresholds for the ensemble's own averaged probabilities (on validation)."""
    return metrics.tune_au_thresholds(np.asarray(au_probs), np.asarray(au_labels))
