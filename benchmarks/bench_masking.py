"""Training speed and memory of one masked ViT view against the mask ratio (ABAW4, 3.3).

The masked CoTEX paper claims that dropping patch tokens before the blocks trains faster
and needs less memory (r = 0.75 keeps 50 of 197 tokens of a ViT-B/16 at 224), which it
spends on larger batches. This measures, in one process, for mask ratios 0, 0.5, 0.75
and 0.9, one training step of one view (``Backbone`` + linear head: forward, cross-entropy,
backward, AdamW step) on random images:

- images/s: the median over rounds; each round times every ratio in turn, so a slow
  spell of a shared machine hits all ratios alike;
- activation memory: bytes of the tensors autograd saves for backward during the forward
  (``saved_tensors_hooks``, storages counted once, parameters excluded): the part of
  memory that masking shrinks, measured the same way on CPU and GPU;
- on CUDA also the peak of ``torch.cuda.max_memory_allocated`` over a step (weights,
  gradients and AdamW state included);
- forward GFLOP per image (``FlopCounterMode``).

Everything is printed as a ratio to r = 0 as well. Nothing here asserts a time.

    python benchmarks/bench_masking.py                      # CPU: ViT-Tiny, 112 px, batch 32
    python benchmarks/bench_masking.py --model vit_base_patch16_224 --img-size 224 --batch 64
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
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from affectkit.io import atomic_write_json
from affectkit.models.backbone import create_backbone, num_kept

RATIOS = (0.0, 0.5, 0.75, 0.9)
NUM_CLASSES = 8


class View(nn.Module):
    """One CoTEX view: backbone + its own classification head."""

    def __init__(self, name: str, img_size: int):
        super().__init__()
        self.backbone = create_backbone(name, img_size=img_size)
        self.head = nn.Linear(self.backbone.num_features, NUM_CLASSES)

    def forward(self, x, mask_ratio):
        return self.head(self.backbone(x, mask_ratio=mask_ratio))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def saved_activation_bytes(model: nn.Module, run) -> int:
    """Bytes autograd keeps for backward while ``run()`` does a forward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vit_tiny_patch16_224")
    ap.add_argument("--img-size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per ratio")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per ratio and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                    help="bf16 autocast; auto: on CUDA only (on this CPU bf16 is 7-20x slower)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = args.amp == "on" or (args.amp == "auto" and device.type == "cuda")
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"command: {command}")
    print(f"torch {torch.__version__}, timm {timm.__version__}; device {device}"
          f"{f' ({gpu})' if gpu else ''}; {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads; bf16 autocast {'on' if amp else 'off'}")

    torch.manual_seed(0)
    model = View(args.model, args.img_size).to(device).train()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, NUM_CLASSES, (args.batch,), device=device)
    n = model.backbone.model.patch_embed.num_patches
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp \
        else contextlib.nullcontext
    print(f"model {args.model}, {args.img_size} px, batch {args.batch}, {n} patch tokens; "
          f"{args.warmup} warm-up steps, then {args.rounds} rounds of {args.steps} timed "
          "steps per ratio")

    def step(ratio: float) -> None:
        with autocast():
            loss = F.cross_entropy(model(x, ratio), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = {r: {"ratio": r, "tokens": model.backbone.num_prefix_tokens + num_kept(n, r),
                "img_s": []} for r in args.ratios}
    for r, row in rows.items():
        for _ in range(args.warmup):
            step(r)
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            model(x[:2], r)
        row["gflop_fwd"] = flops.get_total_flops() / 2 / 1e9
        opt.zero_grad(set_to_none=True)

        def forward(r=r):
            with autocast():
                return F.cross_entropy(model(x, r), y)

        row["act_mb"] = saved_activation_bytes(model, forward) / 2**20
        if device.type == "cuda":
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            step(r)
            sync(device)
            row["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    for i in range(args.rounds):
        for r, row in rows.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(r)
            sync(device)
            row["img_s"].append(args.steps * args.batch / (time.perf_counter() - t0))
        print(f"  round {i + 1}/{args.rounds}: " + ", ".join(
            f"r={r:g} {row['img_s'][-1]:,.1f} img/s" for r, row in rows.items()), flush=True)

    base = rows[args.ratios[0]]
    base_speed = statistics.median(base["img_s"])
    cuda = device.type == "cuda"
    head = (f"\n{'ratio':>5} {'tokens':>6} {'img/s':>9} {'min-max':>15} {'speed':>6} "
            f"{'act MB':>8} {'act':>6} " + (f"{'peak MB':>8} {'peak':>6} " if cuda else "")
            + f"{'GFLOP/img':>9} {'flops':>6}")
    print(head)
    for r, row in rows.items():
        row["img_s_median"] = med = statistics.median(row["img_s"])
        row["speedup"] = med / base_speed
        row["act_ratio"] = row["act_mb"] / base["act_mb"]
        row["flop_ratio"] = row["gflop_fwd"] / base["gflop_fwd"]
        rng = f"{min(row['img_s']):,.1f}-{max(row['img_s']):,.1f}"
        line = (f"{r:>5g} {row['tokens']:>6} {med:>9,.1f} {rng:>15} {row['speedup']:>5.2f}x "
                f"{row['act_mb']:>8,.1f} {row['act_ratio']:>5.2f}x ")
        if cuda:
            row["peak_ratio"] = row["peak_mb"] / base["peak_mb"]
            line += f"{row['peak_mb']:>8,.0f} {row['peak_ratio']:>5.2f}x "
        print(line + f"{row['gflop_fwd']:>9.3f} {row['flop_ratio']:>5.2f}x")
    print("(speed, act, peak, flops: ratio to r = "
          f"{args.ratios[0]:g}; act = tensors saved for backward by one forward)")
    report = {"command": command, "torch": torch.__version__, "timm": timm.__version__,
              "device": str(device), "gpu": gpu, "threads": torch.get_num_threads(),
              "amp": amp, "model": args.model, "img_size": args.img_size,
              "batch": args.batch, "rows": list(rows.values())}
    if args.json:
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
