"""Progressive learning's joint model (ABAW7 winner, stage 2): fuse the task models'
per-frame features, model a window of frames of one video, predict every frame.

- ``FeatureFusion``: the paper's sum of the task features then Linear-ReLU-Dropout-Linear;
  ``concat`` and a ``gated`` (softmax attention over the tasks, per frame) variant to
  compare. Features of unequal widths are projected to a common width first.
- ``TemporalModule``: sequence to sequence over (B, L, D) with a padding mask: a
  Transformer encoder with sinusoidal positional encoding of the real frame index (gaps
  stay gaps), an LSTM or GRU (bidirectional), a TCN (dilated non-causal convolutions), or
  ``none`` (window 1: a per-frame model).
- ``JointModel``: fusion, temporal module and the AU / EXPR / VA heads, outputs shaped
  (B, L, ...) under the names the multi-task losses read.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..labels import ABAW_AU, ABAW_EXPR

FUSIONS = ("sum", "concat", "gated")
TEMPORALS = ("none", "transformer", "lstm", "gru", "tcn")


class FeatureFusion(nn.Module):
    def __init__(self, dims: list[int], hidden: int = 512, mode: str = "sum",
                 dropout: float = 0.1):
        super().__init__()
        if mode not in FUSIONS:
            raise ValueError(f"fusion {mode!r}: one of {FUSIONS}")
        self.mode, self.dims = mode, list(dims)
        width = max(dims)
        # sum and gated combine equal widths: project only the features that differ
        self.proj = nn.ModuleList(nn.Identity() if d == width or mode == "concat"
                                  else nn.Linear(d, width) for d in dims)
        into = sum(dims) if mode == "concat" else width
        self.gate = nn.Linear(width, 1) if mode == "gated" else None
        self.mlp = nn.Sequential(nn.Linear(into, hidden), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout), nn.Linear(hidden, hidden))
        self.out_dim = hidden

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``features``: one (B, L, d_i) tensor per task model -> (B, L, hidden)."""
        if len(features) != len(self.dims):
            raise ValueError(f"{len(features)} feature tensors for {len(self.dims)} inputs")
        xs = [p(f) for p, f in zip(self.proj, features)]
        if self.mode == "concat":
            x = torch.cat(xs, dim=-1)
        elif self.mode == "sum":
            x = torch.stack(xs).sum(0)
        else:
            stacked = torch.stack(xs, dim=-2)  # (B, L, T, D)
            weights = torch.softmax(self.gate(stacked), dim=-2)
            x = (weights * stacked).sum(-2)
        return self.mlp(x)


