"""``emma``: the face-MAE ViT with AU and EXPR heads, the frozen AffectNet CNN, and the VA
head on their prediction scores (ABAW4 section 3.2)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms.v2.functional import center_crop

from ..config import BRANCH_WEIGHTS_HINT, MISSING, ConfigError
from ..data.augment import IMAGENET_MEAN, IMAGENET_STD, input_stats
from ..labels import AFFECTNET8, get_label_set
from ..models.dan import ExpressionBranch
from ..models.emma import EMMA
from . import ModelKind, register_kind
from .mtl import backbone_of, model_config, mtl_task, validate_mtl_heads

SHIPPED = "affectkit:"  # model.expr_branch=affectkit:NAME: a shipped model (affectkit models)
RUN = "affectkit"  # model.expr_branch=affectkit + expr_branch_checkpoint=RUN: one of our runs


class RunLogits(nn.Module):
    """A trained affectkit model as EMMA's frozen CNN: its expression logits for the
    classes it was trained on (``keep``), at its own evaluation geometry (``crop``: the
    centre crop of a model evaluated that way)."""

    def __init__(self, model: nn.Module, keep: list[int], crop: int | None = None):
        super().__init__()
        self.model, self.keep, self.crop = model, list(keep), crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop:  # as the eval transform's v2.CenterCrop
            x = center_crop(x, [self.crop])
        return self.model(x)["expr_logits"][:, self.keep]


def run_branch(expr_branch: str, checkpoint: str | None, input_mean, input_std
               ) -> ExpressionBranch:
    """The frozen branch of a shipped model (``affectkit:NAME``) or of a run folder or
    checkpoint (``affectkit`` + ``checkpoint``), over the classes it was trained on."""
    from .. import zoo
    from ..engine.inference import load_run

    if expr_branch.startswith(SHIPPED):
        source = zoo.weights(expr_branch[len(SHIPPED):])
    elif checkpoint in (None, MISSING):
        raise ConfigError("model.expr_branch_checkpoint: model.expr_branch=affectkit needs "
                          "the run folder or checkpoint of the branch")
    else:
        source = checkpoint
    run = load_run(source, device="cpu")
    d = run.cfg.data
    trained = get_label_set(d.expr_labels) if d.expr_labels else run.labels
    index = trained.mapping_to(run.labels)
    if (index < 0).any():
        lost = [trained.classes[i] for i in (index < 0).nonzero()[0]]
        raise ConfigError(f"{source}: classes {lost} are not among its outputs")
    cnn = RunLogits(run.model, index.tolist(), crop=d.img_size if d.eval_crop else None)
    mean, std = input_stats(d)  # what the branch model was trained with
    return ExpressionBranch(cnn, trained, input_size=d.resize if d.eval_crop else d.img_size,
                            mean=mean, std=std, input_mean=input_mean, input_std=input_std)


class EMMAKind(ModelKind):
    name = "emma"
    has_expr_branch = True

    def validate(self, cfg, need) -> None:
        m = cfg.model
        validate_mtl_heads(cfg, need)
        if m.expr_branch is not None and not m.expr_branch.startswith(SHIPPED):
            need(m.expr_branch_checkpoint is not None, "model.expr_branch_checkpoint",
                 f"{BRANCH_WEIGHTS_HINT} (or model.expr_branch=null for no branch)")

    def build_model(self, cfg, img_size=None, load_weights=True):
        """A ``dan`` branch takes its classes from its checkpoint; a timm CNN branch is
        taken to be trained on AffectNet's 8 classes (mapped to ABAW's by name); an
        affectkit model (shipped or a run) brings its own classes and input geometry."""
        m = model_config(cfg)
        # the batch's statistics (ImageNet's when only the model section is given)
        stats = dict(zip(("input_mean", "input_std"),
                         input_stats(cfg.data) if hasattr(cfg, "data") else
                         (IMAGENET_MEAN, IMAGENET_STD)))
        branch = None
        if m.expr_branch is not None and (m.expr_branch == RUN
                                          or m.expr_branch.startswith(SHIPPED)):
            branch = run_branch(m.expr_branch, m.expr_branch_checkpoint, **stats)
        elif m.expr_branch is not None:
            checkpoint = m.expr_branch_checkpoint if load_weights else None
            if load_weights and checkpoint in (None, MISSING):
                raise ConfigError(f"model.expr_branch_checkpoint: {BRANCH_WEIGHTS_HINT}")
            labels = None if m.expr_branch == "dan" else AFFECTNET8
            branch = ExpressionBranch.from_config(m.expr_branch, checkpoint, labels=labels,
                                                  **stats)
        return EMMA(backbone_of(cfg, img_size, load_weights), branch, va_hidden=m.va_hidden,
                    stop_gradient=m.stop_gradient, va_inputs=m.va_inputs,
                    mask_ratio=m.mask_ratio)

    def build_task(self, cfg, train_table=None):
        return mtl_task(cfg, train_table)


register_kind(EMMAKind())
