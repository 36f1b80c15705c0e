"""``emma``: the face-MAE ViT with AU and EXPR heads, the frozen AffectNet CNN, and the VA
head on their prediction scores (ABAW4 section 3.2)."""

from __future__ import annotations

from ..config import BRANCH_WEIGHTS_HINT, MISSING, ConfigError
from ..labels import AFFECTNET8
from ..models.dan import ExpressionBranch
from ..models.emma import EMMA
from . import ModelKind, register_kind
from .mtl import backbone_of, model_config, mtl_task, validate_mtl_heads


class EMMAKind(ModelKind):
    name = "emma"
    has_expr_branch = True

    def validate(self, cfg, need) -> None:
        m = cfg.model
        validate_mtl_heads(cfg, need)
        if m.expr_branch is not None:
            need(m.expr_branch_checkpoint is not None, "model.expr_branch_checkpoint",
                 f"{BRANCH_WEIGHTS_HINT} (or model.expr_branch=null for no branch)")

    def build_model(self, cfg, img_size=None, load_weights=True):
        """A ``dan`` branch takes its classes from its checkpoint; a timm CNN branch is
        taken to be trained on AffectNet's 8 classes (mapped to ABAW's by name)."""
        m = model_config(cfg)
        branch = None
        if m.expr_branch is not None:
            checkpoint = m.expr_branch_checkpoint if load_weights else None
            if load_weights and checkpoint in (None, MISSING):
                raise ConfigError(f"model.expr_branch_checkpoint: {BRANCH_WEIGHTS_HINT}")
            labels = None if m.expr_branch == "dan" else AFFECTNET8
            branch = ExpressionBranch.from_config(m.expr_branch, checkpoint, labels=labels)
        return EMMA(backbone_of(cfg, img_size, load_weights), branch, va_hidden=m.va_hidden,
                    stop_gradient=m.stop_gradient, va_inputs=m.va_inputs,
                    mask_ratio=m.mask_ratio)

    def build_task(self, cfg, train_table=None):
        return mtl_task(cfg, train_table)


register_kind(EMMAKind())
