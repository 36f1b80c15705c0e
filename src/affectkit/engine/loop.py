"""The training loop: ``train(cfg)`` runs a config to the end, resumably, in one process or
under ``torchrun`` (DDP).

What is trained comes from ``build_job(cfg)`` (model, task, datasets, scoring); the loop
adds what every run shares: AdamW with layer decay, warm-up + cosine per step, gradient
accumulation and clipping, AMP, channels-last, ``torch.compile``, DDP, checkpoints,
logging.

Per run folder (``cfg.run.out_dir``): ``config.yaml`` (the resolved config, git SHA),
``last.pt`` (everything needed to resume; rewritten atomically every ``checkpoint_every``
optimiser steps and at every epoch end), ``best.pt`` (weights of the best validation
epoch by the task's official score), ``metrics.jsonl`` (one line per epoch) and
TensorBoard scalars under ``tb/``.

Resume is exact: the training order of epoch ``e`` is ``DistributedSampler``'s, seeded
with ``seed + e`` (not from the global RNG), so a checkpoint taken after ``micro_step``
batches of an epoch resumes by skipping exactly those batches, and every RNG
(augmentation, dropout, token masking; each rank's own) is restored from the checkpoint.
With ``data.num_workers == 0`` a killed-and-resumed run ends with bitwise the weights of
an uninterrupted one (tested with 1 and 2 processes); with workers the data order is
still exact, but the workers' augmentation streams restart. Batched augmentation on the
device (``data.augment``, ``Job.augment``) draws from the device's RNG, which is
checkpointed too, so it resumes exactly with workers as well.

Speed: the batch losses stay on the device and are read back (one sync) only every
``run.log_every`` steps, at checkpoints and at the end of an epoch; the time spent
waiting for the DataLoader is logged as ``data_wait`` (a share of the training time).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..config import Config, ConfigError, config_to_dict, dump_config, flat_config
from ..data.table import FaceTable
from ..io import atomic_write_text
from ..kinds import get_kind
from ..models.checkpoint import save_checkpoint
from . import dist
from .build import build_job, open_splits, with_data_stats
from .evaluation import infer, to_device
from .optim import WarmupCosine, build_optimizer, scaled_lr
from .state import (
    TrainState,
    capture_rng,
    latest_checkpoint,
    load_training_checkpoint,
    read_training_checkpoint,
    restore_rng,
    save_training_checkpoint,
)

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
BEST = "best.pt"


class SimulatedKill(KeyboardInterrupt):
    """Raised by ``train(stop_after_steps=k)`` after optimiser step ``k``, like a kill:
    nothing beyond what the loop had already written is saved."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1
                ) -> list[int]:
    """This rank's training order in ``epoch``: ``DistributedSampler`` (shuffled, seeded by
    ``seed + epoch`` only, ``drop_last``), so it can be recomputed on resume. With one
    process it is a permutation of all ``n`` samples."""
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return list(sampler)


class _Boundary:
    """Loop position, epoch sums (with the loss sums still on the device) and RNGs right
    after an optimiser step."""

    def __init__(self, state: TrainState, sums: dict, pending: dict[str, torch.Tensor]):
        self.state = TrainState(**vars(state))
        self.sums = json.loads(json.dumps(sums))
        self.pending = dict(pending)  # the tensors are replaced, never changed in place
        self.rng = capture_rng()


class _rng_restored:
    """Run a block with the RNGs set to ``rng`` (for ``save_training_checkpoint``)."""

    def __init__(self, rng: dict):
        self.rng = rng

    def __enter__(self):
        self.now = capture_rng()
        restore_rng(self.rng)

    def __exit__(self, *exc):
        restore_rng(self.now)


RESUME_MAY_CHANGE = ("run.out_dir", "data.root", "data.images", "data.packed")


def resolve_run_config(cfg: Config, saved_config: dict | None = None) -> Config:
    """The config a run trains with, and saves in its checkpoints: data.mean / std fixed
    (``with_data_stats``; ``saved_config``: the run being resumed) and what the model
    kind derives from the files it starts from."""
    cfg = with_data_stats(cfg, saved_config)
    return get_kind(cfg.model.kind).resolve(cfg)


