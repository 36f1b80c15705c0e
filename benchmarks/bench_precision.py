"""Training-step speed of the face CNNs in fp32 and under bf16 autocast on this CPU: the
measurement behind ``run.amp: bf16`` on CPUs with native bf16 (``engine.loop.amp_dtype_for``).

Each model trains (forward, cross-entropy, backward, AdamW step; channels_last, as the
engine runs CNNs) on random 64-image batches, fp32 and bf16 alternating in ``--rounds``
rounds within one process; img/s are medians over rounds and the ratio is the median of
the per-round ratios. It also prints how far bf16's logits are from fp32's on the same
weights (max |difference| relative to the logits' spread). On a CPU without AMX /
AVX512-BF16 the bf16 rows are expected to be many times slower (emulated), which is why
the engine then falls back to fp32.

    python benchmarks/bench_precision.py [--rounds 3] [--steps 6] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import timm
import torch

import affectkit.models.facecnn  # noqa: F401  (registers face_vgg*)
from affectkit.engine.loop import cpu_has_native_bf16
from affectkit.io import atomic_write_json

# (timm name, px, extra create_model kwargs); the ViT is the cpu-p8 benchmarks' (36 tokens)
MODELS = (("face_vgg_m", 40, {}), ("face_vgg", 40, {}), ("face_vgg", 48, {}),
          ("resnet18", 48, {}), ("vit_tiny_patch16_224", 48, {"img_size": 48, "patch_size": 8}))


def img_per_s(model, opt, x, y, dtype, steps: int) -> float:
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (oneDNN primitives for this shape and precision)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(x) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", help="comma-separated timm names to measure (default: all)")
    args = ap.parse_args(argv)
    native = cpu_has_native_bf16()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; native bf16 "
          f"(AMX / AVX512-BF16): {'yes' if native else 'no'}")
    results = {"native_bf16": native, "threads": torch.get_num_threads(), "models": {}}
    only = set(args.only.split(",")) if args.only else None
    unknown = sorted((only or set()) - {name for name, _, _ in MODELS})
    if unknown:
        ap.error(f"--only: unknown model(s) {', '.join(unknown)}; one of "
                 f"{', '.join(sorted({name for name, _, _ in MODELS}))}")
    for name, px, extra in MODELS:
        if only and name not in only:
            continue
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=7, **extra).to(
            memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        x = torch.randn(64, 3, px, px).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 7, (64,))
        fp32, bf16 = [], []
        for r in range(args.rounds):
            for dtype in ((None, "bf16") if r % 2 == 0 else ("bf16", None)):
                (fp32 if dtype is None else bf16).append(
                    img_per_s(model, opt, x, y, dtype, args.steps))
        model.eval()
        with torch.no_grad():
            exact = model(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                mixed = model(x).float()
        gap = float((mixed - exact).abs().max() / exact.std())
        ratio = statistics.median(b / f for f, b in zip(fp32, bf16))
        row = {"px": px, "fp32_img_s": statistics.median(fp32),
               "bf16_img_s": statistics.median(bf16), "ratio": ratio,
               "logit_gap_rel": gap}
        results["models"][f"{name}@{px}"] = row
        print(f"{name:10s} @ {px} px: fp32 {row['fp32_img_s']:6.0f} img/s, bf16 "
              f"{row['bf16_img_s']:6.0f} img/s: {ratio:.2f}x; bf16 logits within "
              f"{gap:.3f} sd of fp32's")
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
