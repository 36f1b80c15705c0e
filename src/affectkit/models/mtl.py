"""The single-model multi-task baseline of ABAW4 Table 1 (ViT, ResNet, EfficientNet, ...).

One backbone, three linear heads on its pooled features (AU, EXPR, VA), everything
fine-tuned by every loss. This is what EMMA is compared against: here the VA loss
reaches the backbone, which the paper shows overfits VA on Aff-Wild2's few subjects;
EMMA instead regresses VA from prediction scores with the gradient stopped.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import Backbone, HeadsOnBackbone


class MultiTaskBaseline(HeadsOnBackbone):
    """``va_head=False`` builds no VA head: a model trained without VA labels then says it
    has no valence/arousal instead of returning an untrained head's numbers."""

    def __init__(self, backbone: Backbone, mask_ratio: float = 0.0, head_dropout: float = 0.0,
                 va_head: bool = True):
        super().__init__(backbone, mask_ratio, head_dropout)
        self.va_head = nn.Linear(backbone.num_features, 2) if va_head else None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``au_logits`` (B, 12), ``expr_logits`` (B, 8), ``va`` (B, 2) in [-1, 1] (when the
        model has a VA head)."""
        features = self.head_drop(self.backbone(images, mask_ratio=self.mask_ratio))
        out = {"au_logits": self.au_head(features), "expr_logits": self.expr_head(features)}
        if self.va_head is not None:
            out["va"] = torch.tanh(self.va_head(features))
        return out
