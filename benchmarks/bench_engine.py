"""Train-step throughput of the engine against a plain loop written like the papers' code.

Two loops train the same model (``affectkit.engine.build.build_model``) with the same loss
(``build_task``), batch size, data and number of steps, in one process:

- **baseline**, written here the way the ABAW4 paper's public code does it: a Dataset whose
  ``__getitem__`` checks the path (``os.path.exists``), opens the JPEG with PIL and runs the
  per-sample torchvision pipeline on the PIL image (Resize, RandomCrop, RandomHorizontalFlip,
  ColorJitter, ToTensor, Normalize; sizes and jitter from the config), a plain shuffled
  ``DataLoader``, fp32, no ``torch.compile``, no channels_last, ``torch.optim.AdamW`` over
  all parameters (no layer decay, no parameter groups), and per batch zero_grad, backward,
  ``clip_grad_norm_`` (the config's ``optim.clip_grad``), step, ``loss.item()``;
- **engine**: ``affectkit.engine.loop.train(cfg, run_dir, max_steps=...)`` reading the
  packed uint8 cache (``pack_images``, ``data.packed``) with its own settings
  (channels_last for CNNs, bf16 autocast on CUDA only, its AdamW parameter groups),
  augmentation per sample in the DataLoader (``data.augment=sample``);
- **engine, batched augmentation**: the same with ``data.augment=batch``: the DataLoader
  hands uint8 faces over and ``BatchAugment`` crops, flips and jitters the whole batch on
  the training device (the default on CUDA).

Configurations (CPU-sized): ResNet-18 at 64 px (recipe ``demo-cnn``: resize 66, crop 64)
and ViT-Tiny/16 at 112 px (recipe ``demo``: resize 116, crop 112), both on the per-video
layout of a synthetic sample (``write_sample``) or on ``--data DIR``.

How the time is taken, so that startup counts for neither loop:

- baseline: ``warmup`` untimed steps, then the next ``steps`` steps are timed (the
  DataLoader iterator is already running, so data loading is inside the timed region);
- engine: ``train`` has startup (reading the annotations, building model and optimiser,
  the final ``last.pt``) that cannot be timed from outside, so each round runs it twice in
  fresh folders, with ``max_steps=warmup`` and ``max_steps=warmup + steps``, and takes the
  difference of the wall times: ``steps`` steady-state steps with the same data path.
  Both calls pass ``checkpoint_every`` beyond the run, so no periodic ``last.pt`` falls
  inside the difference; the cost of one such save is measured on its own and printed
  next to the recipe's ``run.log_every``. The runs stay inside the first epoch (no
  validation).

Rounds alternate which loop goes first; img/s are medians over rounds, and the ratio is
the median of the per-round ratios engine / baseline (each round's two loops run back to
back, so a slow spell of a shared machine hits both; all per-round ratios are printed).
The data paths alone (each loop's Dataset + DataLoader, no model) are timed as well, to
say where the ratio comes from.

With CUDA (``--gpu``, default: when available) it also times the engine's train step for
ViT-B/16 at 224 (``vit-mtl`` model, bf16 autocast, clip, AdamW with layer decay) on
synthetic tensors resident on the GPU, and divides the FLOPs of one step (forward +
backward, ``FlopCounterMode``) per second by the device's peak dense bf16 FLOP/s.
Nothing here asserts a time.

    python benchmarks/bench_engine.py                   # full run, ~2 min on 2 quiet CPU cores
    python benchmarks/bench_engine.py --quick           # smoke run (~1 min; figures meaningless)
    python benchmarks/bench_engine.py --threads 1 --json runs/bench_engine.json
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import timm
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T

from affectkit.config import Config, load_config
from affectkit.data.augment import IMAGENET_MEAN, IMAGENET_STD
from affectkit.data.dataset import pack_images
from affectkit.data.sample import write_sample
from affectkit.data.table import FaceTable
from affectkit.engine.build import build_job, build_model, build_task, open_splits
from affectkit.engine.loop import train
from affectkit.engine.optim import build_optimizer, scaled_lr
from affectkit.engine.state import save_training_checkpoint
from affectkit.io import atomic_write_json

warnings.filterwarnings(  # torchvision 0.29 deprecates its decoders for TorchCodec
    "ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning)

# name -> (recipe, overrides): CPU-sized versions of the two model families
CONFIGS = {
    "resnet18@64": ("demo-cnn", ["data.img_size=64", "data.resize=66"]),
    "vit_tiny@112": ("demo", ["data.img_size=112", "data.resize=116"]),
}
TRAIN_VIDEOS = 5  # write_sample's train split
# peak dense bf16 tensor-core FLOP/s (NVIDIA datasheets, without sparsity), by device name
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIE", 756.0), ("H100 NVL", None),
                    ("H100", 989.0), ("A100", 312.0))


# ----------------------------------------------------------------------------- baseline


class PaperStyleDataset(Dataset):
    """Per sample: path check, PIL decode, the torchvision PIL pipeline, label tensors."""

    def __init__(self, table: FaceTable, transform):
        root = str(table.image_root)
        self.samples = [(os.path.join(root, name), va, expr, au) for name, va, expr, au in
                        zip(table.images, table.va.tolist(), table.expression.tolist(),
                            table.au.tolist())]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        path, va, expr, au = self.samples[i]
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        image = Image.open(path).convert("RGB")
        return {"image": self.transform(image), "va": torch.tensor(va, dtype=torch.float32),
                "expression": torch.tensor(expr, dtype=torch.long),
                "au": torch.tensor(au, dtype=torch.float32)}


def paper_transform(cfg: Config):
    d = cfg.data
    return T.Compose([T.Resize(d.resize), T.RandomCrop(d.img_size), T.RandomHorizontalFlip(),
                      T.ColorJitter(d.jitter, d.jitter, d.jitter, d.hue), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class Baseline:
    """The paper-style loop; ``run(warmup, steps)`` returns the seconds of the timed steps."""

    def __init__(self, cfg: Config, train_table: FaceTable, device: torch.device):
        torch.manual_seed(cfg.run.seed)
        self.cfg, self.device = cfg, device
        self.dataset = PaperStyleDataset(train_table, paper_transform(cfg))
        self.model = build_model(cfg).to(device).train()
        self.task = build_task(cfg, train_table)
        if getattr(self.task, "au_pos_weight", None) is not None:
            self.task.au_pos_weight = self.task.au_pos_weight.to(device)
        o = cfg.optim
        lr = o.base_lr * o.batch_size * o.accum_steps / 256
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=lr,
            weight_decay=o.weight_decay, betas=o.betas)

    def loader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.cfg.optim.batch_size, shuffle=True,
                          drop_last=True, num_workers=self.cfg.data.num_workers,
                          pin_memory=self.device.type == "cuda")

    def run(self, warmup: int, steps: int) -> float:
        clip = self.cfg.optim.clip_grad
        t0 = None
        for i, batch in enumerate(self.loader()):
            if i == warmup:
                t0 = time.perf_counter()
            if i == warmup + steps:
                break
            batch = {k: v.to(self.device) for k, v in batch.items()}
            losses = self.task(self.model(batch["image"]), batch)
            self.optimizer.zero_grad()
            losses["loss"].backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
            loss = losses["loss"].item()
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss}")
        else:
            if i + 1 < warmup + steps:
                raise RuntimeError(f"{i + 1} batches, fewer than {warmup + steps}")
        return time.perf_counter() - t0


# ----------------------------------------------------------------------------- engine


def engine_seconds(cfg: Config, work: Path, tables, warmup: int, steps: int,
                   tag: str) -> float:
    """Wall time of ``steps`` engine steps: train(warmup + steps) - train(warmup)."""
    wall = []
    for n in (warmup, warmup + steps):
        run_dir = work / f"engine-{tag}-{n}"
        t0 = time.perf_counter()
        train(cfg, run_dir, resume=False, max_steps=n, progress=False,
              checkpoint_every=warmup + steps + 1, tables=tables)
        wall.append(time.perf_counter() - t0)
    return wall[1] - wall[0]


def checkpoint_save_seconds(baseline: Baseline, path: Path) -> tuple[float, float]:
    """(seconds, MB) of one ``save_training_checkpoint`` of that model + AdamW state."""
    t0 = time.perf_counter()
    save_training_checkpoint(path, baseline.model, baseline.optimizer)
    return time.perf_counter() - t0, path.stat().st_size / 2**20


# ----------------------------------------------------------------------------- data only


def data_rate(loader: DataLoader, batches: int, augment=None,
              device: torch.device | None = None) -> float:
    """img/s of iterating ``loader`` (first batch untimed), then ``augment`` on ``device``."""
    def take(it):
        x = next(it)["image"]
        if augment is not None:
            x = augment(x.to(device, non_blocking=True))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        return len(x)

    it = iter(loader)
    take(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += take(it)
    return n / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- GPU


def peak_tflops(name: str) -> float | None:
    up = name.upper()
    for key, peak in PEAK_BF16_TFLOPS:
        if key in up:
            return peak
    return None


def model_step_bench(device: torch.device, backbone: str, img_size: int, batch: int,
                     warmup: int, steps: int, rounds: int, amp: bool) -> dict:
    """The engine's train step (autocast, MTL loss, backward, clip, AdamW with layer
    decay) of a ``vit-mtl`` model on resident synthetic tensors: img/s and FLOPs/step."""
    cfg = load_config("vit-mtl", ["model.pretrained=null", f"model.backbone={backbone}",
                                  f"data.img_size={img_size}", f"optim.batch_size={batch}"])
    o = cfg.optim
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    task = build_task(cfg)
    opt = build_optimizer(model, scaled_lr(o.base_lr, batch, o.accum_steps), o.weight_decay,
                          o.layer_decay, o.betas)
    g = torch.Generator().manual_seed(0)
    b = {"image": torch.randn(batch, 3, img_size, img_size, generator=g),
         "va": torch.rand(batch, 2, generator=g) * 2 - 1,
         "expression": torch.randint(0, 8, (batch,), generator=g),
         "au": torch.randint(0, 2, (batch, 12), generator=g).float()}
    b = {k: v.to(device) for k, v in b.items()}
    autocast = (lambda: torch.autocast(device.type, torch.bfloat16)) if amp \
        else contextlib.nullcontext

    def forward_backward():
        with autocast():
            loss = task(model(b["image"]), b)["loss"]
        loss.float().backward()
        return loss

    def step():
        loss = forward_backward()
        if o.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    for _ in range(warmup):
        step()
    with FlopCounterMode(display=False) as counter:
        forward_backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rates = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        float(loss)  # waits for the device
        rates.append(steps * batch / (time.perf_counter() - t0))
    out = {"backbone": backbone, "img_size": img_size, "batch": batch, "amp_bf16": amp,
           "img_s": rates, "img_s_median": statistics.median(rates),
           "gflop_per_step": flops / 1e9}
    out["tflop_s"] = flops * out["img_s_median"] / batch / 1e12
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


# ----------------------------------------------------------------------------- main


class _OncePerMessage(logging.Filter):
    """Show each distinct log message once (train() repeats its setup warnings per call)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


