"""MTCNN face detection (Zhang et al. 2016): three small CNNs in a cascade, with five
facial landmarks, written here in PyTorch and run on the trained weight files that the
``facenet-pytorch`` wheel ships (``facenet_pytorch/data/{pnet,rnet,onet}.pt``, plain state
dicts read with ``weights_only=True``; install it with ``pip install --no-deps
facenet-pytorch==2.6.0``: its own pins on torch/numpy are for its other modules, which
affectkit never imports).

- P-Net runs fully convolutionally over an image pyramid (scale factor 0.709, from the
  smallest face to find up): every 12x12 window scoring over ``thresholds[0]`` is a
  candidate, refined by its box regression; non-maximum suppression per scale and overall.
- R-Net rescores 24x24 crops of the squared candidates, O-Net 48x48 crops, which also gives
  the landmarks (eyes, nose, mouth corners).

Boxes are (x1, y1, x2, y2) in pixels of the input image; faces may extend beyond it (crops
are zero-padded, as the original's).
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.ops import nms, roi_align

from .align import box_iou

WEIGHTS_ENV = "AFFECTKIT_MTCNN_WEIGHTS"  # a folder with pnet.pt, rnet.pt, onet.pt


class PNet(nn.Module):
    """12x12 proposal network, fully convolutional (stride 2)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), 1)[:, 1], self.conv4_2(x)


def _flatten(x: torch.Tensor) -> torch.Tensor:
    # the weights come from Caffe models trained on transposed images: their dense layers
    # read the feature map in (W, H, C) order
    return x.permute(0, 3, 2, 1).reshape(len(x), -1)


