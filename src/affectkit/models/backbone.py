"""timm backbones behind one interface: pooled features, MAE weights, random token masking.

Masked CoTEX (ABAW4, 3.3) drops a random subset of patch tokens *before* the transformer
blocks, so the blocks really process fewer tokens: at r = 0.75 a ViT-B/16 at 224 runs
1 + 49 tokens instead of 197, about 4x less compute, which the paper spends on larger
batches. Masking happens in training mode only; ``eval()`` always sees every token.

``Backbone`` forwards timm's ``group_matcher`` and ``no_weight_decay`` under its ``model.``
prefix: without them ``timm.optim.create_optimizer_v2(..., layer_decay=0.65)`` finds no
layers and silently gives every parameter the same lr.
"""

from __future__ import annotations

import os
import re

import timm
import torch
from timm.data import resolve_model_data_config
from timm.models import checkpoint_seq
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
from ..labels import ABAW_AU, ABAW_EXPR
from . import facecnn  # noqa: F401 (registers face_vgg* with timm for create_backbone)
from .checkpoint import is_mae_decoder_key, load_pretrained


def num_kept(num_patches: int, ratio: float) -> int:
    """Patch tokens kept at mask ``ratio``: ``round(N * (1 - ratio))``, at least one."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    return max(1, round(num_patches * (1.0 - ratio)))


def random_keep(tokens: torch.Tensor, ratio: float, num_prefix: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep a uniformly random ``1 - ratio`` of each sample's patch tokens.

    ``tokens`` (B, P + N, D) with the P prefix tokens (CLS, registers, distillation) first;
    returns ``(B, P + K, D)`` with the prefix untouched and ``keep_idx`` (B, K), the kept
    patch positions (0..N-1, ascending). Each sample draws its own subset by sorting
    uniform noise, as MAE does. ``ratio`` 0 returns ``tokens`` itself.
    """
    b, length, dim = tokens.shape
    n = length - num_prefix
    k = num_kept(n, ratio)
    if k == n:
        return tokens, torch.arange(n, device=tokens.device).expand(b, n)
    noise_device = generator.device if generator is not None else tokens.device
    noise = torch.rand(b, n, generator=generator, device=noise_device).to(tokens.device)
    keep_idx = noise.argsort(dim=1)[:, :k].sort(dim=1).values
    patches = tokens[:, num_prefix:].gather(1, keep_idx.unsqueeze(-1).expand(-1, -1, dim))
    return torch.cat([tokens[:, :num_prefix], patches], dim=1), keep_idx


def prefixed_group_matcher(module_prefix: str, matcher):
    """A child's timm ``group_matcher`` re-rooted under ``module_prefix`` (itself a regex,
    e.g. ``"backbone"`` or ``r"views\\.\\d+"``), for a wrapper's own ``group_matcher``.

    Each pattern becomes ``^prefix\\.(?:pattern)``: the group is non-capturing so the
    layer index stays the first captured group, and it wraps the whole pattern because
    timm's patterns use alternation (``^cls_token|pos_embed|...``).
    """
    if callable(matcher):
        head = re.compile(rf"^{module_prefix}\.")

        def grouped(name: str):
            m = head.match(name)
            return matcher(name[m.end():]) if m else (float("inf"),)

        return grouped

    def wrap(pattern: str) -> str:
        return rf"^{module_prefix}\.(?:{pattern.removeprefix('^')})"

    out = {}
    for group, spec in matcher.items():
        if spec is None or isinstance(spec, str):
            out[group] = spec if spec is None else wrap(spec)
        else:
            out[group] = [(wrap(p), suffix) for p, suffix in spec]
    return out


