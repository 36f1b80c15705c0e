"""Image decoding to RGB uint8 tensors, and checks for images that are not there.

torchvision's libjpeg-turbo decoder is the fast path (about 1.5x PIL on 112 px
crops); PIL is the fallback for what it cannot read (CMYK, odd PNG modes),
so grayscale, RGBA and CMYK files all come out as 3-channel RGB.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import to_dtype

from .errors import CorruptImageError, MissingImagesError
from .table import FaceTable


def decode_rgb(data: bytes, path: str | Path = "<bytes>") -> torch.Tensor:
    """Encoded image bytes -> (3, H, W) uint8 RGB tensor; undecodable -> CorruptImageError."""
    if not data:
        raise CorruptImageError(path, "empty file")
    try:
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                             mode=ImageReadMode.RGB)
        if image.ndim == 4:  # animated GIF / multi-frame: the first frame
            image = image[0]
        if image.dtype != torch.uint8:  # 16-bit PNG
            image = to_dtype(image, torch.uint8, scale=True)
        return image
    except RuntimeError:
        pass
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise CorruptImageError(path, str(e) or type(e).__name__) from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def read_rgb(path: str | os.PathLike) -> torch.Tensor:
    """Read and decode one image file as (3, H, W) uint8 RGB."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise MissingImagesError(None, [str(path)], Path(path).parent) from None
    return decode_rgb(data, path)


def find_missing(table: FaceTable) -> list[str]:
    """Images of ``table`` not on disk, found with one listing per folder (not a stat per row)."""
    if table.image_root is None:
        return []
    listings: dict[str, set[str]] = {}
    missing = []
    for image in table.df["image"]:
        folder, _, name = image.rpartition("/")
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(table.image_root / folder))
            except (FileNotFoundError, NotADirectoryError):
                listings[folder] = set()
        if name not in listings[folder]:
            missing.append(image)
    return missing


def drop_missing(table: FaceTable, missing: str = "error") -> FaceTable:
    """Fail on missing images (default), or drop them and count them: never silently."""
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    absent = find_missing(table)
    if not absent:
        return table
    if missing == "error":
        raise MissingImagesError(table.source, absent, table.image_root)
    keep = np.flatnonzero(~table.df["image"].isin(set(absent)).to_numpy())
    out = table.subset(keep)
    out.skipped["missing images"] = out.skipped.get("missing images", 0) + len(absent)
    return out