def _load_average() -> float:
    """1-minute load average (nan where the OS has none): > 0.5 on a quiet 2-core VM means
    another job shares the cores."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def prepare_data(args, work: Path, need: int) -> tuple[Path, Path]:
    """(data root, pack folder): the synthetic sample, or ``--data``; packed train + val."""
    if args.data:
        root = Path(args.data)
    else:
        root = work / "sample"
        frames = math.ceil(need / (TRAIN_VIDEOS * 0.9)) + 5  # >= 1 - 1/15 of frames kept
        t0 = time.perf_counter()
        write_sample(root, frames_per_video=frames)
        print(f"data: synthetic sample, {frames}+ frames per video, written in "
              f"{time.perf_counter() - t0:.1f} s")
    if args.packed:
        return root, Path(args.packed)
    packed = work / "packed"
    cfg = load_config("demo-cnn", [f"data.root={root}", f"data.layout={args.layout}"])
    t0 = time.perf_counter()
    tables = open_splits(cfg)
    for name, table in zip(("train", "val"), tables):
        pack_images(table, packed / name)
    print(f"pack: {sum(len(t) for t in tables)} images (train + val) in "
          f"{time.perf_counter() - t0:.1f} s")
    return root, packed


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per loop and round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0,
                    help="DataLoader workers of both loops (the demo recipes' 0)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch intra-op threads (default: all cores)")
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--data", help="dataset root to train on instead of a synthetic sample")
    ap.add_argument("--layout", default="per-video", help="data.layout for --data")
    ap.add_argument("--packed", help="existing pack folder for --data (else packed to a temp "
                                     "folder: train + val splits)")
    gpu = ap.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="gpu", action="store_true", default=None,
                     help="ViT-B/16 train-step throughput and FLOP/s fraction on CUDA "
                          "(default: when CUDA is available)")
    gpu.add_argument("--no-gpu", dest="gpu", action="store_false")
    ap.add_argument("--gpu-batch", type=int, default=128)
    ap.add_argument("--gpu-steps", type=int, default=10, help="timed steps per GPU round")
    ap.add_argument("--peak-tflops", type=float,
                    help="the GPU's peak dense bf16 TFLOP/s, if not in the built-in table")
    ap.add_argument("--quick", action="store_true", help="tiny settings, for a smoke run")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.rounds, args.batch_size = 3, 1, 1, 8
        args.gpu_batch, args.gpu_steps = 16, 3
    torch.set_num_threads(args.threads)
    handler = logging.StreamHandler()
    handler.addFilter(_OncePerMessage())
    handler.setFormatter(logging.Formatter("  [%(levelname)s %(name)s] %(message)s"))
    logging.getLogger("affectkit").addHandler(handler)
    logging.getLogger("affectkit").setLevel(logging.WARNING)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")  # what train() picks
    gpu_name = torch.cuda.get_device_name(0) if cuda else None
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    load = _load_average()
    print(f"command: {command}")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm "
          f"{timm.__version__}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads; device {device}"
          f"{f' ({gpu_name})' if gpu_name else ''}; load average {load:.2f}")
    print(f"batch {args.batch_size}, {args.workers} DataLoader workers, {args.warmup} warm-up "
          f"+ {args.steps} timed steps per loop, {args.rounds} rounds")

    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "command": command,
                    "torch": torch.__version__,
                    "torchvision": torchvision.__version__, "timm": timm.__version__,
                    "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "device": str(device), "gpu": gpu_name, "load_average_start": load,
                    "batch_size": args.batch_size, "workers": args.workers,
                    "warmup": args.warmup, "steps": args.steps, "rounds": args.rounds,
                    "configs": []}
    need = (args.warmup + args.steps + 1) * args.batch_size
    with tempfile.TemporaryDirectory(prefix="bench_engine_") as tmp:
        work = Path(tmp)
        root, packed = prepare_data(args, work, need)
        for name in args.configs:
            report["configs"].append(bench_config(name, args, root, packed, work, device))
        if cuda and args.gpu is not False:
            report["gpu_bench"] = bench_gpu(args, device, gpu_name)
        else:
            print("\nGPU: not measured (no CUDA device)" if not cuda
                  else "\nGPU: not measured (--no-gpu)")
            report["gpu_bench"] = None

    report["load_average_end"] = _load_average()
    print_summary(report)
    if args.json:
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return report


ENGINES = {"engine": "sample", "engine_batch": "batch"}  # loop name -> data.augment


def bench_config(name: str, args, root: Path, packed: Path, work: Path,
                 device: torch.device) -> dict:
    recipe, overrides = CONFIGS[name]
    common = [*overrides, f"data.root={root}", f"data.layout={args.layout}",
              f"optim.batch_size={args.batch_size}", f"data.num_workers={args.workers}",
              f"run.out_dir={work / 'unused'}"]
    cfg = load_config(recipe, common)
    engine_cfgs = {k: load_config(recipe, [*common, f"data.packed={packed}",
                                           f"data.augment={mode}"])
                   for k, mode in ENGINES.items()}
    tables = open_splits(cfg)
    train_table = tables[0]
    if len(train_table) // args.batch_size < args.warmup + args.steps + 1:
        raise SystemExit(f"{name}: {len(train_table)} training images give fewer than "
                         f"{args.warmup + args.steps + 1} batches of {args.batch_size}; "
                         "lower --steps or --batch-size, or give more data")
    jobs = {k: build_job(c, tables, device=device) for k, c in engine_cfgs.items()}
    if any(j.train_ds.packed is None for j in jobs.values()):
        raise SystemExit(f"{name}: the engine would not read the pack {packed}")
    print(f"\n{name}: recipe {recipe} ({cfg.model.backbone}, {cfg.data.img_size} px from "
          f"{cfg.data.resize}), {len(train_table)} training images")

    baseline = Baseline(cfg, train_table, device)
    bs = args.batch_size
    # data paths alone: the baseline's Dataset, the engine's (packed) datasets, the batched
    # one with its BatchAugment on the training device
    batches = max(2, min(args.steps, len(train_table) // bs - 2))
    data = {"baseline": data_rate(baseline.loader(), batches)}
    for k, job in jobs.items():
        loader = DataLoader(job.train_ds, batch_size=bs, shuffle=True, drop_last=True,
                            num_workers=args.workers, collate_fn=job.train_ds.collate)
        aug = job.augment.to(device) if job.augment is not None else None
        data[k] = data_rate(loader, batches, aug, device)
    print("  data only (" + f"{batches} batches): " + ", ".join(
        f"{k} {v:,.0f} img/s" for k, v in data.items()))

    loops = ["baseline", *ENGINES]
    rates: dict[str, list[float]] = {k: [] for k in loops}
    for r in range(args.rounds):
        order = loops if r % 2 == 0 else loops[::-1]
        for which in order:
            if which == "baseline":
                s = baseline.run(args.warmup, args.steps)
            else:
                s = engine_seconds(engine_cfgs[which], work, tables, args.warmup, args.steps,
                                   f"{name}-{which}-{r}")
            rates[which].append(args.steps * bs / s if s > 0 else float("nan"))
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k} {v[-1]:,.1f} img/s" for k, v in rates.items()) + "; ratios " + ", ".join(
            f"{k} {rates[k][-1] / rates['baseline'][-1]:.2f}x" for k in ENGINES), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratios = {k: [e / b for e, b in zip(rates[k], rates["baseline"])] for k in ENGINES}
    save_s, save_mb = checkpoint_save_seconds(baseline, work / f"ckpt-{name}.pt")
    every = engine_cfgs["engine"].run.log_every
    step_s = bs / med["engine"]
    print(f"  one last.pt save: {save_mb:,.0f} MB in {save_s:.2f} s; the recipe saves every "
          f"{every} steps: +{100 * save_s / (every * step_s):.0f}% on the engine's step time")
    return {"name": name, "recipe": recipe, "backbone": cfg.model.backbone,
            "img_size": cfg.data.img_size, "resize": cfg.data.resize,
            "train_images": len(train_table), "img_s": rates, "img_s_median": med,
            "ratio": statistics.median(ratios["engine"]), "ratio_per_round": ratios["engine"],
            "ratio_batch": statistics.median(ratios["engine_batch"]),
            "ratio_batch_per_round": ratios["engine_batch"],
            "data_only_img_s": data, "checkpoint_save_s": save_s, "checkpoint_mb": save_mb,
            "checkpoint_every": every,
            "checkpoint_overhead": save_s / (every * step_s)}


def bench_gpu(args, device: torch.device, gpu_name: str) -> dict:
    print(f"\nGPU: ViT-B/16 at 224, batch {args.gpu_batch}, bf16 autocast, the engine's step "
          "on resident synthetic tensors")
    res = model_step_bench(device, "vit_base_patch16_224", 224, args.gpu_batch, warmup=3,
                           steps=args.gpu_steps, rounds=max(args.rounds, 3), amp=True)
    peak = args.peak_tflops or peak_tflops(gpu_name)
    res["gpu"], res["peak_tflops"] = gpu_name, peak
    res["peak_fraction"] = res["tflop_s"] / peak if peak else None
    return res


def print_summary(report: dict) -> None:
    print(f"\n{'config':<14} {'baseline':>9} {'engine':>8} {'eng/base':>9} {'per round':>16} "
          f"{'batch aug':>10} {'b.a./base':>10} {'data: base':>11} {'engine':>7} "
          f"{'batch aug':>10} {'ckpt':>5}")
    for c in report["configs"]:
        m, d = c["img_s_median"], c["data_only_img_s"]
        rounds = "/".join(f"{x:.2f}" for x in c["ratio_per_round"])
        print(f"{c['name']:<14} {m['baseline']:>9,.1f} {m['engine']:>8,.1f} "
              f"{c['ratio']:>8.2f}x {rounds:>16} {m['engine_batch']:>10,.1f} "
              f"{c['ratio_batch']:>9.2f}x {d['baseline']:>11,.0f} {d['engine']:>7,.0f} "
              f"{d['engine_batch']:>10,.0f} {100 * c['checkpoint_overhead']:>4.0f}%")
    print("(img/s, median over rounds; engine: data.augment=sample, batch aug: "
          "data.augment=batch;\n ratios: median of the per-round ratios to the baseline; "
          "data: each loop's Dataset + DataLoader\n (+ BatchAugment) alone; ckpt: one last.pt "
          "save per the recipe's log_every steps, as a\n share of the engine's step time, "
          "not in the img/s)")
    spread = [c["name"] for c in report["configs"]
              if max(c["ratio_per_round"]) > 1.25 * min(c["ratio_per_round"])]
    if spread:
        print(f"UNSTABLE: per-round ratios of {', '.join(spread)} differ by more than 25%: "
              f"the machine was busy (load average {report['load_average_start']:.2f} -> "
              f"{report['load_average_end']:.2f}); rerun on a "
              "quiet machine, or with --threads 1 where other jobs share the cores")
    g = report.get("gpu_bench")
    if g:
        frac = (f"{100 * g['peak_fraction']:.1f}% of {g['peak_tflops']:.0f} TFLOP/s peak"
                if g["peak_fraction"] is not None else "unknown peak")
        print(f"GPU {g['gpu']}: {g['backbone']} at {g['img_size']}, batch {g['batch']}, bf16: "
              f"{g['img_s_median']:,.0f} img/s, {g['gflop_per_step']:,.0f} GFLOP/step, "
              f"{g['tflop_s']:,.1f} TFLOP/s = {frac}; peak memory {g['peak_mem_gib']:.1f} GiB")


if __name__ == "__main__":
    main()
