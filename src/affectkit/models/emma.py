"""EMMA (ABAW4, section 3.2): a face-MAE ViT for AU + EXPR, a frozen AffectNet CNN whose
expression scores join them, and a small VA head on top of all three score vectors.

The VA head reads *scores*, not features: VA is learned from what the model believes
about AUs and expressions. The paper concatenates the prediction scores p_AU, p_EXP1 and
p_EXP2 before any sigmoid/softmax (``va_inputs="logits"``, the default; "probs" feeds
sigmoid / softmax of the same scores instead); the CNN's scores are its own AffectNet
logits, in their fixed order, unchanged. The paper stops the VA loss at the scores, so
only the head learns from it (``stop_gradient``, on by default); the released code forgot
to.
"""

from __future__ import annotations

import torch
from torch import nn

from ..labels import ABAW_AU, ABAW_EXPR
from .backbone import Backbone, HeadsOnBackbone
from .dan import ExpressionBranch


class EMMA(HeadsOnBackbone):
    def __init__(self, backbone: Backbone, expr_branch: ExpressionBranch | None = None,
                 va_hidden: int = 256, stop_gradient: bool = True, head_dropout: float = 0.0,
                 va_inputs: str = "logits", mask_ratio: float = 0.0):
        if va_inputs not in ("logits", "probs"):
            raise ValueError(f"va_inputs must be 'logits' or 'probs', got {va_inputs!r}")
        super().__init__(backbone, mask_ratio, head_dropout)
        self.expr_branch = expr_branch  # frozen; its own train() keeps it in eval mode
        self.stop_gradient = stop_gradient
        self.va_inputs = va_inputs
        va_in = len(ABAW_AU) + len(ABAW_EXPR) + (expr_branch.num_classes if expr_branch else 0)
        self.va_head = nn.Sequential(nn.Linear(va_in, va_hidden), nn.GELU(),
                                     nn.Linear(va_hidden, 2))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``au_logits`` (B, 12), ``expr_logits`` (B, 8), ``va`` (B, 2) in [-1, 1]
        (``valence``, ``arousal`` columns); with a branch also its own ``expr_logits_cnn``
        and ``expr_scores_cnn`` (B, 8), those as a distribution over ABAW's classes."""
        features = self.head_drop(self.backbone(images, mask_ratio=self.mask_ratio))
        au_logits = self.au_head(features)
        expr_logits = self.expr_head(features)
        out = {"au_logits": au_logits, "expr_logits": expr_logits}
        scores = [au_logits, expr_logits]
        if self.expr_branch is not None:
            cnn_logits = self.expr_branch.logits(images).to(au_logits.dtype)
            out["expr_logits_cnn"] = cnn_logits
            out["expr_scores_cnn"] = self.expr_branch.abaw_scores(cnn_logits)
            scores.append(cnn_logits)
        if self.va_inputs == "probs":
            scores = [torch.sigmoid(scores[0])] + [torch.softmax(s, dim=-1) for s in scores[1:]]
        z = torch.cat(scores, dim=-1)
        if self.stop_gradient:
            z = z.detach()
        out["va"] = torch.tanh(self.va_head(z))
        return out

    # timm's optimiser helpers see through the wrapper: layer decay stays on
