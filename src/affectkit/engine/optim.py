"""AdamW with layer-wise lr decay and the per-iteration warm-up + cosine schedule.

The EMMA recipe (ABAW4, Table 3): AdamW, base lr 5e-4 scaled by effective batch / 256
(``scaled_lr``), weight decay 0.05 on weights only, layer decay 0.65, 5 warm-up epochs then
cosine. Parameter groups come from ``timm.optim.create_optimizer_v2``: no weight decay for
1-D parameters (biases, norms) and ``model.no_weight_decay()`` names (``pos_embed``,
``cls_token``); per-layer ``lr_scale`` from ``model.group_matcher``. A model without a
``group_matcher``, or one whose matcher finds no layers, raises instead of silently giving
every parameter the same lr.
"""

from __future__ import annotations

import logging
import math

import torch
from timm.optim import create_optimizer_v2
from torch import nn

log = logging.getLogger(__name__)


def scaled_lr(base_lr: float, batch_size: int, accum_steps: int = 1, world_size: int = 1) -> float:
    """MAE's rule: ``base_lr * effective_batch / 256``, effective batch =
    ``batch_size * accum_steps * world_size``. Logged, so a run's lr is never a mystery."""
    for name, v in (("batch_size", batch_size), ("accum_steps", accum_steps),
                    ("world_size", world_size)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    eff = batch_size * accum_steps * world_size
    lr = base_lr * eff / 256
    log.info("lr = base_lr %.3g * effective batch %d (%d x %d accum x %d procs) / 256 = %.4g",
             base_lr, eff, batch_size, accum_steps, world_size, lr)
    return lr


def build_optimizer(model: nn.Module, lr: float, weight_decay: float,
                    layer_decay: float | None = None,
                    betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters of ``model``, grouped by timm.

    Every group carries ``lr_scale`` (1.0 without layer decay) and starts at
    ``lr * lr_scale``; ``WarmupCosine`` keeps applying the scale. Frozen parameters
    (``requires_grad=False``, e.g. EMMA's expression branch) are never in the optimiser.
    """
    if layer_decay is not None and not callable(getattr(model, "group_matcher", None)):
        raise ValueError(
            f"layer_decay={layer_decay} needs model.group_matcher() to find the layers, and "
            f"{type(model).__name__} has none; forward the backbone's (see "
            "affectkit.models.prefixed_group_matcher) or pass layer_decay=None")
    opt = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=weight_decay,
                              layer_decay=layer_decay, betas=betas)
    # timm 1.0 already skips frozen parameters; keep that a guarantee of ours, not theirs
    groups = []
    for g in opt.param_groups:
        g["params"] = [p for p in g["params"] if p.requires_grad]
        g.setdefault("lr_scale", 1.0)
        g["lr"] = lr * g["lr_scale"]
        if g["params"]:
            groups.append(g)
    opt.param_groups[:] = groups
    scales = sorted({g["lr_scale"] for g in groups})
    if layer_decay is not None and layer_decay != 1.0 and len(scales) < 2:
        raise ValueError(
            f"layer_decay={layer_decay} had no effect: {type(model).__name__}.group_matcher() "
            "put every parameter in one layer (a wrapper forwarding it without its prefix?)")
    n = sum(p.numel() for g in groups for p in g["params"])
    log.info("AdamW: %d groups, %d trainable parameters, lr %.4g, wd %g, %d lr scales (%.3g..%g)",
             len(groups), n, lr, weight_decay, len(scales), scales[0] if scales else 0,
             scales[-1] if scales else 0)
    return opt


class WarmupCosine:
    """Per-iteration lr: linear from ``start_lr`` to ``peak_lr`` over ``warmup_steps``, then
    half a cosine down to ``min_lr`` at ``total_steps`` (and ``min_lr`` after).

    Optimizer step ``s`` (0-based) runs at ``lr_at(s)``: construction sets step 0, and each
    ``step()`` after ``optimizer.step()`` moves to the next. Each group gets
    ``lr_at(s) * group["lr_scale"]``, so layer decay survives the schedule. The state is a
    plain dict of numbers (``weights_only``-safe); ``load_state_dict`` re-applies the lr.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, peak_lr: float, warmup_steps: int,
                 total_steps: int, min_lr: float = 0.0, start_lr: float = 0.0):
        if not 0 <= warmup_steps <= total_steps or total_steps < 1:
            raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps "
                             f"({total_steps}) and total_steps >= 1")
        if not 0 <= min_lr <= peak_lr or not 0 <= start_lr <= peak_lr:
            raise ValueError(f"need 0 <= min_lr ({min_lr}), start_lr ({start_lr}) "
                             f"<= peak_lr ({peak_lr})")
        self.optimizer = optimizer
        self.peak_lr, self.min_lr, self.start_lr = float(peak_lr), float(min_lr), float(start_lr)
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.last_step = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        """The unscaled lr of optimizer step ``step``; a pure function of the settings."""
        if step < self.warmup_steps:
            return self.start_lr + (self.peak_lr - self.start_lr) * step / self.warmup_steps
        if step >= self.total_steps:
            return self.min_lr
        t = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def _apply(self) -> None:
        lr = self.lr_at(self.last_step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, int | float]:
        return {"last_step": self.last_step, "peak_lr": self.peak_lr, "min_lr": self.min_lr,
                "start_lr": self.start_lr, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps}

    def load_state_dict(self, state: dict[str, int | float]) -> None:
        unknown = set(state) - set(self.state_dict())
        if unknown:
            raise ValueError(f"not a WarmupCosine state: unknown keys {sorted(unknown)}")
        for k, v in state.items():
            setattr(self, k, int(v) if k in ("last_step", "warmup_steps", "total_steps")
                    else float(v))
        self._apply()
