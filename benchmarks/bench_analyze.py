"""End-to-end speed of ``affectkit analyze`` on a 720p video, PyTorch against onnxruntime,
and where the time goes (decode / detect / align / model).

The video is composed from the 42 real AFEW-VA frames in ``../shared/data/afew_va_clip001``
(720x576, one face), each upscaled to 1280x720 and played forwards then backwards
(``--frames``, default 84) at 25 fps, written with PyAV (MPEG-4). Each engine analyses the
same file once after a warm-up on its first frame, in one process; the shipped default
model unless ``--model``. A third row runs PyTorch with the full detector on every
``--detect-every``-th frame only (the faces refined in between, ``MTCNN.refine``), with
its agreement with the every-frame run (box IoU, landmark distance, same expression).
In the same run, on the same file and thread count, the peer: the ``fer`` package's own
video pipeline (``benchmarks/peers/fer_video.py``), run by the Python of its own
environment (TensorFlow; ``bash scripts/setup_fer_peer.sh`` makes ``.venv-fer``);
skipped, and said so, where that environment is absent.

    python benchmarks/bench_analyze.py [--frames N] [--every N] [--model NAME]
        [--detect-every N] [--fer-python PATH | --no-peer] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
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
FER_PYTHON = Path(__file__).resolve().parents[1] / ".venv-fer" / "bin" / "python"
FER_SCRIPT = Path(__file__).resolve().parent / "peers" / "fer_video.py"


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


def agreement(full, tracked) -> dict:
    """How far the tracked run's faces are from the every-frame run's, frame by frame
    (first face of each frame): box IoU, landmark distance in face widths, same
    dominant expression, frames where only one of the two found a face."""
    from affectkit.engine.analyze import LANDMARKS
    from affectkit.faces.align import box_iou

    a = full.groupby("frame").first()
    b = tracked.groupby("frame").first()
    both = a.index[(a["face_detected"] == 1) & (b["face_detected"] == 1)]
    boxes = ["x1", "y1", "x2", "y2"]
    marks = [f"{n}_{c}" for n in LANDMARKS for c in "xy"]
    ious = [box_iou(a.loc[i, boxes].to_numpy(float), b.loc[i, boxes].to_numpy(float))
            for i in both]
    width = (a.loc[both, "x2"] - a.loc[both, "x1"]).to_numpy(float)
    d = (a.loc[both, marks].to_numpy(float) - b.loc[both, marks].to_numpy(float))
    dist = np.linalg.norm(d.reshape(len(both), 5, 2), axis=-1).mean(1) / width
    return {"box_iou_mean": float(np.mean(ious)), "box_iou_min": float(np.min(ious)),
            "landmark_dist_face_widths": float(dist.mean()),
            "same_expression": float((a.loc[both, "expression"]
                                      == b.loc[both, "expression"]).mean()),
            "frames_face_in_one_only": int(((a["face_detected"] == 1)
                                            != (b["face_detected"] == 1)).sum())}


def run_fer_peer(python: Path, video: Path, threads: int) -> dict:
    """The fer package's pipeline on ``video`` in its own environment, as its JSON."""
    if not python.exists():
        msg = f"{python} absent (bash scripts/setup_fer_peer.sh makes it)"
        print(f"fer peer skipped: {msg}")
        return {"skipped": msg}
    done = subprocess.run([str(python), str(FER_SCRIPT), str(video), "--threads",
                           str(threads)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"fer peer failed ({python} {FER_SCRIPT}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=84)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--detect-every", type=int, default=5)
    ap.add_argument("--fer-python", type=Path, default=FER_PYTHON,
                    help="the Python of the fer peer's environment (scripts/setup_fer_peer.sh)")
    ap.add_argument("--no-peer", action="store_true", help="do not run the fer peer")
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
        tables = {}
        for name, engine, every_det in (("torch", "torch", 1), ("onnx", "onnx", 1),
                                        (f"torch-detect{args.detect_every}", "torch",
                                         args.detect_every)):
            an = Analyzer(args.model, engine=engine, detect_every=every_det)
            analyze(CLIP / "00000.png", analyzer=an)  # warm-up
            an.seconds.clear()
            t0 = time.perf_counter()
            table = analyze(video, every=args.every, analyzer=an)
            wall = time.perf_counter() - t0
            n = int(an.seconds.get("frames", 0))
            parts = {k: an.seconds.get(k, 0.0) for k in ("decode", "detect", "align", "model")}
            tables[name] = table
            results["engines"][name] = {"wall_s": wall, "frames": n, "fps": n / wall,
                                          "faces": int(table["face_detected"].sum()),
                                          "seconds": parts}
            share = ", ".join(f"{k} {100 * v / wall:.0f}%" for k, v in parts.items())
            print(f"{name:15s} {n / wall:6.2f} frames/s ({n} frames, "
                  f"{int(table['face_detected'].sum())} faces, {wall:.1f} s): {share}; "
                  f"model {1000 * parts['model'] / max(n, 1):.1f} ms/frame")
        results["detect_every_agreement"] = agreement(
            tables["torch"], tables[f"torch-detect{args.detect_every}"])
        print("detect every {}: against every frame: {}".format(args.detect_every, ", ".join(
            f"{k} {v:.3f}" for k, v in results["detect_every_agreement"].items())))
        if not args.no_peer:
            results["peer"] = run_fer_peer(args.fer_python, video, torch.get_num_threads())
    e = results["engines"]
    ratio = e["onnx"]["fps"] / e["torch"]["fps"]
    model_ratio = e["torch"]["seconds"]["model"] / max(e["onnx"]["seconds"]["model"], 1e-9)
    results["ratio_onnx_vs_torch"] = ratio
    results["model_ratio_onnx_vs_torch"] = model_ratio
    print(f"onnxruntime / torch: end to end {ratio:.2f}x, model stage {model_ratio:.2f}x")
    peer = results.get("peer")
    if peer and "end_to_end" in peer:
        fps = peer["end_to_end"]["fps"]
        results["ratio_torch_vs_fer"] = e["torch"]["fps"] / fps
        share = ", ".join(f"{k} {100 * v / sum(peer['seconds'].values()):.0f}%"
                          for k, v in peer["seconds"].items())
        print(f"fer    {fps:6.2f} frames/s ({peer['frames']} frames, "
              f"{peer['frames_with_face']} with a face; {peer['package']}, "
              f"tensorflow {peer['tensorflow']}; stages: {share})")
        print(f"affectkit (torch) / fer: {results['ratio_torch_vs_fer']:.2f}x the frames/s; "
              f"faces found {e['torch']['faces']} against {peer['frames_with_face']} "
              f"of {peer['frames']} frames")
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