class RNet(nn.Module):
    """24x24 refinement network."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten(self.prelu3(self.conv3(x)))))
        return torch.softmax(self.dense5_1(x), 1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """48x48 output network: score, box regression and the five landmarks."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2 = nn.Linear(256, 2), nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten(self.prelu4(self.conv4(x)))))
        return torch.softmax(self.dense6_1(x), 1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def weights_dir() -> Path:
    """Where the three weight files are: ``$AFFECTKIT_MTCNN_WEIGHTS``, else the installed
    ``facenet_pytorch`` package's ``data/`` (found without importing it)."""
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV])
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MTCNN weights not found: install the package that ships them "
            "(pip install --no-deps facenet-pytorch==2.6.0, done by scripts/setup.sh) or "
            f"set {WEIGHTS_ENV} to a folder with pnet.pt, rnet.pt, onet.pt")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def nms_min(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy suppression by intersection over the *smaller* box (MTCNN's last stage): a
    box mostly inside a better-scoring one is the same face, whatever their IoU."""
    boxes, scores = boxes.cpu(), scores.cpu()
    order = scores.argsort(descending=True)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(int(i))
        lt = torch.maximum(boxes[i, :2], boxes[rest, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = (rb - lt).clamp(min=0).prod(1)
        order = rest[inter / torch.minimum(area[i], area[rest]) <= threshold]
    return torch.tensor(keep, dtype=torch.long)


@dataclass
class Detection:
    box: np.ndarray  # (4,) x1, y1, x2, y2 in pixels
    score: float
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left / right mouth corner


class MTCNN(nn.Module):
    """``detect(image)``: faces of at least ``min_face`` pixels in an RGB image."""

    def __init__(self, weights: str | os.PathLike | None = None, min_face: int = 20,
                 thresholds=(0.6, 0.7, 0.7), factor: float = 0.709):
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        folder = Path(weights) if weights is not None else weights_dir()
        for name in ("pnet", "rnet", "onet"):
            path = folder / f"{name}.pt"
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise FileNotFoundError(f"{path}: MTCNN weight file missing") from None
            getattr(self, name).load_state_dict(state)
        self.min_face, self.thresholds, self.factor = min_face, tuple(thresholds), factor
        self.eval()

    @staticmethod
    def _normalise(x: torch.Tensor) -> torch.Tensor:
        return (x - 127.5) * 0.0078125

    def _scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / self.min_face
        side = min(h, w) * m
        scales = []
        while side >= 12:
            scales.append(m * self.factor ** len(scales))
            side *= self.factor
        return scales

    @staticmethod
    def _square(boxes: torch.Tensor) -> torch.Tensor:
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        side = torch.maximum(w, h)
        cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
        return torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)

    @staticmethod
    def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
        wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        return boxes + reg * wh

    def _crops(self, image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
        """``size`` x ``size`` crops of ``boxes`` (bilinear, averaged over each output
        pixel's area; outside the image: black, as the original's zero padding)."""
        rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], 1)
        return self._normalise(roi_align(image, rois, size, spatial_scale=1.0,
                                         sampling_ratio=-1, aligned=True))

    @torch.no_grad()
    def detect(self, image) -> list[Detection]:
        """``image``: (H, W, 3) uint8 RGB array or (3, H, W) tensor in [0, 255]."""
        img = self._image(image)
        h, w = img.shape[-2:]
        # stage 1: P-Net over the pyramid
        found = []
        for s in self._scales(h, w):
            hs, ws = math.ceil(h * s), math.ceil(w * s)
            prob, reg = self.pnet(self._normalise(
                nn.functional.interpolate(img, (hs, ws), mode="area")))
            ys, xs = torch.nonzero(prob[0] > self.thresholds[0], as_tuple=True)
            if len(ys) == 0:
                continue
            cell = torch.stack([xs, ys, xs, ys], 1).float() * 2 + img.new_tensor([0, 0, 12, 12])
            boxes = cell / s
            score = prob[0, ys, xs]
            keep = nms(boxes, score, 0.5)
            found.append((boxes[keep], score[keep], reg[0][:, ys, xs].T[keep]))
        if not found:
            return []
        boxes, score, reg = (torch.cat(t) for t in zip(*found))
        keep = nms(boxes, score, 0.7)
        return self._refine_stages(img, self._square(self._regress(boxes[keep], reg[keep])))

    @torch.no_grad()
    def refine(self, image, boxes) -> list[Detection]:
        """R-Net and O-Net on given boxes (e.g. the faces of the previous video frame)
        instead of P-Net's proposals: a face that moved by a fraction of its size is found
        again with its box and landmarks at a small part of a full detection's cost; a
        box with no face there any more gives nothing."""
        img = self._image(image)
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                                device=img.device)
        if not len(boxes):
            return []
        found = self._refine_stages(img, self._square(boxes))
        if len(found) < len(boxes):
            # a face that moved or grew may leave its tight box (R-Net was trained on
            # P-Net's loose ones): the boxes left without a face, once more 1.2x larger
            lost = boxes[[i for i, b in enumerate(boxes.cpu().numpy())
                          if not any(box_iou(b, f.box) > 0.3 for f in found)]]
            centre, half = (lost[:, :2] + lost[:, 2:]) / 2, (lost[:, 2:] - lost[:, :2]) / 2
            if len(lost):
                found += self._refine_stages(img, self._square(
                    torch.cat([centre - 1.2 * half, centre + 1.2 * half], 1)))
        return found

    def _image(self, image) -> torch.Tensor:
        x = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.array(image))
        if x.ndim != 3:
            raise ValueError(f"an RGB image, (H, W, 3) or (3, H, W), got shape {tuple(x.shape)}")
        if x.shape[-1] == 3 and x.shape[0] != 3:
            x = x.permute(2, 0, 1)
        return x.to(self.pnet.conv1.weight.device).float().unsqueeze(0)

    def _refine_stages(self, img: torch.Tensor, boxes: torch.Tensor) -> list[Detection]:
        # stage 2: R-Net
        score, reg = self.rnet(self._crops(img, boxes, 24))
        ok = score > self.thresholds[1]
        boxes, score, reg = boxes[ok], score[ok], reg[ok]
        if not len(boxes):
            return []
        keep = nms(boxes, score, 0.7)
        boxes = self._square(self._regress(boxes[keep], reg[keep]))
        # stage 3: O-Net, landmarks
        score, reg, marks = self.onet(self._crops(img, boxes, 48))
        ok = score > self.thresholds[2]
        boxes, score, reg, marks = boxes[ok], score[ok], reg[ok], marks[ok]
        if not len(boxes):
            return []
        wh = boxes[:, 2:] - boxes[:, :2]
        points = torch.stack([boxes[:, :1] + wh[:, :1] * marks[:, :5],
                              boxes[:, 1:2] + wh[:, 1:] * marks[:, 5:]], -1)  # (N, 5, 2)
        boxes = self._regress(boxes, reg)
        keep = nms_min(boxes, score, 0.7)
        boxes, score, points = boxes.cpu(), score.cpu(), points.cpu()
        return [Detection(boxes[i].numpy(), float(score[i]), points[i].numpy())
                for i in keep.tolist()]
