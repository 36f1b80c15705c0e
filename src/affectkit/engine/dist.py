"""Multi-process training on PyTorch's own engine: ``torchrun`` sets the environment, this
module reads it. NCCL on GPUs, gloo on CPUs (tests run 2 gloo processes on one machine).

Conventions: ``optim.batch_size`` is per process, so the effective batch is
``batch_size * accum_steps * world_size`` and the learning rate scales with it; rank 0
alone writes files; every rank holds the same weights, so any rank can evaluate.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(timeout_s: float = 1800) -> DistInfo:
    """Join the process group that ``torchrun`` described in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``); a no-op for one process."""
    if dist.is_available() and dist.is_initialized():
        return current()
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world} but {key} is not set: start multi-process "
                               "runs with torchrun (e.g. torchrun --nproc-per-node 2 -m "
                               "affectkit train RECIPE)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return current()


def current() -> DistInfo:
    """This process's rank and the world size (one process when no group is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(),
                    int(os.environ.get("LOCAL_RANK", "0")))


def device_for(info: DistInfo) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable; used for numpy arrays of predictions), rank order."""
    info = current()
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (epoch loss sums, image counts)."""
    if not current().enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
