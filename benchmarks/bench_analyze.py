"""End-to-end speed of ``affectkit analyze`` on a 720p video, PyTorch against onnxruntime,
and where the time goes (decode / detect / align / model).

The video is composed from the 42 real AFEW-VA frames in ``../shared/data/afew_va_clip001``
(720x576, one face), each upscaled to 1280x720 and played forwards then backwards
(``--frames``, default 84) at 25 fps, written with PyAV (MPEG-4). Each engine analyses the
same file once after a warm-up on its first frame, in one process; the shipped default
model unless ``--model``. The peer the issue names (the ``fer`` package's own video
pipeline) is not run here: it needs TensorFlow in an environment of its own.

    python benchmarks/bench_analyze.py [--frames N] [--every N] [--model NAME] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from affectkit.engine.analyze import Analyzer, analyze
from affectkit.io import atomic_write_json

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "afew_va_clip001"


def compose_video(path: Path, frames: int, size=(1280, 720), fps: int = 25) -> Path:
    import av

    files = sorted(CLIP.glob("*.png"))
    if not files:
        raise SystemExit(f"no AFEW-VA frames in {CLIP} (see shared/data/README.md)")
    order = files + files[::-1]
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height = size
        s.pix_fmt = "yuv420p"
        s.bit_rate = 4_000_000
        for i in range(frames):
            img = np.asarray(Image.open(order[i % len(order)]).convert("RGB").resize(size))
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=84)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"$ python benchmarks/bench_analyze.py {' '.join(argv or sys.argv[1:])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {args.model}")
    results: dict = {"frames": args.frames, "every": args.every, "model": args.model,
                     "engines": {}}
    with tempfile.TemporaryDirectory() as tmp:
        video = compose_video(Path(tmp) / "afew-720p.mp4", args.frames)
        print(f"video: {args.frames} frames of 1280x720 ({video.stat().st_size / 1e6:.1f} MB)")
        for engine in ("torch", "onnx"):
            an = Analyzer(args.model, engine=engine)
            analyze(CLIP / "00000.png", analyzer=an)  # warm-up
            an.seconds.clear()
            t0 = time.perf_counter()
            table = analyze(video, every=args.every, analyzer=an)
            wall = time.perf_counter() - t0
            n = int(an.seconds.get("frames", 0))
            parts = {k: an.seconds.get(k, 0.0) for k in ("decode", "detect", "align", "model")}
            results["engines"][engine] = {"wall_s": wall, "frames": n, "fps": n / wall,
                                          "faces": int(table["face_detected"].sum()),
                                          "seconds": parts}
            share = ", ".join(f"{k} {100 * v / wall:.0f}%" for k, v in parts.items())
            print(f"{engine:6s} {n / wall:6.2f} frames/s ({n} frames, "
                  f"{int(table['face_detected'].sum())} faces, {wall:.1f} s): {share}; "
                  f"model {1000 * parts['model'] / max(n, 1):.1f} ms/frame")
    e = results["engines"]
    ratio = e["onnx"]["fps"] / e["torch"]["fps"]
    model_ratio = e["torch"]["seconds"]["model"] / max(e["onnx"]["seconds"]["model"], 1e-9)
    results["ratio_onnx_vs_torch"] = ratio
    results["model_ratio_onnx_vs_torch"] = model_ratio
    print(f"onnxruntime / torch: end to end {ratio:.2f}x, model stage {model_ratio:.2f}x")
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
