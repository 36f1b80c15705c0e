"""Masked CoTEX (ABAW4, section 3.3): two ViT views of the same image, each dropping its
own random subset of patch tokens, taught by cross-entropy plus a Jensen-Shannon term
that makes the views agree.

Dropping 75% of the tokens before the blocks makes a step ~4x cheaper, which the paper
spends on larger batches. At inference neither view is masked and their class
probabilities are averaged. The released code defaulted to mask ratio 0; here the
ratio is an explicit argument (0.75 in the paper's recipe).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .backbone import Backbone, prefixed_group_matcher


class MaskedCoTEX(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int, mask_ratio: float = 0.75,
                 head_dropout: float = 0.0):
        super().__init__()
        self.mask_ratio = backbone.check_mask_ratio(mask_ratio)
        self.views = nn.ModuleList([backbone, copy.deepcopy(backbone)])  # same initial weights
        self.head_drop = nn.Dropout(head_dropout)
        self.heads = nn.ModuleList([nn.Linear(backbone.num_features, num_classes)
                                    for _ in range(2)])
        self.heads[1].load_state_dict(self.heads[0].state_dict())

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training: ``expr_logits_1``/``_2`` from independently masked views.
        Always: ``expr_probs`` = mean of the views' softmax and ``expr_logits`` = its log."""
        ratio = self.mask_ratio if self.training else 0.0
        logits = [head(self.head_drop(view(images, mask_ratio=ratio)))
                  for view, head in zip(self.views, self.heads)]
        probs = (torch.softmax(logits[0], -1) + torch.softmax(logits[1], -1)) / 2
        return {"expr_logits_1": logits[0], "expr_logits_2": logits[1], "expr_probs": probs,
                "expr_logits": torch.log(probs.clamp_min(1e-12))}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        # both views share the block index, so block i of either view decays alike
        return prefixed_group_matcher(r"views\.\d+", self.views[0].group_matcher(coarse))

    @torch.jit.ignore
    def no_weight_decay(self):
        return {f"views.{i}.{k}" for i in range(2) for k in self.views[0].no_weight_decay()}