def _check_same_config(saved: dict | None, now: dict, path: Path) -> None:
    """Refuse to resume ``path`` under another config (the schedule, data order and model
    would silently mix); where the data lives may change."""
    if saved is None:
        return
    a, b = flat_config(saved), flat_config(now)
    defaults = flat_config(config_to_dict(Config()))
    # a key added to the schema after the checkpoint was written is fine at its default
    diff = [f"{k}: {a.get(k)!r} in the checkpoint, {b.get(k)!r} now"
            for k in sorted(set(a) | set(b))
            if k not in RESUME_MAY_CHANGE and a.get(k) != b.get(k)
            and not (k not in a and k in defaults and b.get(k) == defaults[k])]
    if diff:
        raise ConfigError([f"{path} was trained with another config; resume it with the "
                           "same settings, or start fresh (--no-resume / another "
                           "run.out_dir):", *diff])


def _loader_generator(seed: int, epoch: int, micro_step: int) -> torch.Generator:
    """A DataLoader's own generator: creating its iterator draws a worker base seed, which
    from the global RNG would shift every later random number after a resume."""
    return torch.Generator().manual_seed(hash((seed, epoch, micro_step)) % 2**63)


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 convolutions and matmuls run natively (oneDNN)."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def amp_dtype_for(cfg: Config, device: torch.device) -> torch.dtype | None:
    """bf16 / fp16 autocast dtype, or None. ``auto``: bf16 on CUDA, fp32 elsewhere (exact
    and reproducible). ``bf16`` on a CPU: only where it has native bf16 (AMX / AVX512-BF16:
    a training step of the face CNNs 2.3-2.9x faster, benchmarks/bench_precision.py);
    elsewhere it is emulated and many times slower than fp32, so fp32 with a warning."""
    mode = cfg.run.amp
    if mode == "off":
        return None
    if device.type != "cuda":
        if mode == "auto":
            return None
        if device.type == "cpu" and mode == "bf16" and cpu_has_native_bf16():
            return torch.bfloat16
        log.warning("run.amp=%s ignored on %s: %s", mode, device.type,
                    "fp16 autocast only on CUDA" if mode == "fp16" else
                    "this CPU has no native bf16 (AMX / AVX512-BF16): emulated bf16 is "
                    "many times slower than fp32")
        return None
    if mode == "fp16":
        return torch.float16
    return torch.bfloat16


