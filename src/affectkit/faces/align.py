"""Similarity alignment of a detected face to the geometry of a model's training crops.

A model sees faces the way its training crops framed them; a face from a photo or video is
brought to that framing by the least-squares similarity transform (rotation, uniform scale,
translation: Umeyama 1991) that maps its five landmarks onto the template's.

Templates, as fractions of the crop's side (left eye, right eye, nose, left and right mouth
corner, in the image's left-to-right order):

- ``fer48``: FER2013 / CK+48 crops, the shipped default model's training faces. Measured
  here: MTCNN on 389 of those faces (200 CK+48, 189 FER2013 Training, upscaled to 192 px),
  median landmark positions, made left-right symmetric.
- ``arcface112``: the common 112x112 five-point template (InsightFace), used for runs
  trained on ABAW's 112 px ``cropped_aligned`` faces, whose exact template the challenge
  does not publish.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

TEMPLATES = {
    "fer48": np.array([[0.312, 0.395], [0.688, 0.395], [0.500, 0.597], [0.343, 0.780],
                       [0.657, 0.780]]),
    "arcface112": np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                            [41.5493, 92.3655], [70.7299, 92.2041]]) / 112.0,
}


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix ``M`` of the similarity transform minimising
    sum ||M [src_i, 1] - dst_i||^2 (Umeyama's closed form, no reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1
    rot = u @ fix @ vt
    var = (s ** 2).sum() / len(src)
    scale = np.trace(np.diag(sig) @ fix) / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def align_face(image: np.ndarray | Image.Image, landmarks: np.ndarray, size: int,
               template: str = "fer48") -> Image.Image:
    """The ``size`` x ``size`` crop of ``image`` with ``landmarks`` (5, 2) moved onto the
    ``template`` (bilinear; outside the image: black)."""
    if template not in TEMPLATES:
        raise ValueError(f"face template {template!r}: one of {sorted(TEMPLATES)}")
    m = similarity(landmarks, TEMPLATES[template] * size)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]  # output pixel -> input pixel
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    return im.transform((size, size), Image.Transform.AFFINE, inv.ravel().tolist(),
                        resample=Image.Resampling.BILINEAR)


def box_crop(image: np.ndarray | Image.Image, box, size: int, margin: float = 0.0
             ) -> Image.Image:
    """A square crop around ``box`` (x1, y1, x2, y2) grown by ``margin`` of its side, for
    a face without landmarks."""
    x1, y1, x2, y2 = map(float, box)
    side = max(x2 - x1, y2 - y1) * (1 + margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    return im.transform((size, size), Image.Transform.EXTENT,
                        (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2),
                        resample=Image.Resampling.BILINEAR)


def box_iou(a, b) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2); 0 for empty ones."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
