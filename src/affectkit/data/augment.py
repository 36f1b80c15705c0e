"""Augmentation: per-sample CPU transforms, and the same recipe batched on the GPU.

The papers' recipe (resize 112 -> 232, random crop 224, flip, colour jitter) is
the expensive part of the input pipeline on the CPU (~200 img/s per core), far
below what a ViT step with 75% of its tokens dropped consumes on one GPU.
``BatchAugment`` does crop, flip and jitter for a whole uint8 batch in a few
tensor ops on whatever device the batch is on, with independent random
parameters per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torchvision.transforms import v2

# the one definition affectkit uses (timm's): MAE, DAN and timm's ImageNet models share it
IMAGENET_MEAN, IMAGENET_STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def train_transform(size: int = 224, resize: int = 232, jitter: float = 0.4, hue: float = 0.1,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """The ABAW4 paper's training transform, per sample on uint8 (3, H, W) tensors.

    Colour jitter runs before the upscale, on the 112 px crop: its ops are per pixel, so
    the result is the same up to clamping and the contrast mean (whole face rather than
    the crop), at 2.5x the throughput (benchmarks/bench_data.py).
    """
    ops = [v2.ColorJitter(jitter, jitter, jitter, hue)] if (jitter or hue) else []
    ops += [v2.Resize(resize, antialias=True), v2.RandomCrop(size), v2.RandomHorizontalFlip()]
    return v2.Compose([*ops, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def train_batch_augment(size: int = 224, resize: int = 232, jitter: float = 0.4,
                        hue: float = 0.1, mean=IMAGENET_MEAN, std=IMAGENET_STD
                        ) -> BatchAugment:
    """``train_transform``'s recipe for whole uint8 batches on the training device: a
    random crop of ``size / resize`` of the face's side, resampled to ``size`` (what resize
    then random crop does), flip, jitter, normalise."""
    side = (size / resize) ** 2
    return BatchAugment(size, scale=(side, side), ratio=(1.0, 1.0), brightness=jitter,
                        contrast=jitter, saturation=jitter, hue=hue, mean=mean, std=std)


def eval_transform(size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    return v2.Compose([v2.Resize((size, size), antialias=True),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


# RGB <-> YIQ: hue rotation is a rotation of the (I, Q) chroma plane.
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114],
                         [0.596, -0.274, -0.322],
                         [0.211, -0.523, 0.312]])
_GRAY = torch.tensor([0.299, 0.587, 0.114])


class BatchAugment(nn.Module):
    """Random resized crop + flip + colour jitter + normalise, batched, per-sample random.

    ``scale`` is the crop's area fraction of the input; the paper's resize-232 /
    crop-224 recipe is ``scale=((224/232)**2,) * 2, ratio=(1, 1)`` (the default).
    Input uint8 (B, 3, H, W) on any device; output float (B, 3, size, size).
    """

    def __init__(self, size: int = 224, scale=((224 / 232) ** 2, (224 / 232) ** 2),
                 ratio=(1.0, 1.0), flip: float = 0.5, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.size, self.scale, self.ratio, self.flip = size, scale, ratio, flip
        self.brightness, self.contrast, self.saturation, self.hue = (
            brightness, contrast, saturation, hue)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb2yiq", _RGB2YIQ.clone(), persistent=False)
        # inverted once here: torch.linalg.inv per batch would make the CPU wait for the GPU
        self.register_buffer("yiq2rgb", torch.linalg.inv(_RGB2YIQ), persistent=False)
        self.register_buffer("gray", _GRAY.clone().view(1, 3, 1, 1), persistent=False)

    def _uniform(self, n, low, high, like):
        return torch.rand(n, device=like.device, dtype=torch.float32) * (high - low) + low

    def crop_flip(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        area = self._uniform(b, *self.scale, x)
        log_r = self._uniform(b, math.log(self.ratio[0]), math.log(self.ratio[1]), x)
        r = torch.exp(log_r)
        w = torch.sqrt(area * r).clamp(max=1.0)  # crop width / image width
        h = torch.sqrt(area / r).clamp(max=1.0)
        cx = (torch.rand(b, device=x.device) * 2 - 1) * (1 - w)  # crop centre in [-1, 1]
        cy = (torch.rand(b, device=x.device) * 2 - 1) * (1 - h)
        sign = torch.where(torch.rand(b, device=x.device) < self.flip, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = F.affine_grid(theta, [b, 3, self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        view = (b, 1, 1, 1)
        if self.brightness:
            x = (x * self._uniform(b, 1 - self.brightness, 1 + self.brightness, x).view(view))
            x = x.clamp(0, 1)
        if self.contrast:
            m = (x * self.gray).sum(1, keepdim=True).mean((2, 3), keepdim=True)
            c = self._uniform(b, 1 - self.contrast, 1 + self.contrast, x).view(view)
            x = ((x - m) * c + m).clamp(0, 1)
        if self.saturation:
            g = (x * self.gray).sum(1, keepdim=True)
            s = self._uniform(b, 1 - self.saturation, 1 + self.saturation, x).view(view)
            x = ((x - g) * s + g).clamp(0, 1)
        if self.hue:
            angle = self._uniform(b, -self.hue, self.hue, x) * 2 * math.pi
            cos, sin = torch.cos(angle), torch.sin(angle)
            rot = torch.zeros(b, 3, 3, device=x.device)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
            m = self.yiq2rgb @ rot @ self.rgb2yiq  # (b, 3, 3)
            x = torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)
        return x

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        # jitter at input resolution (per-pixel ops, ~19x cheaper than after the upscale)
        x = self.crop_flip(self.jitter(x))
        return (x - self.mean) / self.std


class BatchResize(nn.Module):
    """Evaluation counterpart of ``BatchAugment``: resize the whole batch and normalise."""

    def __init__(self, size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              antialias=True, align_corners=False)
        return (x - self.mean) / self.std
