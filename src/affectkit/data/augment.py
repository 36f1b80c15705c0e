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


ERASE_AREA = (0.02, 0.2)  # random erasing: box area as a fraction of the face
ERASE_RATIO = (0.3, 3.3)  # and its aspect ratio (Zhong et al. 2020's defaults)


def train_transform(size: int = 224, resize: int = 232, jitter: float = 0.4, hue: float = 0.1,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, rotate: float = 0.0,
                    erase: float = 0.0) -> v2.Compose:
    """The ABAW4 paper's training transform, per sample on uint8 (3, H, W) tensors, plus
    the small-face recipe's options: rotation by up to ``rotate`` degrees and random
    erasing with probability ``erase`` (FER2013's best single models use both).

    Colour jitter runs before the upscale, on the 112 px crop: its ops are per pixel, so
    the result is the same up to clamping and the contrast mean (whole face rather than
    the crop), at 2.5x the throughput (benchmarks/bench_data.py).
    """
    ops = [v2.ColorJitter(jitter, jitter, jitter, hue)] if (jitter or hue) else []
    ops += [v2.RandomRotation(rotate)] if rotate else []
    ops += [v2.Resize(resize, antialias=True), v2.RandomCrop(size), v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    ops += [v2.RandomErasing(erase, ERASE_AREA, ERASE_RATIO, value=0)] if erase else []
    return v2.Compose(ops)


def train_batch_augment(size: int = 224, resize: int = 232, jitter: float = 0.4,
                        hue: float = 0.1, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        rotate: float = 0.0, erase: float = 0.0) -> BatchAugment:
    """``train_transform``'s recipe for whole uint8 batches on the training device: a
    random crop of ``size / resize`` of the face's side, resampled to ``size`` (what resize
    then random crop does), flip, rotation, jitter, erasing, normalise."""
    side = (size / resize) ** 2
    return BatchAugment(size, scale=(side, side), ratio=(1.0, 1.0), brightness=jitter,
                        contrast=jitter, saturation=jitter, hue=hue, mean=mean, std=std,
                        rotate=rotate, erase=erase)


def eval_transform(size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   resize: int | None = None) -> v2.Compose:
    """Resize the whole face to ``size``; with ``resize``, to ``resize`` and then the
    centre ``size`` crop (the faces' scale in training)."""
    ops = [v2.Resize(resize, antialias=True), v2.CenterCrop(size)] if resize else \
        [v2.Resize((size, size), antialias=True)]
    return v2.Compose([*ops, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def input_stats(d) -> tuple[tuple, tuple]:
    """(mean, std) a ``DataConfig`` normalises with: its own, else ImageNet's (what every
    run saved before ``data.mean`` existed was trained with)."""
    if d.mean is None or d.std is None:
        return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
    return tuple(d.mean), tuple(d.std)


def transforms_for(d, batched: bool = False):
    """(train, eval) transforms of a ``DataConfig``: the one place its augmentation and
    normalisation keys become transforms. ``batched``: the train one is a
    ``BatchAugment`` for the device."""
    mean, std = input_stats(d)
    kw = {"jitter": d.jitter, "hue": d.hue, "rotate": d.rotate, "erase": d.erase,
          "mean": mean, "std": std}
    train = (train_batch_augment if batched else train_transform)(d.img_size, d.resize, **kw)
    return train, eval_transform(d.img_size, mean, std, resize=d.resize if d.eval_crop else None)


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
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, rotate: float = 0.0,
                 erase: float = 0.0):
        super().__init__()
        self.size, self.scale, self.ratio, self.flip = size, scale, ratio, flip
        self.rotate, self.erase = rotate, erase
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
        angle = self._uniform(b, -self.rotate, self.rotate, x) * (math.pi / 180)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # input coords = diag(w, h) . R(angle) . diag(sign, 1) . output coords + centre
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = w * cos * sign, -w * sin, cx
        theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = h * sin * sign, h * cos, cy
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

    def erasing(self, x: torch.Tensor) -> torch.Tensor:
        """Random erasing: with probability ``erase`` a box of ``ERASE_AREA`` of the face,
        aspect ``ERASE_RATIO``, set to 0 (the mean, on normalised input)."""
        b, _, hgt, wid = x.shape
        area = self._uniform(b, *ERASE_AREA, x)
        r = torch.exp(self._uniform(b, math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), x))
        bh, bw = (area * r).sqrt().clamp(max=1.0), (area / r).sqrt().clamp(max=1.0)
        y0 = torch.rand(b, device=x.device) * (1 - bh)
        x0 = torch.rand(b, device=x.device) * (1 - bw)
        ys = (torch.arange(hgt, device=x.device) + 0.5) / hgt
        xs = (torch.arange(wid, device=x.device) + 0.5) / wid
        inside_y = (ys[None] >= y0[:, None]) & (ys[None] < (y0 + bh)[:, None])  # (b, H)
        inside_x = (xs[None] >= x0[:, None]) & (xs[None] < (x0 + bw)[:, None])  # (b, W)
        on = torch.rand(b, device=x.device) < self.erase
        box = inside_y[:, :, None] & inside_x[:, None, :] & on[:, None, None]
        return x.masked_fill(box[:, None], 0.0)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        # jitter at input resolution (per-pixel ops, ~19x cheaper than after the upscale)
        x = self.crop_flip(self.jitter(x))
        x = (x - self.mean) / self.std
        return self.erasing(x) if self.erase else x


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
