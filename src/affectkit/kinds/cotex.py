"""``cotex``: masked CoTEX, expression recognition from two masked ViT views (ABAW4 3.3)."""

from __future__ import annotations

from ..labels import ABAW_EXPR, LSD, LabelSet, get_label_set
from ..models.cotex import MaskedCoTEX
from ..tasks import CoTEXTask
from . import ModelKind, register_kind
from .mtl import backbone_of, model_config


class CoTEXKind(ModelKind):
    name = "cotex"
    predicts = frozenset({"expr"})

    def validate(self, cfg, need) -> None:
        m = cfg.model
        need(m.num_classes is not None and m.num_classes >= 2, "model.num_classes",
             "cotex needs the number of classes (>= 2; 6 for LSD, 8 for ABAW EXPR)")

    def build_model(self, cfg, img_size=None, load_weights=True):
        m = model_config(cfg)
        return MaskedCoTEX(backbone_of(cfg, img_size, load_weights),
                           num_classes=int(m.num_classes), mask_ratio=m.mask_ratio)

    def build_task(self, cfg, train_table=None):
        lo = cfg.loss
        return CoTEXTask(js_weight=lo.js_weight, label_smoothing=lo.label_smoothing,
                         js_rows=cfg.model.js_rows)

    def labels(self, cfg) -> LabelSet:
        """LSD's 6 (6 classes), ABAW's 8 (8 classes), or ``data.expr_labels`` of that size."""
        n = cfg.model.num_classes
        if cfg.data.expr_labels is not None:
            named = get_label_set(cfg.data.expr_labels)
            if len(named) == n:
                return named
        for labels in (LSD, ABAW_EXPR):
            if len(labels) == n:
                return labels
        raise ValueError(f"model.num_classes={n}: no label set of that size; set "
                         "data.expr_labels to a label set with that many classes")


register_kind(CoTEXKind())
