"""Torch dataset over a ``FaceTable``, and the packed uint8 image cache.

Decoding a 112 px JPEG costs ~0.15 ms, but a split of 142K of them still
means 20+ s of decode per epoch per core; the packed cache (one memory-mapped
``(N, S, S, 3)`` uint8 array per split) turns that into a memcpy, and leaves
the CPU free for augmentation, or hands raw bytes to ``BatchAugment`` on the GPU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from ..io import atomic_write, atomic_write_json
from .errors import DataError
from .images import drop_missing, read_rgb
from .table import FaceTable

PACK_FORMAT = "affectkit-packed-v1"


class PackedImages:
    """Read side of a packed split: ``name.npy`` (N, S, S, 3) uint8 + ``name.json`` index."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).with_suffix(".npy")
        meta_path = self.path.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise DataError(meta_path, None, "packed index missing (pack again)") from None
        if meta.get("format") != PACK_FORMAT:
            raise DataError(meta_path, None, f"not an affectkit pack (format {meta.get('format')})")
        self.images: list[str] = meta["images"]
        self.size: int = meta["size"]
        self.array = np.load(self.path, mmap_mode="r")
        if self.array.shape != (len(self.images), self.size, self.size, 3):
            raise DataError(self.path, None, f"array shape {self.array.shape} does not match its "
                            f"index ({len(self.images)} images of {self.size} px)")
        self.row = {name: i for i, name in enumerate(self.images)}

    def __len__(self) -> int:
        return len(self.images)

    def rows_for(self, images: list[str]) -> np.ndarray:
        absent = [i for i in images if i not in self.row]
        if absent:
            raise DataError(self.path, None, f"{len(absent)} image(s) not in the pack, e.g. "
                                             f"{absent[:3]}")
        return np.fromiter((self.row[i] for i in images), np.int64, len(images))

    def get(self, rows) -> torch.Tensor:
        """(3, S, S) for one row, (B, 3, S, S) for several; uint8, channels first."""
        x = self.array[rows]
        if isinstance(rows, (int, np.integer, slice)):
            x = np.array(x)  # a view of the read-only memmap: copy (fancy indexing already did)
        x = torch.from_numpy(x)
        return x.permute(2, 0, 1) if x.ndim == 3 else x.permute(0, 3, 1, 2)


def resize_square(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-2:] == (size, size):
        return image
    x = F.interpolate(image[None].float(), size=(size, size), mode="bilinear",
                      antialias=True, align_corners=False)
    return x[0].round().clamp(0, 255).to(torch.uint8)


def pack_images(table: FaceTable, path: str | os.PathLike, size: int = 112,
                progress: Callable[[int], None] | None = None) -> PackedImages:
    """Decode every image of ``table`` once into a memory-mappable array (atomic write)."""
    path = Path(path).with_suffix(".npy")
    table = drop_missing(table, "error")
    n = len(table)

    def write(f):
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (n, size, size, 3)})
        for i, image in enumerate(table.images):
            rgb = resize_square(read_rgb(table.image_root / image), size)
            f.write(rgb.permute(1, 2, 0).contiguous().numpy().tobytes())
            if progress:
                progress(i)

    atomic_write(path, write)
    atomic_write_json(path.with_suffix(".json"), {
        "format": PACK_FORMAT, "size": size, "source": table.source, "images": table.images})
    return PackedImages(path)


class FaceDataset(Dataset):
    """Items: ``image`` (uint8 (3,H,W), or what ``transform`` makes of it), ``va`` (2,) float,
    ``expression`` () long, ``au`` (K,) float, ``index``; sentinels mark missing labels."""

    def __init__(self, table: FaceTable, transform: Callable | None = None,
                 packed: PackedImages | None = None, missing: str = "error"):
        self.table = table if packed is not None else drop_missing(table, missing)
        self.transform = transform
        self.packed = packed
        self.rows = packed.rows_for(self.table.images) if packed is not None else None
        self.va = torch.from_numpy(self.table.va.copy())
        self.expression = torch.from_numpy(self.table.expression.copy())
        self.au = torch.from_numpy(self.table.au.astype(np.float32))
        self.paths = [str(self.table.image_root / i) for i in self.table.images] \
            if packed is None else None

    def __len__(self) -> int:
        return len(self.table)

    def load(self, i: int) -> torch.Tensor:
        return self.packed.get(int(self.rows[i])) if self.packed is not None \
            else read_rgb(self.paths[i])

    def __getitem__(self, i: int) -> dict:
        image = self.load(i)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "va": self.va[i], "expression": self.expression[i],
                "au": self.au[i], "index": i}

    def name(self, i: int) -> str:
        """Where item ``i`` comes from (its file), for error messages."""
        return self.paths[i] if self.paths is not None else \
            f"{self.packed.path}[{int(self.rows[i])}] ({self.table.images[i]})"

    def collate(self, items: list[dict]) -> dict:
        """``default_collate``, with an error naming two images of different sizes where a
        batch of un-resized images (batched augmentation) cannot be stacked."""
        shapes = {tuple(it["image"].shape) for it in items}
        if len(shapes) > 1:
            first = items[0]
            other = next(it for it in items if it["image"].shape != first["image"].shape)
            raise DataError(self.name(other["index"]), None,
                            f"image of size {tuple(other['image'].shape)} in a batch with "
                            f"{self.name(first['index'])} of size "
                            f"{tuple(first['image'].shape)}: batched augmentation needs one "
                            "size; set data.load_size (e.g. 112) or read a pack "
                            "(affectkit data pack)")
        return default_collate(items)


class LoadResize:
    """Per-sample part of batched augmentation: uint8 in, uint8 square ``size`` out (or
    as is when ``size`` is None): the rest happens on the training device."""

    def __init__(self, size: int | None = None):
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image if self.size is None else resize_square(image, self.size)
