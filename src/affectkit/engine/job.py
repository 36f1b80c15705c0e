"""What the training loop needs besides the config: a ``Job``.

``engine.loop.train`` is one loop for every kind of run (multi-task fine-tuning, masked
CoTEX, MAE pretraining). ``engine.build.build_job`` turns a config into a ``Job``; the
loop adds everything that is the same for all of them: optimiser and schedule, AMP,
accumulation, DDP, checkpoints and exact resume, logging.

Validation is split in two so that it can run sharded over DDP ranks: ``collect`` turns
one batch's outputs into per-sample tensors (first dimension = batch), the loop gathers
them from every rank in dataset order, and ``score`` turns the whole-set arrays into
scores, ``score`` being the number to maximise (best checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


def image_forward(model: nn.Module, batch: dict) -> dict:
    """The forward pass of every image model: ``model(batch["image"])``."""
    return model(batch["image"])


@dataclass
class Job:
    model: nn.Module  # forward(images) -> dict of named outputs (masking: its own argument)
    task: Callable[[dict, dict], dict[str, torch.Tensor]]  # -> named losses incl. "loss"
    train_ds: Dataset  # items: "index" and what ``forward`` reads ("image": (3, H, W) float,
    # uint8 with ``augment``)
    val_ds: Dataset | None
    collect: Callable[[dict, dict], dict[str, torch.Tensor]]  # (outputs, batch) -> per sample
    score: Callable[[dict[str, np.ndarray]], dict]  # whole-set arrays -> {"score": ..., ...}
    # batched training augmentation on the device: uint8 (B, 3, H, W) -> normalised float;
    # None: ``train_ds`` items are already augmented (per sample, in the DataLoader)
    augment: nn.Module | None = None
    # called on the main rank after each validated epoch: (model, run_dir, epoch, scores)
    on_epoch_end: Callable[[nn.Module, Path, int, dict], None] | None = None
    # (model, batch) -> outputs: what of a batch the model reads (stage 2 of progressive
    # learning: feature windows, frame numbers and the padding mask)
    forward: Callable[[nn.Module, dict], dict] = image_forward