class _MetricsLog:
    """``metrics.jsonl``: appended with fsync; on resume truncated (atomically) to the
    epochs the checkpoint has finished, so a kill between the two writes cannot duplicate."""

    def __init__(self, path: Path):
        self.path = path

    def truncate_to(self, epochs_done: int) -> None:
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["epoch"] < epochs_done:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def append(self, row: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("TensorBoard logging off: the 'tensorboard' package is not installed "
                    "(pip install tensorboard); metrics.jsonl has every number")
        return None
    return SummaryWriter(str(run_dir / "tb"))


def train(cfg: Config, run_dir: str | os.PathLike | None = None, resume: bool = True,
          max_steps: int | None = None, stop_after_steps: int | None = None,
          checkpoint_every: int | None = None, progress: bool = True,
          tables: tuple[FaceTable, FaceTable] | None = None) -> Path:
    """Train ``cfg`` to the end (or ``max_steps`` optimiser steps); return the run folder.

    ``resume``: continue from ``run_dir/last.pt`` when there is one. ``checkpoint_every``:
    also save ``last.pt`` every this many optimiser steps (default ``run.log_every``).
    ``stop_after_steps``: raise ``SimulatedKill`` after that many optimiser steps of this
    call, emulating a kill (tests). ``tables``: the (train, val) tables of
    ``open_splits(cfg)`` when the caller has already opened them (the CLI validates first).

    Under ``torchrun`` every process runs this: each trains on its ``DistributedSampler``
    share with ``optim.batch_size`` images per step, gradients are averaged by DDP,
    validation covers the exact validation set, and rank 0 alone writes the run folder.
    """
    info = dist.init_distributed()
    rank, world, main = info.rank, info.world_size, info.is_main
    run_dir = Path(run_dir if run_dir is not None else cfg.run.out_dir)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    o, r = cfg.optim, cfg.run
    seed_everything(r.seed + rank)  # DDP broadcasts rank 0's initial weights
    device = dist.device_for(info)
    last = latest_checkpoint(run_dir) if resume else None
    saved = read_training_checkpoint(last) if last is not None else None
    # e.g. progressive stage 2: its task models' widths
    cfg = resolve_run_config(cfg, saved.get("config") if saved is not None else None)

    job = build_job(cfg, tables if tables is not None else open_splits(cfg), device=device)
    task, model = job.task, job.model
    augment = job.augment.to(device) if job.augment is not None else None
    if main and augment is not None:
        log.info("training augmentation batched on %s (data.augment=%s)", device,
                 cfg.data.augment)
    if isinstance(getattr(task, "au_pos_weight", None), torch.Tensor):
        task.au_pos_weight = task.au_pos_weight.to(device)
    model = model.to(device)
    is_cnn = not getattr(getattr(model, "backbone", None), "is_vit", True)
    channels_last = bool(r.channels_last or is_cnn)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp_dtype = amp_dtype_for(cfg, device)

    per_rank = len(epoch_order(len(job.train_ds), r.seed, 0, rank, world))
    steps_per_epoch = per_rank // o.batch_size // o.accum_steps  # full batches only
    if steps_per_epoch < 1:
        raise ValueError(f"{len(job.train_ds)} training images make no optimiser step of "
                         f"batch_size {o.batch_size} x accum_steps {o.accum_steps} x "
                         f"{world} process(es)")
    micro_per_epoch = steps_per_epoch * o.accum_steps
    total_steps = o.epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    peak = scaled_lr(o.base_lr, o.batch_size, o.accum_steps, world)
    optimizer = build_optimizer(model, peak, o.weight_decay, o.layer_decay, o.betas)
    scheduler = WarmupCosine(optimizer, peak, min(round(o.warmup_epochs * steps_per_epoch),
                                                  o.epochs * steps_per_epoch),
                             o.epochs * steps_per_epoch, min_lr=min(o.min_lr, peak))
    scaler = torch.amp.GradScaler("cuda") if amp_dtype is torch.float16 else None

    config_dict = config_to_dict(cfg)
    state = TrainState()
    sums: dict = {"losses": {}, "batches": 0, "images": 0, "seconds": 0.0, "wait": 0.0}
    metrics = _MetricsLog(run_dir / METRICS)
    if last is not None:
        _check_same_config(saved.get("config"), config_dict, last)
        state = load_training_checkpoint(last, model, optimizer, scheduler, scaler, ckpt=saved)
        ckpt_extra = saved.get("extra") or {}
        sums = ckpt_extra.get("epoch_sums", sums)
        rank_rng = ckpt_extra.get("rank_rng")
        if world > 1:
            if rank_rng is not None and len(rank_rng) == world:
                restore_rng(rank_rng[rank])
            else:
                log.warning("%s was saved by another number of processes: this rank's "
                            "random streams restart", last)
        if main:
            log.info("resuming %s: epoch %d, step %d, batch %d of the epoch", last,
                     state.epoch, state.step, state.micro_step)
            metrics.truncate_to(state.epoch)
    elif main and (run_dir / METRICS).exists():
        metrics.truncate_to(0)  # a fresh run in an old folder
    if main:
        dump_config(cfg, run_dir / "config.yaml")  # after the resume check: never a wrong one
    ddp_model = model
    if world > 1:
        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    fwd_model = torch.compile(ddp_model) if r.compile else ddp_model
    every = checkpoint_every or r.log_every
    tb = _tensorboard(run_dir) if main else None

    def save_last() -> None:
        extra = {"epoch_sums": sums}
        if world > 1:  # every rank's RNG, so that each resumes its own streams
            extra["rank_rng"] = dist.gather_objects(capture_rng())
        if main:
            save_training_checkpoint(run_dir / "last.pt", model, optimizer, scheduler, scaler,
                                     state, config=config_dict, extra=extra)

    steps_this_call = 0
    last_lr = scheduler.lr_at(max(state.step - 1, 0))
    # the loop's position at the last optimiser-step boundary, for a Ctrl-C save that
    # resumes as exactly as a periodic one (a kill mid-batch must not record that batch)
    boundary = None
    # per-batch losses stay on the device (float64: sums exact in any grouping) until a
    # flush; reading them every batch would make the CPU wait for the GPU at every step
    pending: dict[str, torch.Tensor] = {}
    flushed_at = state.step

    def flush() -> dict[str, float]:
        """Add the pending loss sums to ``sums`` (one device sync); stop on a non-finite
        loss before anything is saved. Returns the latest batch's losses."""
        nonlocal flushed_at
        if not pending:
            return {}
        names = sorted(pending)
        values = torch.stack([pending[k] for k in names]
                             + [latest_losses[k] for k in names]).tolist()
        totals, latest = dict(zip(names, values)), dict(zip(names, values[len(names):]))
        bad = {k: v for k, v in totals.items() if not np.isfinite(v)}
        if bad:
            raise FloatingPointError(
                f"loss is not finite in epoch {state.epoch}, optimiser steps "
                f"{flushed_at}..{state.step}: sums {bad}, last batch {latest}")
        for k, v in totals.items():
            sums["losses"][k] = sums["losses"].get(k, 0.0) + v
        pending.clear()
        flushed_at = state.step
        return latest

    latest_losses: dict[str, torch.Tensor] = {}
    model.train()
    bar = None
    try:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=state.step, unit="step",
                   disable=not (progress and main), dynamic_ncols=True, file=sys.stderr)
        while state.epoch < o.epochs:
            if state.step >= total_steps and state.micro_step < micro_per_epoch:
                break  # max_steps reached (an epoch whose batches are all done still ends)
            epoch = state.epoch
            order = epoch_order(len(job.train_ds), r.seed, epoch, rank, world)
            batches = [order[i * o.batch_size:(i + 1) * o.batch_size]
                       for i in range(micro_per_epoch)]
            loader = DataLoader(job.train_ds, batch_sampler=batches[state.micro_step:],
                                num_workers=cfg.data.num_workers,
                                collate_fn=getattr(job.train_ds, "collate", None),
                                pin_memory=device.type == "cuda",
                                generator=_loader_generator(r.seed, epoch, state.micro_step))
            bar.set_description(f"epoch {epoch + 1}/{o.epochs}")
            t0 = time.perf_counter()
            batch_iter = iter(loader)
            while True:
                t_wait = time.perf_counter()
                batch = next(batch_iter, None)
                sums["wait"] = sums.get("wait", 0.0) + time.perf_counter() - t_wait
                if batch is None:
                    break
                batch = to_device(batch, device)
                if augment is not None:
                    batch["image"] = augment(batch["image"])
                if channels_last and "image" in batch:
                    batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
                syncs = (state.micro_step + 1) % o.accum_steps == 0
                sync = nullcontext() if syncs or world == 1 else ddp_model.no_sync()
                ctx = torch.autocast(device.type, amp_dtype) if amp_dtype else nullcontext()
                with sync:
                    with ctx:
                        out = job.forward(fwd_model, batch)
                        losses = task(out, batch)
                    loss = losses["loss"].float() / o.accum_steps
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                latest_losses = {k: v.detach().double() for k, v in losses.items()}
                for k, v in latest_losses.items():
                    pending[k] = pending[k] + v if k in pending else v
                sums["batches"] += 1
                sums["images"] += len(batch["index"])  # images, or windows (stage 2)
                state.micro_step += 1
                if not syncs:
                    continue
                boundary = None  # weights change from here until the step is counted
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if o.clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                lr = last_lr = scheduler.lr_at(state.step)
                scheduler.step()
                state.step += 1
                steps_this_call += 1
                bar.update(1)
                end_of_epoch = state.micro_step >= micro_per_epoch
                if state.step % r.log_every == 0 or end_of_epoch:
                    latest = flush()
                    elapsed = sums["seconds"] + time.perf_counter() - t0
                    ips = world * sums["images"] / elapsed if elapsed > 0 else 0.0
                    wait = sums["wait"] / elapsed if elapsed > 0 else 0.0
                    bar.set_postfix(loss=f"{latest['loss']:.4f}", img_s=f"{ips:.1f}",
                                    wait=f"{wait:.0%}", lr=f"{lr:.2e}")
                    if tb is not None and state.step % r.log_every == 0:
                        for k, v in latest.items():
                            tb.add_scalar(f"train/{k}", v, state.step)
                        tb.add_scalar("train/lr", lr, state.step)
                        tb.add_scalar("train/img_per_s", ips, state.step)
                        tb.add_scalar("train/data_wait", wait, state.step)
                if not end_of_epoch and state.step % every == 0:
                    flush()
                    sums["seconds"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    save_last()
                boundary = _Boundary(state, sums, pending) if world == 1 else None
                if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                    raise SimulatedKill(f"stopped after {steps_this_call} steps")
                if state.step >= total_steps:
                    break
            sums["seconds"] += time.perf_counter() - t0
            flush()
            if state.micro_step < micro_per_epoch:  # max_steps reached mid-epoch
                save_last()
                break
            # ---- end of epoch: validate, log, checkpoint
            row = _epoch_row(epoch, state.step, last_lr, sums, world)
            validate = job.val_ds is not None and (
                (epoch + 1) % r.eval_every == 0 or epoch + 1 == o.epochs)
            if validate:
                arrays = infer(model, job.val_ds, job.collect, batch_size=o.batch_size,
                               num_workers=cfg.data.num_workers, device=device,
                               amp_dtype=amp_dtype, channels_last=channels_last,
                               forward=job.forward)
                val = job.score(arrays)
                row["val"] = val
                if r.select_by not in val:
                    raise ConfigError(f"run.select_by={r.select_by!r}: this run's validation "
                                      f"has no such score (it has {sorted(val)})")
                score = val[r.select_by]
                numbers = {k: v for k, v in val.items() if isinstance(v, (int, float))}
                if tb is not None:
                    for k, v in numbers.items():
                        tb.add_scalar(f"val/{k}", v, state.step)
                if state.best_score is None or score > state.best_score:
                    state.best_score, state.best_epoch = float(score), epoch
                    if main:
                        save_checkpoint(run_dir / BEST, model.state_dict(), config=config_dict,
                                        epoch=epoch, step=state.step, metrics=numbers)
                if main:
                    log.info("epoch %d: %s", epoch, ", ".join(
                        f"{k} {v:.4f}" for k, v in numbers.items()
                        if k in ("score", "va", "expr_f1", "au_f1", "recon_loss")))
                    if job.on_epoch_end is not None:
                        job.on_epoch_end(model, run_dir, epoch, val)
            if main:
                metrics.append(row)
            state.epoch, state.micro_step = epoch + 1, 0
            sums = {"losses": {}, "batches": 0, "images": 0, "seconds": 0.0, "wait": 0.0}
            boundary = None
            save_last()
    except SimulatedKill:
        raise
    except KeyboardInterrupt:
        if boundary is not None:  # interrupted inside a step: keep its start
            state, sums = boundary.state, boundary.sums
            pending.clear()
            pending.update(boundary.pending)
            flush()
            with _rng_restored(boundary.rng):
                save_last()
            log.warning("interrupted: saved %s at epoch %d, step %d; run again to resume",
                        run_dir / "last.pt", state.epoch, state.step)
        raise
    finally:
        if bar is not None:
            bar.close()
        if tb is not None:
            tb.close()
    if main:
        log.info("done: %s (best %s at epoch %s)", run_dir, state.best_score, state.best_epoch)
    dist.barrier()  # rank 0's files are complete before any rank returns
    return run_dir


def _epoch_row(epoch: int, step: int, lr: float, sums: dict, world: int) -> dict:
    """One ``metrics.jsonl`` row: mean training losses over every rank's batches."""
    names = sorted(sums["losses"])
    totals = dist.all_reduce_sum([sums["losses"][k] for k in names]
                                 + [sums["batches"], sums["images"]])
    n = max(totals[-2], 1)
    return {"epoch": epoch, "step": step,
            "train": {k: v / n for k, v in zip(names, totals[:-2])}, "lr": lr,
            "img_per_s": totals[-1] / sums["seconds"] if sums["seconds"] else None,
            # share of the training time spent waiting for the DataLoader (this rank)
            "data_wait": sums.get("wait", 0.0) / sums["seconds"] if sums["seconds"] else None,
            "world_size": world}


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
