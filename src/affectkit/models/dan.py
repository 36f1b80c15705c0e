"""DAN ("Distract your Attention", Wen et al. 2021) and EMMA's frozen CNN expression branch.

Module and parameter names follow the public DAN code (``features.*``, ``cat_head{i}.*``,
``fc``, ``bn``) so its AffectNet checkpoints (``affecnet8_epoch5_acc0.6209.pth``, key
``model_state_dict``) load with ``strict=True``: a silent partial load would leave random
attention heads behind a plausible-looking softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
from ..labels import ABAW_EXPR, AFFECTNET8, LabelSet
from .checkpoint import load_state_dict_file

# The public 7-class checkpoints drop AffectNet's last class (Contempt).
AFFECTNET7 = LabelSet("affectnet7", "expression", AFFECTNET8.classes[:7])


def _conv_bn(cin: int, cout: int, kernel, padding=0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=padding), nn.BatchNorm2d(cout))


class SpatialAttention(nn.Module):
    """Multi-scale (3x3, 1x3, 3x1) conv response summed over channels: one map per location."""

    def __init__(self, channels: int = 512, reduced: int = 256):
        super().__init__()
        self.conv1x1 = _conv_bn(channels, reduced, 1)
        self.conv_3x3 = _conv_bn(reduced, channels, 3, padding=1)
        self.conv_1x3 = _conv_bn(reduced, channels, (1, 3), padding=(0, 1))
        self.conv_3x1 = _conv_bn(reduced, channels, (3, 1), padding=(1, 0))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1x1(x)
        y = self.relu(self.conv_3x3(y) + self.conv_1x3(y) + self.conv_3x1(y))
        return x * y.sum(dim=1, keepdim=True)


class ChannelAttention(nn.Module):
    """Squeeze-excitation style gate on the pooled, spatially attended features."""

    def __init__(self, channels: int = 512, hidden: int = 32):
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.attention = nn.Sequential(
            nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, channels), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gap(x).flatten(1)
        return x * self.attention(x)


class CrossAttentionHead(nn.Module):
    """Spatial then channel attention; (B, 512, h, w) -> (B, 512)."""

    def __init__(self):
        super().__init__()
        self.sa = SpatialAttention()
        self.ca = ChannelAttention()
        for m in self.modules():  # the public initialisation, for training from scratch
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ca(self.sa(x))


class DAN(nn.Module):
    """ResNet-18 trunk + ``num_head`` cross-attention heads; ``forward`` gives logits (B, K).

    The trunk starts random: the public MS-Celeb initialisation is not bundled; load a
    trained checkpoint with ``load_dan_checkpoint``.
    """

    input_size = 224  # the public training and demo resolution, ImageNet-normalised

    def __init__(self, num_class: int = 8, num_head: int = 4):
        super().__init__()
        self.features = nn.Sequential(*list(resnet18(weights=None).children())[:-2])
        self.num_head = num_head
        for i in range(num_head):  # attribute names are the public checkpoint's key names
            setattr(self, f"cat_head{i}", CrossAttentionHead())
        self.fc = nn.Linear(512, num_class)
        self.bn = nn.BatchNorm1d(num_class)

    @property
    def heads(self) -> list[CrossAttentionHead]:
        return [getattr(self, f"cat_head{i}") for i in range(self.num_head)]

    def forward_all(self, x: torch.Tensor):
        """``(logits (B, K), feature map (B, 512, h, w), heads (B, num_head, 512))``,
        as the public forward returns them (the maps feed DAN's affinity/partition losses)."""
        feats = self.features(x)
        heads = torch.stack([h(feats) for h in self.heads], dim=1)
        if self.num_head > 1:  # the public model competes heads via log-softmax across them
            heads = F.log_softmax(heads, dim=1)
        return self.bn(self.fc(heads.sum(dim=1))), feats, heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[0]


def _strict_load(model: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    """``load_state_dict(strict=True)`` whose error names the file and up to 10 offenders."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{name} ({len(keys)}): {keys[:10]}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
                 if keys]
        raise ValueError(f"{path} does not match {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_dan_checkpoint(path) -> DAN:
    """A DAN with a public-format checkpoint's weights; class and head counts come from it."""
    state = load_state_dict_file(path)  # weights_only; unwraps model_state_dict, module.
    if "fc.weight" not in state or state["fc.weight"].ndim != 2:
        _strict_load(DAN(), state, path)  # raises, listing what does not match
    heads = {k.split(".", 1)[0] for k in state if k.startswith("cat_head")}
    model = DAN(num_class=state["fc.weight"].shape[0], num_head=len(heads) or 1)
    _strict_load(model, state, path)
    return model.eval()


class ExpressionBranch(nn.Module):
    """A frozen expression CNN whose scores come out in ABAW order (B, 8), rows summing to 1.

    Classes are matched BY NAME through ``labels``. Source classes with no ABAW
    counterpart (AffectNet Contempt) are left out of the softmax, so the scores are the
    CNN's distribution conditioned on the shared classes; ABAW classes with no source
    counterpart (Other) score 0. Input: the batch of ``affectkit.data``, normalised with
    ``input_mean`` / ``input_std`` (ImageNet's by default), at any size; it is resized to
    ``input_size`` and re-normalised if the CNN wants other statistics. The CNN stays in
    eval mode whatever ``train()`` is called with, so its BatchNorm statistics cannot
    drift, and nothing in it requires grad.
    """

    def __init__(self, cnn: nn.Module, labels: LabelSet, input_size: int | None = None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, input_mean=IMAGENET_MEAN,
                 input_std=IMAGENET_STD):
        super().__init__()
        target = torch.as_tensor(labels.mapping_to(ABAW_EXPR))
        if not (target >= 0).any():
            raise ValueError(f"label set {labels.name!r} shares no class with ABAW")
        self.cnn = cnn
        self.labels = labels
        self.input_size = int(input_size or getattr(cnn, "input_size", 224))
        self.register_buffer("keep", torch.nonzero(target >= 0).flatten(), persistent=False)
        self.register_buffer("target", target[target >= 0], persistent=False)
        # x_cnn = x * scale + shift maps the input's statistics (data.mean / data.std of the
        # model it sits in) to the CNN's own
        scale = torch.tensor(input_std) / torch.tensor(std)
        shift = (torch.tensor(input_mean) - torch.tensor(mean)) / torch.tensor(std)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> ExpressionBranch:
        """Ignores ``mode``: a frozen branch is always evaluated, even inside a training parent."""
        return super().train(False)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The CNN's own prediction scores (B, ``num_classes``), in ``labels`` order and
        unchanged: what EMMA's VA head reads (the paper's p_EXP2)."""
        x = images
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return self.cnn(x * self.scale + self.shift).float()

    def abaw_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` as a distribution over ABAW's 8 classes (see the class docstring)."""
        probs = torch.softmax(logits[:, self.keep], dim=-1)
        out = probs.new_zeros(len(probs), len(ABAW_EXPR))
        return out.index_copy_(1, self.target, probs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.abaw_scores(self.logits(images))

    @classmethod
    def from_config(cls, kind: str = "dan", checkpoint=None, labels: LabelSet | None = None,
                    input_size: int | None = None, input_mean=IMAGENET_MEAN,
                    input_std=IMAGENET_STD) -> ExpressionBranch:
        """``kind='dan'`` (AffectNet order; random unless ``checkpoint``) or a timm CNN name
        with ``num_classes=len(labels)`` (``labels`` required), optionally loading
        ``checkpoint`` strictly."""
        if kind == "dan":
            cnn = load_dan_checkpoint(checkpoint) if checkpoint is not None else DAN()
            if labels is None:
                labels = {8: AFFECTNET8, 7: AFFECTNET7}.get(cnn.fc.out_features)
            if labels is None or len(labels) != cnn.fc.out_features:
                raise ValueError(f"DAN with {cnn.fc.out_features} classes needs a matching "
                                 f"label set, got {labels}")
            return cls(cnn, labels, input_size=input_size, input_mean=input_mean,
                       input_std=input_std)
        import timm

        if labels is None:
            raise ValueError(f"timm CNN {kind!r} needs the LabelSet of its classifier")
        cnn = timm.create_model(kind, pretrained=False, num_classes=len(labels))
        if checkpoint is not None:
            _strict_load(cnn, load_state_dict_file(checkpoint), checkpoint)
        cfg = cnn.pretrained_cfg or {}
        size = input_size or cfg.get("input_size", (3, 224, 224))[-1]
        return cls(cnn, labels, input_size=size, mean=cfg.get("mean", IMAGENET_MEAN),
                   std=cfg.get("std", IMAGENET_STD), input_mean=input_mean, input_std=input_std)
