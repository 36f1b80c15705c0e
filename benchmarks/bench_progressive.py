"""Progressive learning's stage 2: what the feature store buys, and how fast stage 2 trains.

In one process, on the SYNTHETIC temporal sample (``write_temporal_sample``, 64 px faces)
and one stage-1 task model (random init: the speed does not depend on the weights):

1. windows/s of stage-2 input read from the memory-mapped feature store
   (``WindowDataset`` over ``engine.features``) against decoding the window's JPEG faces
   and running the task model's backbone on them (what stage 2 would do without a store);
   ``--backbone`` picks the task model (default ``face_vgg_s`` at 48 px; a ViT such as
   ``vit_tiny_patch16_224`` at 64 px makes the gap wider);
2. stage-2 training windows/s (forward, WindowTask loss, backward, AdamW step of the joint
   model on store batches) for each temporal module at the demo's sizes.

Windows of ``--window`` frames (default 30, VA's public config); absolute figures move
with the machine's neighbours, the ratios printed by one run do not. Nothing is asserted.

    python benchmarks/bench_progressive.py [--quick] [--window 30] [--backbone NAME]
                                           [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from affectkit.config import load_config
from affectkit.data.augment import transforms_for
from affectkit.data.discover import open_dataset
from affectkit.data.sample import write_temporal_sample
from affectkit.data.windows import make_windows
from affectkit.engine.build import build_model, with_data_stats
from affectkit.engine.features import extract_features
from affectkit.engine.inference import LoadedRun
from affectkit.engine.progressive import WindowDataset
from affectkit.io import atomic_write_json
from affectkit.models.progressive import TEMPORALS, JointModel
from affectkit.tasks import WindowTask


def timed(fn, n_items: int, passes: int) -> list[float]:
    """Median, min, max items/s of ``fn()`` (which handles ``n_items``) over ``passes``."""
    fn()  # warm-up
    rates = []
    for _ in range(passes):
        t0 = time.perf_counter()
        fn()
        rates.append(n_items / (time.perf_counter() - t0))
    return [statistics.median(rates), min(rates), max(rates)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer videos and passes (~30 s)")
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--backbone", default="face_vgg_s")
    ap.add_argument("--img-size", type=int, help="default: 48 for CNNs, 64 for ViTs")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    videos, frames, passes = (3, 120, 2) if args.quick else (6, 300, 3)
    size = args.img_size or (64 if "vit" in args.backbone else 48)
    print(f"$ python benchmarks/bench_progressive.py {' '.join(argv or sys.argv[1:])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; task model "
          f"{args.backbone} at {size} px; windows of {args.window} frames")
    results: dict = {"window": args.window, "backbone": args.backbone, "img_size": size}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_temporal_sample(tmp / "data", videos=videos, frames=frames, seed=0)
        table = open_dataset(tmp / "data", "per-video")["per-video/train"]
        cfg = with_data_stats(load_config("progressive-demo-stage1", [
            f"data.root={tmp / 'data'}", f"model.backbone={args.backbone}",
            f"model.kind={'vit-mtl' if 'vit' in args.backbone else 'cnn-mtl'}",
            f"data.img_size={size}", f"data.resize={size}"]))
        torch.manual_seed(0)
        run = LoadedRun(cfg, build_model(cfg).eval(), tmp / "best.pt", 0, torch.device("cpu"))
        t0 = time.perf_counter()
        store = extract_features(run, table, tmp / "store", batch_size=128)
        extract_s = time.perf_counter() - t0
        windows = make_windows(table, args.window, args.window, max_gap=10)
        n = len(windows)
        print(f"{len(table)} frames, {n} windows; store: {store.dim} features per frame, "
              f"extracted in {extract_s:.1f} s ({len(table) / extract_s:.0f} frames/s)")

        # 1. store reads against decode + forward
        ds = WindowDataset(table, windows, stores=[(store, store.rows_for(table))])
        faces = WindowDataset(table, windows, transform=transforms_for(cfg.data)[1])
        backbone = run.model.backbone

        def read_store():
            for i in range(n):
                ds[i]

        @torch.no_grad()
        def decode_forward():
            for i in range(n):
                item = faces[i]
                backbone(item["image"][item["valid"]])

        read = timed(read_store, n, passes)
        dec = timed(decode_forward, n, passes)
        results["store_read_windows_per_s"] = read
        results["decode_forward_windows_per_s"] = dec
        print(f"store read         {read[0]:10.1f} windows/s  ({read[1]:.1f}-{read[2]:.1f})")
        print(f"decode + forward   {dec[0]:10.1f} windows/s  ({dec[1]:.1f}-{dec[2]:.1f})")
        print(f"ratio store / decode+forward: {read[0] / dec[0]:.0f}x")
        results["ratio_store_vs_decode_forward"] = read[0] / dec[0]

        # 2. stage-2 training steps on store batches
        loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False)
        batches = list(loader)
        task = WindowTask()
        results["stage2_train_windows_per_s"] = {}
        for temporal in TEMPORALS:
            torch.manual_seed(0)
            joint = JointModel([store.dim], hidden=128, temporal=temporal, layers=2, heads=4)
            opt = torch.optim.AdamW(joint.parameters(), 1e-3)

            def epoch(joint=joint, opt=opt):
                for b in batches:
                    out = joint([b["features"]], b["frames"], b["valid"])
                    loss = task(out, b)["loss"]
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

            r = timed(epoch, n, passes)
            results["stage2_train_windows_per_s"][temporal] = r
            print(f"stage 2 training, {temporal:11s} {r[0]:8.1f} windows/s "
                  f"({r[0] * args.window:.0f} frames/s)")
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
