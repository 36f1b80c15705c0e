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
    def __init__(self, backbone: Backbone, mask_ratio: float = 0.0, head_dropout: float = 0.0):
        super().__init__(backbone, mask_ratio, head_dropout)
        self.va_head = nn.Linear(backbone.num_features, 2)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``au_logits`` (B, 12), ``expr_logits`` (B, 8), ``va`` (B, 2) in [-1, 1]."""
        features = self.head_drop(self.backbone(images, mask_ratio=self.mask_ratio))
        return {"au_logits": self.au_head(features), "expr_logits": self.expr_head(features),
                "va": torch.tanh(self.va_head(features))}
