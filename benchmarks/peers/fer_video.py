"""The ``fer`` package's own video pipeline (``fer==25.10.3``: Haar cascade + its
mini-Xception, TensorFlow Lite), timed on one video: the peer of ``bench_analyze.py``.

It runs in an environment of its own (TensorFlow; ``bash scripts/setup_fer_peer.sh``
makes ``.venv-fer``), never imports affectkit, and prints one JSON object:

- ``end_to_end``: ``fer.Video(path).analyze(FER())`` with nothing saved (no frames, no
  video, no annotation, no zip) but the CSV it always writes: what a user of fer runs, timed
  as a whole. fer writes that CSV as ``data.csv`` in the working directory whatever
  ``outdir`` says, so the call runs inside a temporary folder;
- ``seconds``: a second pass over the same frames split into decode (OpenCV), detect
  (``FER.find_faces``) and model (``FER.detect_emotions`` on the found boxes: crop,
  resize, classify).

    .venv-fer/bin/python benchmarks/peers/fer_video.py VIDEO [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if not os.path.isfile(args.video):
        raise SystemExit(f"{args.video}: no such video file")
    video = os.path.abspath(args.video)  # the timed call runs in another directory

    import cv2
    import tensorflow as tf

    if args.threads:
        cv2.setNumThreads(args.threads)
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    import fer
    from fer.classes import Video
    from fer.fer import FER

    detector = FER()  # the package's defaults: Haar cascade, min face 50 px, TFLite model
    cap = cv2.VideoCapture(args.video)
    ok, first = cap.read()
    if not ok:
        raise SystemExit(f"{args.video}: OpenCV cannot read a frame")
    detector.detect_emotions(first)  # warm-up

    with tempfile.TemporaryDirectory() as out, contextlib.chdir(out):
        t0 = time.perf_counter()
        rows = Video(video, outdir=out).analyze(
            detector, display=False, save_frames=False, save_video=False,
            annotate_frames=False, zip_images=False)
        wall = time.perf_counter() - t0

    seconds = {"decode": 0.0, "detect": 0.0, "model": 0.0}
    frames = faces = 0
    cap = cv2.VideoCapture(args.video)
    while True:
        t = time.perf_counter()
        ok, img = cap.read()
        seconds["decode"] += time.perf_counter() - t
        if not ok:
            break
        t = time.perf_counter()
        boxes = detector.find_faces(img)
        seconds["detect"] += time.perf_counter() - t
        t = time.perf_counter()
        found = detector.detect_emotions(img, face_rectangles=boxes) if len(boxes) else []
        seconds["model"] += time.perf_counter() - t
        frames += 1
        faces += int(len(found) > 0)
    print(json.dumps({
        "package": f"fer {getattr(fer, '__version__', '25.10.3')}", "tensorflow": tf.__version__,
        "threads": args.threads, "frames": frames, "frames_with_face": faces,
        "end_to_end": {"wall_s": wall, "fps": frames / wall, "rows": len(rows)},
        "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
