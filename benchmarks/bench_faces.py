"""Face detectors for ``affectkit analyze``, chosen by measurement: recall, false positives
and time per frame on real faces.

- ``pasted``: CK+ faces (real, 48 px crops upscaled) pasted two per 640x480 frame at known
  places, at several sizes (50 px: the small faces the issue asks about), on random flat
  backgrounds; a face counts as found when a detection overlaps it with IoU > 0.4;
- ``afew``: the 42 real AFEW-VA movie frames (720x576, one face), found when a detection
  overlaps the box of its 68 annotated landmarks with IoU > 0.5.

Detectors: affectkit's MTCNN (``faces.mtcnn``, the default) and, when OpenCV is installed
(``pip install "opencv-python-headless<5"``: OpenCV 5 dropped the cascades; not a
dependency of affectkit), its Haar cascade
``haarcascade_frontalface_default.xml`` (scale 1.1, 5 neighbours, 20 px minimum), the
offline fallback other toolkits use. MediaPipe's wheel ships no face-detection model, so it
cannot run offline and is not measured.

    python benchmarks/bench_faces.py [--faces 40] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from affectkit.faces.align import box_iou
from affectkit.faces.mtcnn import MTCNN
from affectkit.io import atomic_write_json

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = (50, 80, 140, 220)


def detectors() -> dict:
    out = {}
    mtcnn = MTCNN()
    out["mtcnn"] = lambda im: [d.box for d in mtcnn.detect(im)]
    try:
        import cv2
    except ImportError:
        print("OpenCV not installed: its Haar cascade is not measured")
        return out
    haar = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def run_haar(im):
        gray = cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY)
        found = haar.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(20, 20))
        return [np.array([x, y, x + w, y + h], float) for x, y, w, h in found]

    out["opencv-haar"] = run_haar
    return out


def pasted_frames(n_faces: int, size: int, seed: int):
    files = sorted((DATA / "ckplus48" / "images").glob("*/*.png"))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(files), n_faces, replace=False)
    for i in range(0, n_faces, 2):
        canvas = np.zeros((480, 640, 3), np.uint8) + rng.integers(30, 225, 3).astype(np.uint8)
        truth = []
        for j, k in enumerate(picks[i:i + 2]):
            face = np.asarray(Image.open(files[k]).convert("RGB").resize((size, size)))
            x = int(rng.integers(0, 320 - size)) + 320 * j if size < 320 else 0
            y = int(rng.integers(0, 480 - size))
            canvas[y:y + size, x:x + size] = face
            truth.append((x, y, x + size, y + size))
        yield canvas, truth


def afew_frames():
    clip = DATA / "afew_va_clip001"
    marks = json.loads((clip / "001.json").read_text())["frames"]
    for name in sorted(marks):
        lm = np.asarray(marks[name]["landmarks"], float)
        yield (np.asarray(Image.open(clip / f"{name}.png").convert("RGB")),
               [np.concatenate([lm.min(0), lm.max(0)])])


def measure(detect, frames, min_iou: float) -> dict:
    found = total = false = n = 0
    seconds = 0.0
    for image, truth in frames:
        t0 = time.perf_counter()
        boxes = detect(image)
        seconds += time.perf_counter() - t0
        n += 1
        total += len(truth)
        hit = [any(box_iou(b, t) > min_iou for b in boxes) for t in truth]
        found += sum(hit)
        false += sum(not any(box_iou(b, t) > min_iou for t in truth) for b in boxes)
    return {"recall": found / total, "faces": total, "false_per_frame": false / n,
            "ms_per_frame": 1000 * seconds / n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=40, help="pasted faces per size")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"$ python benchmarks/bench_faces.py {' '.join(argv or sys.argv[1:])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results: dict = {}
    for name, detect in detectors().items():
        rows = {f"pasted {s} px": measure(detect, pasted_frames(args.faces, s, s), 0.4)
                for s in SIZES}
        rows["afew 720x576"] = measure(detect, afew_frames(), 0.5)
        results[name] = rows
        for what, r in rows.items():
            print(f"{name:12s} {what:16s} recall {100 * r['recall']:5.1f}% of {r['faces']:3d}, "
                  f"{r['false_per_frame']:.2f} false per frame, {r['ms_per_frame']:6.1f} ms")
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
