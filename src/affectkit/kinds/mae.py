"""``mae``: MAE pretraining of a ViT encoder on unlabelled faces (``affectkit pretrain``)."""

from __future__ import annotations

from ..engine.datasets import batch_augment_on
from ..engine.pretrain import build_mae_job, build_mae_model
from ..tasks import MAETask
from . import ModelKind, register_kind


class MAEKind(ModelKind):
    name = "mae"
    predicts = frozenset()
    pretraining = True

    def validate(self, cfg, need) -> None:
        m, d = cfg.model, cfg.data
        need(0 < m.mask_ratio < 1, "model.mask_ratio",
             "MAE reconstructs the masked patches: must be in (0, 1) (the paper: 0.75)")
        need(m.num_classes is None, "model.num_classes",
             "MAE pretraining has no classes: must be null")
        need(m.pool == "cls", "model.pool", "MAE's encoder keeps the CLS token and normalises "
                                            "every token (fine-tuning picks its own pool): "
                                            "must be 'cls'")
        need(d.jitter == 0, "data.jitter", "MAE augments with random-resized-crop + flip "
                                           "only (mae.crop_scale): must be 0")
        need(d.hue == 0, "data.hue", "MAE applies no colour jitter: must be 0")

    def build_model(self, cfg, img_size=None, load_weights=True):
        if not hasattr(cfg, "mae"):
            raise TypeError("the MAE model needs the whole Config (its mae and data sections)")
        return build_mae_model(cfg, load_weights)

    def build_task(self, cfg, train_table=None):
        return MAETask()

    def build_job(self, cfg, tables, device=None):
        return build_mae_job(cfg, tables, batch_augment=batch_augment_on(cfg, device))

    def score_task(self, cfg) -> str:
        raise ValueError("an MAE pretraining run predicts no labels: fine-tune from its "
                         "encoder.pth (model.pretrained=...) and evaluate that run")


register_kind(MAEKind())