def frame_encoding(frames: torch.Tensor, dim: int, period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal encoding (B, L, dim) of frame indices (B, L), relative to each window's
    first frame: a gap of 5 frames is 5 steps, not 1."""
    rel = (frames - frames[:, :1]).clamp(min=0).float().unsqueeze(-1)
    half = dim // 2
    freq = torch.exp(-math.log(period) * torch.arange(half, device=frames.device) / half)
    angles = rel * freq
    enc = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return nn.functional.pad(enc, (0, dim - enc.shape[-1]))


class _TCN(nn.Module):
    def __init__(self, dim: int, layers: int, kernel: int = 3, dropout: float = 0.1):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(dim, dim, kernel, padding=(kernel - 1) // 2 * 2 ** i,
                                    dilation=2 ** i), nn.ReLU(), nn.Dropout(dropout))
            for i in range(layers))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        mask = valid.unsqueeze(1).float()
        h = x.transpose(1, 2) * mask  # padding contributes zeros, never values
        for block in self.blocks:
            h = (h + block(h)) * mask
        return h.transpose(1, 2)


class TemporalModule(nn.Module):
    def __init__(self, dim: int, kind: str = "transformer", layers: int = 2, heads: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        if kind not in TEMPORALS:
            raise ValueError(f"temporal module {kind!r}: one of {TEMPORALS}")
        self.kind, self.dim = kind, dim
        if kind == "transformer":
            layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout, batch_first=True,
                                               norm_first=True)
            self.net = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        elif kind in ("lstm", "gru"):
            rnn = nn.LSTM if kind == "lstm" else nn.GRU
            self.net = rnn(dim, dim // 2, layers, batch_first=True, bidirectional=True,
                           dropout=dropout if layers > 1 else 0.0)
        elif kind == "tcn":
            self.net = _TCN(dim, layers, dropout=dropout)
        else:
            self.net = None

    def forward(self, x: torch.Tensor, frames: torch.Tensor, valid: torch.Tensor
                ) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); ``valid`` (B, L) False at padding, which no real frame's
        output depends on."""
        if self.kind == "none":
            return x
        if self.kind == "transformer":
            return self.net(x + frame_encoding(frames, self.dim), src_key_padding_mask=~valid)
        if self.kind == "tcn":
            return self.net(x, valid)
        lengths = valid.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.net(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=x.shape[1])
        return out


class JointModel(nn.Module):
    """Stage 2: ``FeatureFusion`` -> ``TemporalModule`` -> per-frame heads of ``tasks``
    (the task combination of the strategy search: e.g. AU + VA only).

    Padding rides along: windows are padded only at the end (``data.windows``), which the
    packed RNNs require."""

    def __init__(self, dims: list[int], hidden: int = 512, fusion: str = "sum",
                 temporal: str = "transformer", layers: int = 2, heads: int = 4,
                 dropout: float = 0.1, tasks=("au", "expr", "va")):
        super().__init__()
        self.fusion = FeatureFusion(dims, hidden, fusion, dropout)
        self.temporal = TemporalModule(hidden, temporal, layers, heads, dropout)
        self.tasks = tuple(t for t in ("au", "expr", "va") if t in tasks)
        self.au_head = nn.Linear(hidden, len(ABAW_AU)) if "au" in tasks else None
        self.expr_head = nn.Linear(hidden, len(ABAW_EXPR)) if "expr" in tasks else None
        self.va_head = nn.Linear(hidden, 2) if "va" in tasks else None

    def forward(self, features: list[torch.Tensor], frames: torch.Tensor,
                valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """``au_logits`` (B, L, 12), ``expr_logits`` (B, L, 8), ``va`` (B, L, 2), those of
        its ``tasks``."""
        h = self.temporal(self.fusion(features), frames, valid)
        out = {}
        if self.au_head is not None:
            out["au_logits"] = self.au_head(h)
        if self.expr_head is not None:
            out["expr_logits"] = self.expr_head(h)
        if self.va_head is not None:
            out["va"] = torch.tanh(self.va_head(h))
        return out


class ProgressiveModel(nn.Module):
    """The stage-2 model as trained: the joint model over concatenated task features
    (B, L, sum of dims) read from the feature stores, or, end to end, over windows of
    face images (B, L, 3, H, W) that go through the task ``backbones`` (fine-tuned with
    it; padding frames never reach them)."""

    def __init__(self, joint: JointModel, backbones: list[nn.Module] | None = None):
        super().__init__()
        self.joint = joint
        self.dims = list(joint.fusion.dims)
        self.backbones = nn.ModuleList(backbones) if backbones else None

    def forward(self, inputs: torch.Tensor, frames: torch.Tensor, valid: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        if self.backbones is None:
            if inputs.shape[-1] != sum(self.dims):
                raise ValueError(f"features of width {inputs.shape[-1]} for task models of "
                                 f"widths {self.dims} (sum {sum(self.dims)})")
            return self.joint(list(inputs.split(self.dims, dim=-1)), frames, valid)
        frames_in = inputs[valid]  # (n, 3, H, W): the real frames only
        features = []
        for backbone, dim in zip(self.backbones, self.dims):
            f = inputs.new_zeros(*valid.shape, dim)
            f[valid] = backbone(frames_in).to(f.dtype)
            features.append(f)
        return self.joint(features, frames, valid)
