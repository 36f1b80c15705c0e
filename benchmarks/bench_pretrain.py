"""MAE pretraining throughput: images/s of a full training step at mask ratio 0.75 against 0.

One step = MAE forward (encoder on the visible patches, decoder on all of them), the loss,
backward and an AdamW step, on random normalised images (the data pipeline is timed
apart: MAE's per-sample augmentation, random-resized-crop + flip, from uint8 faces). At
ratio 0 the encoder sees every patch and the loss covers every patch: the cost of the
same step without MAE's masking, the reference for the speed-up it buys. Configurations
are timed in interleaved rounds (median), so a slow spell of a shared machine hits all
alike; compare the ratios printed by one run. Nothing here asserts a time.

    python benchmarks/bench_pretrain.py                        # CPU: ViT-Tiny at 64 and 112 px
    python benchmarks/bench_pretrain.py --gpu                  # + ViT-B/16 at 224, bf16, on CUDA
    python benchmarks/bench_pretrain.py --json runs/bench_pretrain.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import statistics
import sys
import time

import timm
import torch
import torchvision

from affectkit.engine.pretrain import mae_train_transform
from affectkit.io import atomic_write_json
from affectkit.models.backbone import create_backbone, num_kept
from affectkit.models.mae import MAE, masked_patch_loss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Bench:
    """One model size and image size, stepped at any mask ratio."""

    def __init__(self, model_name: str, img_size: int, batch: int, decoder: tuple[int, int, int],
                 device: torch.device, amp: bool):
        torch.manual_seed(0)
        enc = create_backbone(model_name, img_size=img_size, pool="cls")
        dim, depth, heads = decoder
        self.model = MAE(enc, decoder_dim=dim, decoder_depth=depth, decoder_heads=heads,
                         mask_ratio=0.75).to(device).train()
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                     lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
        self.x = torch.randn(batch, 3, img_size, img_size, device=device)
        self.ones = torch.ones(batch, self.model.num_patches, device=device)
        self.device, self.amp, self.batch = device, amp, batch

    def autocast(self):
        return (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp
                else contextlib.nullcontext())

    def step(self, ratio: float) -> None:
        m = self.model
        with self.autocast():
            if ratio > 0:
                loss = m(self.x, mask_ratio=ratio)["loss"]
            else:  # no masking: every patch through the encoder, loss on every patch
                latent, keep = m.forward_encoder(self.x, 0.0)
                loss = masked_patch_loss(m.forward_decoder(latent, keep), m.target(self.x),
                                         self.ones)[0]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def peak_mb(self, ratio: float) -> float | None:
        if self.device.type != "cuda":
            return None
        sync(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.step(ratio)
        sync(self.device)
        return torch.cuda.max_memory_allocated(self.device) / 2**20


def time_configs(benches: dict, ratios, warmup: int, steps: int, rounds: int, label: str):
    """{(size, ratio): row} with per-round img/s, rounds interleaved over every config."""
    rows = {}
    for size, b in benches.items():
        for r in ratios:
            for _ in range(warmup):
                b.step(r)
            rows[(size, r)] = {"img_size": size, "ratio": r, "batch": b.batch,
                               "encoder_tokens": b.model.num_prefix + (
                                   num_kept(b.model.num_patches, r) if r else
                                   b.model.num_patches),
                               "img_s": [], "peak_mb": b.peak_mb(r)}
    for i in range(rounds):
        for (size, r), row in rows.items():
            b = benches[size]
            sync(b.device)
            t0 = time.perf_counter()
            for _ in range(steps):
                b.step(r)
            sync(b.device)
            row["img_s"].append(steps * b.batch / (time.perf_counter() - t0))
        print(f"  {label} round {i + 1}/{rounds}: " + ", ".join(
            f"{s}px r={r:g} {row['img_s'][-1]:,.1f}" for (s, r), row in rows.items()),
            flush=True)
    for row in rows.values():
        row["img_s_median"] = statistics.median(row["img_s"])
    return rows


def print_table(rows: dict, ratios) -> list[dict]:
    print(f"\n{'px':>4} {'ratio':>5} {'enc tokens':>10} {'img/s':>9} {'min-max':>17} "
          f"{'vs r=0':>7} {'peak MB':>8}")
    out = []
    for (size, r), row in rows.items():
        base = rows.get((size, 0.0))
        row["speedup_vs_r0"] = (row["img_s_median"] / base["img_s_median"]) if base else None
        rng = f"{min(row['img_s']):,.1f}-{max(row['img_s']):,.1f}"
        sp = f"{row['speedup_vs_r0']:.2f}x" if row["speedup_vs_r0"] else "-"
        pk = f"{row['peak_mb']:,.0f}" if row["peak_mb"] else "-"
        print(f"{size:>4} {r:>5g} {row['encoder_tokens']:>10} {row['img_s_median']:>9,.1f} "
              f"{rng:>17} {sp:>7} {pk:>8}")
        out.append(row)
    return out


def aug_throughput(sizes, src: int, seconds: float = 1.0) -> dict[int, float]:
    """Per-sample MAE augmentation (uint8 ``src`` px face -> ``size`` px, normalised), 1 core."""
    g = torch.Generator().manual_seed(0)
    face = torch.randint(0, 256, (3, src, src), dtype=torch.uint8, generator=g)
    out = {}
    for size in sizes:
        t = mae_train_transform(size)
        for _ in range(20):
            t(face)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            t(face)
            n += 1
        out[size] = n / (time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vit_tiny_patch16_224")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 112])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.75])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--decoder", type=int, nargs=3, default=[128, 2, 4],
                    metavar=("DIM", "DEPTH", "HEADS"), help="default: the mae-face-tiny recipe's")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per config and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--gpu", action="store_true",
                    help="also ViT-B/16 at 224 (decoder 512x8, bf16) on CUDA, if available")
    ap.add_argument("--gpu-batch", type=int, default=256)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ratios = sorted(set(args.ratios))
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    print(f"command: {command}")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm "
          f"{timm.__version__}; {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    report: dict = {"command": command, "torch": torch.__version__, "timm": timm.__version__,
                    "threads": torch.get_num_threads()}

    cpu = torch.device("cpu")
    print(f"CPU: {args.model}, decoder {args.decoder[0]}-d x {args.decoder[1]} blocks, "
          f"batch {args.batch}, fp32; {args.warmup} warm-up steps, {args.rounds} rounds of "
          f"{args.steps} timed steps")
    benches = {s: Bench(args.model, s, args.batch, tuple(args.decoder), cpu, amp=False)
               for s in args.sizes}
    rows = time_configs(benches, ratios, args.warmup, args.steps, args.rounds, "cpu")
    report["cpu"] = {"model": args.model, "decoder": args.decoder,
                     "rows": print_table(rows, ratios)}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    aug = aug_throughput(args.sizes, 48)
    torch.set_num_threads(before)
    report["cpu"]["aug_img_s_1core_from_48px"] = aug
    print("per-sample MAE augmentation (48 px uint8 face, random-resized-crop + flip + "
          "normalise), 1 core: " + ", ".join(f"{s} px {v:,.0f} img/s" for s, v in aug.items()))

    if args.gpu:
        if not torch.cuda.is_available():
            print("\nGPU ViT-B/16 at 224: not measured: no GPU")
            report["gpu"] = "not measured: no GPU"
        else:
            dev = torch.device("cuda")
            torch.backends.cuda.matmul.allow_tf32 = True
            name = torch.cuda.get_device_name(dev)
            print(f"\nGPU ({name}): vit_base_patch16_224, 224 px, decoder 512-d x 8, "
                  f"batch {args.gpu_batch}, bf16 autocast")
            big = {224: Bench("vit_base_patch16_224", 224, args.gpu_batch, (512, 8, 16), dev,
                              amp=True)}
            g_rows = time_configs(big, ratios, args.warmup, args.steps, args.rounds, "gpu")
            report["gpu"] = {"device": name, "model": "vit_base_patch16_224",
                             "rows": print_table(g_rows, ratios)}
    elif not torch.cuda.is_available():
        report["gpu"] = "not measured: no GPU"
    if args.json:
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
