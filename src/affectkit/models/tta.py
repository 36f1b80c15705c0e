"""Test-time augmentation: a model's outputs averaged over views of each face.

``flip``: the face and its mirror image. ``ten-crop``: the four corner crops and the centre
crop of the training crop size, and their mirror images, from faces resized to the
training ``resize`` (the FER2013 literature's standard evaluation, worth 1-2 points of
accuracy there). Logits and VA values are averaged (then turned into probabilities as
usual): the views go through the model as one batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms.v2.functional import ten_crop

TTA_MODES = ("flip", "ten-crop")


class TestTimeAugment(nn.Module):
    def __init__(self, model: nn.Module, mode: str, size: int | None = None):
        super().__init__()
        if mode not in TTA_MODES:
            raise ValueError(f"test-time augmentation {mode!r}: one of {TTA_MODES}")
        if mode == "ten-crop" and not size:
            raise ValueError("ten-crop needs the crop size (the model's input size)")
        self.model, self.mode, self.size = model, mode, size

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.mode == "flip":
            return [x, x.flip(-1)]
        s, (h, w) = self.size, x.shape[-2:]
        if h < s or w < s:
            raise ValueError(f"ten-crop of {s} px from {h}x{w} px faces: the input must be "
                             "at least the crop size")
        return list(ten_crop(x, [s]))  # corners + centre of the face, then of its mirror

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        views = self.views(x)
        out = self.model(torch.cat(views))
        n = len(views)
        return {k: v.unflatten(0, (n, x.shape[0])).mean(0) for k, v in out.items()
                if torch.is_tensor(v) and v.is_floating_point() and v.shape[0] == n * x.shape[0]}
