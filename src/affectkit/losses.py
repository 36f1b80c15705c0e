"""Multi-task training losses for ABAW (VA, EXPR, AU) that tolerate missing labels.

Aff-Wild2 frames are labelled for some tasks only, so every loss masks the release sentinels
(VA ``-5``, EXPR ``-1``, AU ``-1``) and averages over what is valid. A batch with nothing
valid gives a loss of exactly 0 that is still connected to the graph: backward (and DDP's
gradient all-reduce) then sees a zero gradient instead of a NaN or a missing one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .labels import AU_INVALID, EXPR_INVALID, va_valid


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over ``valid`` entries; 0 with an all-zero gradient when none is valid."""
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / valid.sum().clamp(min=1)


def masked_bce(au_logits, au_targets, pos_weight=None) -> torch.Tensor:
    """BCE-with-logits averaged over the (frame, AU) entries whose target is not -1.

    ``pos_weight`` (K,) up-weights positives of rare AUs (see ``au_pos_weight``).
    """
    valid = au_targets != AU_INVALID
    if pos_weight is not None:
        pos_weight = torch.as_tensor(pos_weight, dtype=au_logits.dtype, device=au_logits.device)
    targets = torch.where(valid, au_targets, torch.zeros_like(au_targets)).to(au_logits.dtype)
    loss = F.binary_cross_entropy_with_logits(
        au_logits, targets, pos_weight=pos_weight, reduction="none"
    )
    return _masked_mean(loss, valid)


def au_pos_weight(au_labels, clip: float | None = None) -> torch.Tensor:
    """neg/pos per AU from training labels (-1 ignored), for ``masked_bce``'s ``pos_weight``.

    An AU without positives (or without negatives) gets 1.0: the ratio carries no usable
    information there and inf (or 0) would blow up (or silence) that AU's loss.
    """
    labels = np.asarray(
        au_labels.detach().cpu() if isinstance(au_labels, torch.Tensor) else au_labels
    )
    pos = (labels == 1).sum(axis=0).astype(np.float64)
    neg = (labels == 0).sum(axis=0).astype(np.float64)
    ok = (pos > 0) & (neg > 0)
    w = np.divide(neg, pos, out=np.ones_like(pos), where=ok)
    if clip is not None:
        w = np.minimum(w, clip)
    return torch.as_tensor(w, dtype=torch.float32)


def masked_ce(expr_logits, expr_targets, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy averaged over rows whose expression label is not -1.

    A batch without any valid label gives 0 (plain ``ignore_index`` averaging gives NaN).
    """
    valid = expr_targets != EXPR_INVALID
    targets = torch.where(valid, expr_targets, torch.zeros_like(expr_targets)).long()
    loss = F.cross_entropy(expr_logits, targets, reduction="none", label_smoothing=label_smoothing)
    return _masked_mean(loss, valid)


def batch_ccc(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-column CCC over the batch (population moments); ``eps`` keeps constant batches finite."""
    mp, mt = pred.mean(dim=0), target.mean(dim=0)
    dp, dt = pred - mp, target - mt
    cov = (dp * dt).mean(dim=0)
    den = dp.pow(2).mean(dim=0) + dt.pow(2).mean(dim=0) + (mp - mt).pow(2)
    return 2 * cov / (den + eps)


def ccc_loss(va_pred, va_target) -> torch.Tensor:
    """``2 - CCC_valence - CCC_arousal`` over rows without the -5 sentinel.

    Equals the paper's ``1 - (CCC_V + CCC_A)`` up to a constant; it is >= 0 and 0 at perfect
    agreement. CCC needs two rows: with fewer valid rows the loss is a graph-connected 0.
    """
    valid = va_valid(va_target)
    pred, target = va_pred[valid], va_target[valid].to(va_pred.dtype)
    if pred.shape[0] < 2:
        return pred.sum() * 0
    return 2 - batch_ccc(pred, target).sum()


def js_divergence(logits_a, logits_b, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Jensen-Shannon divergence of softmax(logits_a) and softmax(logits_b), mean over the
    rows where the boolean ``rows`` is true (default: all; none: a graph-connected 0).

    JS = (KL(p1||m) + KL(p2||m)) / 2 with m = (p1 + p2) / 2, in log space (log m by
    logsumexp), so confident logits do not underflow; symmetric, 0 for equal inputs, <= ln 2.
    """
    lp1, lp2 = F.log_softmax(logits_a, dim=-1), F.log_softmax(logits_b, dim=-1)
    lm = torch.logaddexp(lp1, lp2) - math.log(2.0)
    kl1 = (lp1.exp() * (lp1 - lm)).sum(dim=-1)
    kl2 = (lp2.exp() * (lp2 - lm)).sum(dim=-1)
    js = (kl1 + kl2) / 2
    if rows is None:
        return js.mean()
    if not rows.any():
        return js.sum() * 0
    return js[rows].mean()