class HeadsOnBackbone(nn.Module):
    """Base of EMMA and the multi-task baseline: one ``backbone`` with the AU (12) and EXPR
    (8) linear heads on its pooled features (each adds its own VA head); timm's optimiser
    helpers see through it (layer decay stays on)."""

    def __init__(self, backbone: Backbone, mask_ratio: float = 0.0, head_dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.mask_ratio = backbone.check_mask_ratio(mask_ratio)  # training only
        self.head_drop = nn.Dropout(head_dropout)
        self.au_head = nn.Linear(backbone.num_features, len(ABAW_AU))
        self.expr_head = nn.Linear(backbone.num_features, len(ABAW_EXPR))

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return prefixed_group_matcher("backbone", self.backbone.group_matcher(coarse))

    @torch.jit.ignore
    def no_weight_decay(self):
        return {f"backbone.{k}" for k in self.backbone.no_weight_decay()}


class Backbone(nn.Module):
    """A timm model without classifier, returning pooled features (B, ``num_features``).

    ``pool`` records how a ViT pools: ``"cls"`` (the CLS token after the final ``norm``) or
    ``"avg"`` (mean of the patch tokens, then ``fc_norm``: MAE's global pooling). CNNs pool
    with timm's global pool (``"avg"``) and cannot mask.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.is_vit = isinstance(model, VisionTransformer)
        self.num_features = getattr(model, "head_hidden_size", None) or model.num_features
        if self.is_vit:
            self.pool = "cls" if model.global_pool == "token" else model.global_pool
            self.num_prefix_tokens = model.num_prefix_tokens
            size = tuple(model.patch_embed.img_size)
        else:
            gp = getattr(model, "global_pool", None)
            self.pool = getattr(gp, "pool_type", gp if isinstance(gp, str) else "avg")
            self.num_prefix_tokens = 0
            size = None
        cfg = dict(resolve_model_data_config(model))
        if size is not None:
            cfg["input_size"] = (cfg["input_size"][0], *size)
        self.data_config = cfg  # mean/std/size the weights expect; a plain, settable dict
        self.load_report: dict[str, list[str]] | None = None  # set by create_backbone

    def check_mask_ratio(self, mask_ratio: float) -> float:
        """``mask_ratio`` if this backbone can drop that share of its tokens, else an error:
        the one check of every model that masks (at construction) and of ``forward``."""
        if mask_ratio and not self.is_vit:
            raise ValueError(f"mask_ratio={mask_ratio}: only ViT backbones can drop tokens, "
                             f"{type(self.model).__name__} is a CNN")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        return mask_ratio

    def _check_ratio(self, mask_ratio: float) -> float:
        self.check_mask_ratio(mask_ratio)
        return mask_ratio if self.training else 0.0

    def forward_tokens(self, x: torch.Tensor, mask_ratio: float = 0.0,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """ViT tokens after the final ``norm``: ``tokens`` (B, P + K, D), prefix first, and
        ``keep_idx`` (B, K). With ``pool="avg"`` that norm is the identity: the final
        LayerNorm is then ``fc_norm``, after the average, as in MAE's fine-tuning.
        The same pieces, in the same order, as timm's
        ``VisionTransformer.forward_features``, with ``random_keep`` where timm's own
        patch dropout sits. ``mask_ratio`` applies in training mode only."""
        if not self.is_vit:
            raise TypeError(f"{type(self.model).__name__} has no tokens (not a ViT)")
        tokens, keep_idx = self.visible_tokens(x, self._check_ratio(mask_ratio), generator)
        return {"tokens": tokens, "keep_idx": keep_idx}

    def visible_tokens(self, x: torch.Tensor, mask_ratio: float,
                       generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward_tokens`` without the mode rule: drops ``mask_ratio`` of the patches in
        train and eval mode alike (MAE's encoder needs that; fine-tuning does not)."""
        m = self.model
        x = m._pos_embed(m.patch_embed(x))
        x, keep_idx = random_keep(x, mask_ratio, m.num_prefix_tokens, generator)
        x = m.norm_pre(m.patch_drop(x))
        if m.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(m.blocks, x)
        else:
            x = m.blocks(x)
        return m.norm(x), keep_idx

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Pooled features (B, ``num_features``); ``mask_ratio`` > 0 drops that share of
        patch tokens per sample in training mode (ViTs only), and is ignored in eval."""
        if not self.is_vit:
            self._check_ratio(mask_ratio)
            return self.model(x)
        tokens = self.forward_tokens(x, mask_ratio, generator)["tokens"]
        return self.model.forward_head(tokens, pre_logits=True)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return prefixed_group_matcher("model", self.model.group_matcher(coarse))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        nwd = getattr(self.model, "no_weight_decay", None)
        return {f"model.{k}" for k in nwd()} if nwd else set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)


def _timm_tag(name: str, pretrained: str) -> str:
    tag = pretrained.removeprefix("timm:")
    if tag.split(".")[0] != name.split(".")[0]:
        raise ValueError(f"pretrained={pretrained!r} names another architecture than {name!r}")
    return tag


def create_backbone(name: str, *, img_size: int | None = None, patch_size: int | None = None,
                    pretrained: str | os.PathLike | None = None, pool: str | None = None,
                    drop_path: float = 0.0, in_chans: int = 3) -> Backbone:
    """A ``Backbone`` around ``timm.create_model(name, num_classes=0)``.

    ``img_size`` sets a ViT's patch grid (CNNs take any size; it then only sets
    ``data_config``). ``patch_size`` (ViTs only; ``None``: the model's own) trades compute
    for detail: small face crops at patch 8 keep as many tokens as 4x larger ones at
    patch 16. Pretrained weights of another patch or image size are resampled to fit
    (``checkpoint.mae_to_timm``).
    ``pool``: ``"cls"`` / ``"avg"`` for ViTs, ``None`` for timm's default.
    ``pretrained``: ``None`` (random init), ``"timm:<name>.<tag>"`` (timm's hub weights,
    needs network), or a local file: official MAE checkpoint, affectkit checkpoint,
    ``.safetensors`` or a state dict (see ``checkpoint.load_pretrained``).
    """
    kwargs = {"num_classes": 0, "in_chans": in_chans}
    if pool is not None:
        kwargs["global_pool"] = {"cls": "token"}.get(pool, pool)
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    hub = isinstance(pretrained, str) and pretrained.startswith("timm:")
    arch = _timm_tag(name, pretrained) if hub else name

    def build(**extra):
        try:
            return timm.create_model(arch, pretrained=hub, **kwargs, **extra)
        except TypeError as exc:
            if "drop_path_rate" in str(exc):
                raise ValueError(f"{name} has no stochastic depth (drop_path={drop_path})") from exc
            raise
        except AssertionError as exc:  # timm asserts on a pool the model cannot do
            if pool is None:
                raise
            what = "has no CLS token to pool" if pool == "cls" else f"cannot pool {pool!r}"
            raise ValueError(f"{name} {what} ({exc})") from exc
        except Exception as exc:
            if not hub:
                raise
            raise RuntimeError(
                f"could not fetch timm weights {arch!r} ({type(exc).__name__}: {exc}). "
                "Offline? Download them where there is network and pass the local file "
                "instead: pretrained='/path/to/model.safetensors' (or an MAE .pth)") from exc

    grid = {"img_size": img_size} if img_size else {}
    if patch_size is not None:
        grid["patch_size"] = patch_size
    try:
        model = build(**grid)
    except TypeError as exc:
        if "patch_size" in str(exc) or (patch_size is not None and "img_size" in str(exc)):
            raise ValueError(f"{name} has no patches to size (patch_size={patch_size}): "
                             "only ViTs take one") from exc
        if "img_size" not in str(exc):
            raise
        model = build()  # a CNN: it takes any input size
    backbone = Backbone(model)
    if not backbone.is_vit and img_size:
        backbone.data_config["input_size"] = (in_chans, img_size, img_size)
    if pretrained is not None and not hub:
        report = load_pretrained(model, pretrained)
        if any(is_mae_decoder_key(k) for k in report["dropped"]):
            # official MAE weights: ImageNet statistics, whatever timm's default tag uses
            backbone.data_config.update(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        backbone.load_report = report
    return backbone
