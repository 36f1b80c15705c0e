"""EMMA (ABAW4, section 3.2): a face-MAE ViT for AU + EXPR, a frozen AffectNet CNN whose
expression scores join them, and a small VA head on top of all three score vectors.

The VA head reads *scores*, not features: VA is learned from what the model believes
about AUs and expressions. The paper stops the VA loss at the scores, so only the head
learns from it (``stop_gradient``, on by default); the released code forgot to.
"""

from __future__ import annotations

import torch
from torch import nn

from ..labels import ABAW_AU, ABAW_EXPR
from .backbone import Backbone, prefixed_group_matcher


class EMMA(nn.Module):
    def __init__(self, backbone: Backbone, expr_branch: nn.Module | None = None,
                 va_hidden: int = 256, stop_gradient: bool = True, head_dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.expr_branch = expr_branch  # frozen; its own train() keeps it in eval mode
        self.stop_gradient = stop_gradient
        width = backbone.num_features
        self.head_drop = nn.Dropout(head_dropout)
        self.au_head = nn.Linear(width, len(ABAW_AU))
        self.expr_head = nn.Linear(width, len(ABAW_EXPR))
        va_in = len(ABAW_AU) + len(ABAW_EXPR) + (len(ABAW_EXPR) if expr_branch is not None else 0)
        self.va_head = nn.Sequential(nn.Linear(va_in, va_hidden), nn.GELU(),
                                     nn.Linear(va_hidden, 2))

    def forward(self, images: torch.Tensor, mask_ratio: float = 0.0) -> dict[str, torch.Tensor]:
        """``au_logits`` (B, 12), ``expr_logits`` (B, 8), ``va`` (B, 2) in [-1, 1]
        (``valence``, ``arousal`` columns), and ``expr_scores_cnn`` (B, 8) if a branch."""
        features = self.head_drop(self.backbone(images, mask_ratio=mask_ratio))
        au_logits = self.au_head(features)
        expr_logits = self.expr_head(features)
        scores = [torch.sigmoid(au_logits), torch.softmax(expr_logits, dim=-1)]
        out = {"au_logits": au_logits, "expr_logits": expr_logits}
        if self.expr_branch is not None:
            out["expr_scores_cnn"] = self.expr_branch(images)
            scores.append(out["expr_scores_cnn"].to(au_logits.dtype))
        z = torch.cat(scores, dim=-1)
        if self.stop_gradient:
            z = z.detach()
        out["va"] = torch.tanh(self.va_head(z))
        return out

    # timm's optimiser helpers see through the wrapper: layer decay stays on
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return prefixed_group_matcher("backbone", self.backbone.group_matcher(coarse))

    @torch.jit.ignore
    def no_weight_decay(self):
        return {f"backbone.{k}" for k in self.backbone.no_weight_decay()}
