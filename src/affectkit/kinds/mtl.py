"""``vit-mtl`` / ``cnn-mtl``: ABAW4 Table 1's single-model multi-task baselines, and the
multi-task loss that EMMA shares with them."""

from __future__ import annotations

import logging

from ..losses import au_pos_weight
from ..models.backbone import create_backbone
from ..models.mtl import MultiTaskBaseline
from ..tasks import MTLTask
from . import ModelKind, register_kind

log = logging.getLogger(__name__)


def model_config(cfg):
    """The ``ModelConfig`` of a whole ``Config`` or of itself."""
    return getattr(cfg, "model", cfg)


def backbone_of(cfg, img_size: int | None, load_weights: bool):
    """``model.backbone`` at ``img_size`` (default: ``data.img_size`` of a whole config)."""
    m = model_config(cfg)
    if img_size is None and hasattr(cfg, "data"):
        img_size = cfg.data.img_size
    return create_backbone(m.backbone, img_size=img_size, patch_size=m.patch_size,
                           pool=m.pool, pretrained=m.pretrained if load_weights else None,
                           drop_path=m.drop_path)


def mtl_task(cfg, train_table=None, task=MTLTask) -> MTLTask:
    """L = w_au L_AU + w_expr L_EXPR + w_va L_VA; AU positives weighted by the train set's
    negative/positive ratio if ``loss.au_pos_weight``. ``task``: the class (``WindowTask``
    for windows of frames)."""
    lo = cfg.loss
    pos_weight = None
    if lo.au_pos_weight:
        if train_table is None:
            raise ValueError("loss.au_pos_weight needs the training table")
        pos_weight = au_pos_weight(train_table.au)
        log.info("AU pos_weight: %s", [round(float(w), 2) for w in pos_weight])
    return task(au_weight=lo.au_weight, expr_weight=lo.expr_weight, va_weight=lo.va_weight,
                au_pos_weight=pos_weight, label_smoothing=lo.label_smoothing)


def validate_mtl_heads(cfg, need) -> None:
    m = cfg.model
    need(m.num_classes in (None, 8), "model.num_classes",
         f"{m.kind} predicts the 8 ABAW expressions: must be null or 8")


class Baseline(ModelKind):
    """One backbone, three heads on its features, everything fine-tuned by every loss."""

    optional_heads = True

    def __init__(self, name: str, cnn: bool):
        self.name, self.cnn = name, cnn

    def validate(self, cfg, need) -> None:
        m = cfg.model
        validate_mtl_heads(cfg, need)
        need(m.heads is None or {"expr", "au"} <= set(m.heads), "model.heads",
             "the baseline always has its EXPR and AU heads (only VA can be left out)")
        need(m.heads is None or "va" in m.heads or cfg.loss.va_weight == 0, "loss.va_weight",
             "no VA head (model.heads) leaves nothing for a VA loss: must be 0")
        need(not m.stop_gradient, "model.stop_gradient", "the Table 1 baselines fine-tune "
             "everything (only EMMA stops the VA gradient): must be false")
        if self.cnn:
            need(m.pool == "avg", "model.pool", "a CNN has no CLS token: must be 'avg'")
            need(m.mask_ratio == 0, "model.mask_ratio",
                 "a CNN cannot drop patch tokens: must be 0")

    def build_model(self, cfg, img_size=None, load_weights=True):
        backbone = backbone_of(cfg, img_size, load_weights)
        if self.cnn and backbone.is_vit:
            raise ValueError(f"model.kind {self.name!r} needs a CNN backbone, "
                             f"{model_config(cfg).backbone!r} is a ViT")
        m = model_config(cfg)
        return MultiTaskBaseline(backbone, mask_ratio=m.mask_ratio,
                                 va_head=m.heads is None or "va" in m.heads)

    def build_task(self, cfg, train_table=None):
        return mtl_task(cfg, train_table)


register_kind(Baseline("vit-mtl", cnn=False))
register_kind(Baseline("cnn-mtl", cnn=True))
