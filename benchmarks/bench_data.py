"""Data-path throughput: JPEG decode, the packed cache, per-sample vs batched augmentation.

Measures images/s in one process, each path after a short warm-up, on synthetic
112x112 JPEG face crops written by ``affectkit.data.sample.write_sample``:

1. raw decode: PIL, torchvision ``decode_image`` (``affectkit.data.images.read_rgb``),
   and ``cv2.imdecode`` when OpenCV is installed;
2. reads from the packed uint8 cache (``pack_images`` + ``PackedImages.get``,
   batches of 256 in random order), and how long packing took;
3. decode + the paper's per-sample CPU augmentation at 224 (``train_transform(224, 232)``)
   through ``FaceDataset`` + ``DataLoader`` (batch 64, 0 and 1 workers), the same
   without colour jitter, and random-resized-crop at 112 without jitter;
4. packed cache + ``FaceDataset(packed=...)`` + ``DataLoader`` with no per-sample
   transform, then ``BatchAugment(224)`` on each batch (on CUDA when available);
5. ``BatchAugment(224)`` alone on a resident uint8 batch (64 on the CPU, 256 on CUDA if any).

Why: on 112 px crops decoding is cheap; upscaling to 224 and colour-jittering
each sample on the CPU is the expensive part. The packed cache removes decode,
and batched (GPU) augmentation removes the per-sample CPU cost. Absolute times
on a shared machine are noisy: compare the ratios printed by one run. Nothing
here asserts a time.

    python benchmarks/bench_data.py [--images N] [--quick] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2

from affectkit.data.augment import IMAGENET_MEAN, IMAGENET_STD, BatchAugment, train_transform
from affectkit.data.dataset import FaceDataset, PackedImages, pack_images
from affectkit.data.images import read_rgb
from affectkit.data.sample import write_sample
from affectkit.data.table import FaceTable, make_table_frame
from affectkit.io import atomic_write_json

try:
    import cv2
except ImportError:  # optional: its decode row is left out
    cv2 = None

BATCH = 64  # DataLoader batch
READ_BATCH = 256  # packed reads, and the resident BatchAugment batch on CUDA


def make_table(root: Path, n: int) -> FaceTable:
    """Write the synthetic ABAW sample (all splits) and table its first ``n`` face crops."""
    # each of the sample's 8 videos gets at least 14/15 * frames_per_video crops
    write_sample(root, frames_per_video=max(8, -(-n * 15 // (8 * 14))))
    crops = root / "cropped_aligned"
    images = sorted(p.relative_to(crops).as_posix() for p in crops.glob("*/*.jpg"))[:n]
    return FaceTable(make_table_frame(images), crops, source=f"{root} (synthetic)")


def rate(run: Callable[[int], object], n: int, min_s: float, passes: int) -> list[float]:
    """Median, min and max img/s of ``run(k)`` (which handles the first k images).

    After a warm-up over 64 images, passes over k = n / 4 images (128 at least) are
    timed one by one until there are ``passes`` of them and ``min_s`` seconds have
    passed; the median shrugs off a pass slowed by a neighbour on a shared machine.
    """
    run(min(n, BATCH))
    k = min(n, max(2 * BATCH, n // 4))
    rates: list[float] = []
    total = 0.0
    while len(rates) < passes or total < min_s:
        t0 = time.perf_counter()
        run(k)
        elapsed = time.perf_counter() - t0
        rates.append(k / elapsed)
        total += elapsed
    return [statistics.median(rates), min(rates), max(rates)]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def decode_run(decode: Callable[[str], object], paths: list[str]) -> Callable[[int], None]:
    def run(k: int) -> None:
        for p in paths[:k]:
            decode(p)
    return run


def pil_decode(path: str):
    with Image.open(path) as im:
        return im.convert("RGB")


def cv2_decode(path: str):
    return cv2.cvtColor(cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)


def packed_read_run(packed: PackedImages, seed: int = 0) -> Callable[[int], None]:
    rng = np.random.default_rng(seed)

    def run(k: int) -> None:
        order = rng.permutation(len(packed))[:k]
        for i in range(0, k, READ_BATCH):
            packed.get(order[i:i + READ_BATCH])
    return run


def loader_run(dataset: FaceDataset, workers: int, augment: BatchAugment | None = None,
               device: str = "cpu") -> Callable[[int], None]:
    """One shuffled epoch over the first k items (worker start-up included);
    ``augment`` runs on each batch, on ``device``."""
    def run(k: int) -> None:
        data = dataset if k >= len(dataset) else Subset(dataset, range(k))
        loader = DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=workers,
                            pin_memory=device == "cuda")
        for batch in loader:
            if augment is not None:
                augment(batch["image"].to(device, non_blocking=True))
        sync(device)
    return run


def resident_run(augment: BatchAugment, x: torch.Tensor, device: str) -> Callable[[int], None]:
    def run(k: int) -> None:
        for _ in range(0, k, len(x)):
            augment(x)
        sync(device)
    return run


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, help="JPEGs to write (default 2000; 256 with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: few images, short timings")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in this process (default 1, like a loader worker)")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    n = args.images or (256 if args.quick else 2000)
    min_s, passes = (0.2, 2) if args.quick else (1.0, 4)
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    command = shlex.join(["python", *sys.argv])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"command: {command}")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"cv2 {cv2.__version__ if cv2 else 'not installed'}; {cores} cores, "
          f"{torch.get_num_threads()} torch threads; device: "
          f"{torch.cuda.get_device_name() if device == 'cuda' else 'cpu (no CUDA)'}")

    results: dict[str, list[float]] = {}  # name -> [median, min, max] img/s

    def record(name: str, run: Callable[[int], object], count: int = 0) -> float:
        results[name] = med, lo, hi = rate(run, count or n, min_s, passes)
        print(f"  {name:<62} {med:>9,.0f} img/s ({lo:,.0f}-{hi:,.0f})", flush=True)
        return med

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        t0 = time.perf_counter()
        table = make_table(Path(tmp) / "sample", n)
        n = len(table)
        print(f"data: {n} synthetic 112x112 JPEGs written in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        packed = pack_images(table, Path(tmp) / "pack" / "train.npy", size=112)
        pack_s = time.perf_counter() - t0
        print(f"pack: {n} images in {pack_s:.2f} s ({n / pack_s:,.0f} img/s, "
              f"{packed.path.stat().st_size / 2**20:.1f} MiB)\n")

        paths = [str(table.image_root / i) for i in table.images]
        base = record("decode: PIL open+convert", decode_run(pil_decode, paths))
        tv = record("decode: torchvision decode_image (read_rgb)", decode_run(read_rgb, paths))
        if cv2 is not None:
            record("decode: cv2.imdecode + BGR->RGB", decode_run(cv2_decode, paths))
        packed_rate = record(f"packed: PackedImages.get, random batches of {READ_BATCH}",
                             packed_read_run(packed))

        norm = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        rrc112 = v2.Compose([v2.RandomResizedCrop(112, antialias=True),
                             v2.RandomHorizontalFlip(), *norm])
        per_sample = {
            "paper aug 224 (resize 232, crop, flip, jitter)": train_transform(224, 232),
            "same without colour jitter": train_transform(224, 232, jitter=0, hue=0),
            "random-resized-crop 112, flip, no jitter": rrc112,
        }
        paper = []
        for label, transform in per_sample.items():
            dataset = FaceDataset(table, transform=transform)
            for workers in (0, 1):
                r = record(f"decode + {label}, {workers}w", loader_run(dataset, workers))
                if label.startswith("paper"):
                    paper.append(r)

        dataset = FaceDataset(table, packed=packed)
        augment = BatchAugment(224).to(device)
        record("packed + DataLoader, no aug, 0w", loader_run(dataset, 0))
        batched = [record(f"packed + DataLoader + BatchAugment(224) on {device}, {w}w",
                          loader_run(dataset, w, augment, device)) for w in (0, 1)]
        # resident batch: the loader's 64 on the CPU (256 only adds page faults there), 256 on CUDA
        for dev, size in (("cpu", BATCH), ("cuda", READ_BATCH))[:1 + (device == "cuda")]:
            x = packed.get(np.arange(min(size, n))).contiguous().to(dev)
            record(f"BatchAugment(224) alone, {dev}, resident uint8 batch of {len(x)}",
                   resident_run(BatchAugment(224).to(dev), x, dev), len(x) * 8)

    print(f"\n{'path':<64} {'img/s':>9} {'min-max of passes':>19} {'vs PIL':>7}")
    for name, (med, lo, hi) in results.items():
        print(f"{name:<64} {med:>9,.0f} {f'{lo:,.0f}-{hi:,.0f}':>19} {med / base:>6.2f}x")
    ratios = {"packed read / decode (read_rgb)": packed_rate / tv,
              "packed + batched aug / CPU per-sample paper aug (best of 0w, 1w)":
                  max(batched) / max(paper)}
    print()
    for name, r in ratios.items():
        print(f"{name}: {r:.1f}x")
    report = {"command": command, "torch": torch.__version__,
              "torchvision": torchvision.__version__, "cores": cores,
              "torch_threads": torch.get_num_threads(), "device": device, "images": n,
              "min_seconds": min_s, "passes": passes, "pack_seconds": pack_s,
              "img_per_s_median_min_max": results,
              "ratios": ratios}
    if args.json:
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
