"""``face_vgg``: a VGG-style CNN for small face crops (FER2013 / CK+ at 48 px).

Why not a timm ImageNet CNN: their stems downsample 4x before the first block (a 48 px
face becomes 12x12 at once), which throws away the detail an expression lives in; the
FER2013 literature's best single models (Khaireddin & Chen 2021, Pramerdorfer & Kampel
2016) are plain VGG stacks at the native resolution: pairs of 3x3 conv + BN + ReLU, a 2x2
max-pool per stage, dropout before the classifier. The widths here are sized for 2 CPU
cores (``face_vgg_s``: 32-256 channels, ``face_vgg_m``: 48-384, ``face_vgg``: 64-512).

The models are registered with timm (``timm.create_model("face_vgg_s")``), so the
library's ``create_backbone``, optimiser groups and ``resolve_model_data_config`` treat
them like any timm model.
"""

from __future__ import annotations

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import register_model
from torch import nn

from ..data.augment import IMAGENET_MEAN, IMAGENET_STD


def _stage(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class FaceVGG(nn.Module):
    """Stages of ``convs`` (3x3 conv, BN, ReLU) and a 2x2 max-pool; global average pool;
    dropout; linear classifier (``num_classes=0``: pooled features, as timm)."""

    def __init__(self, widths=(32, 64, 128, 256), convs: int = 2, num_classes: int = 1000,
                 in_chans: int = 3, drop_rate: float = 0.3, global_pool: str = "avg",
                 **kwargs):
        super().__init__()
        for timm_only in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(timm_only, None)
        if kwargs:
            raise TypeError(f"FaceVGG got unexpected arguments {sorted(kwargs)}")
        self.widths = tuple(widths)
        self.stages = nn.Sequential(*(_stage(c_in, c_out, convs) for c_in, c_out in
                                      zip((in_chans, *self.widths[:-1]), self.widths)))
        self.num_features = self.head_hidden_size = self.widths[-1]
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.reset_classifier(num_classes, global_pool)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head_drop = nn.Dropout(self.drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return {"stem": r"^stages\.0\.0", "blocks": r"^stages\.(\d+)"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg() -> dict:
    # no hub weights: affectkit ships its own trained models (affectkit.zoo)
    return {"input_size": (3, 48, 48), "pool_size": None, "crop_pct": 1.0,
            "interpolation": "bilinear", "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
            "first_conv": "stages.0.0", "classifier": "fc", "num_classes": 1000}


def _build(widths, **kwargs) -> FaceVGG:
    kwargs.pop("pretrained", None)
    model = FaceVGG(widths, **kwargs)
    model.pretrained_cfg = model.default_cfg = _cfg()
    return model


@register_model
def face_vgg_s(pretrained: bool = False, **kwargs) -> FaceVGG:
    """32-64-128-256 channels, 1.2M parameters."""
    return _build((32, 64, 128, 256), **kwargs)


@register_model
def face_vgg_m(pretrained: bool = False, **kwargs) -> FaceVGG:
    """48-96-192-384 channels, 2.6M parameters."""
    return _build((48, 96, 192, 384), **kwargs)


@register_model
def face_vgg(pretrained: bool = False, **kwargs) -> FaceVGG:
    """64-128-256-512 channels, 4.7M parameters."""
    return _build((64, 128, 256, 512), **kwargs)
