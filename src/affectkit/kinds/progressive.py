"""``progressive``: stage 2 of progressive learning (ABAW7 winner), the joint model over
the stage-1 task models' features (``engine.progressive``, ``models.progressive``)."""

from __future__ import annotations

from ..models.progressive import JointModel, ProgressiveModel
from ..tasks import WindowTask
from . import ModelKind, register_kind


class ProgressiveKind(ModelKind):
    name = "progressive"
    optional_heads = True  # the strategy search's task combinations

    def validate(self, cfg, need) -> None:
        p, m = cfg.progressive, cfg.model
        need(p.window >= 1, "progressive.window", "must be >= 1 (1: a per-frame model)")
        need(p.stride is None or p.stride >= 1, "progressive.stride", "must be >= 1 or null")
        need(p.eval_stride is None or 1 <= p.eval_stride <= p.window,
             "progressive.eval_stride", f"must be in [1, progressive.window={p.window}] or null")
        need(p.max_gap >= 1, "progressive.max_gap", "must be >= 1 (1: consecutive frames)")
        need(p.hidden >= 2 and p.layers >= 1, "progressive.hidden", "must be >= 2 (and layers "
                                                                    ">= 1)")
        need(p.temporal != "transformer" or p.hidden % max(p.attention_heads, 1) == 0,
             "progressive.attention_heads", f"must divide progressive.hidden ({p.hidden})")
        need(p.temporal not in ("lstm", "gru") or p.hidden % 2 == 0, "progressive.hidden",
             "must be even for a bidirectional LSTM/GRU")
        need(0 <= p.dropout < 1, "progressive.dropout", "must be in [0, 1)")
        need(bool(p.smoothing_widths) and all(w >= 1 and w % 2 == 1
                                              for w in p.smoothing_widths),
             "progressive.smoothing_widths", "must be odd numbers >= 1 (1: not smoothed)")
        need(p.feature_dims is None or len(p.feature_dims) == len(p.task_models),
             "progressive.feature_dims", f"one per task model ({len(p.task_models)}) or null")
        need(m.expr_branch is None, "model.expr_branch", "stage 2 has no branch: must be null")
        need(m.mask_ratio == 0, "model.mask_ratio", "stage 2 masks no tokens: must be 0")
        need(cfg.optim.layer_decay is None, "optim.layer_decay",
             "the joint model has no layers to decay by depth: must be null")

    def resolve(self, cfg):
        from ..engine.progressive import resolve

        return resolve(cfg)

    def build_model(self, cfg, img_size=None, load_weights=True):
        p = cfg.progressive
        if p.feature_dims is None:
            cfg = self.resolve(cfg)  # read the widths from the task models
            p = cfg.progressive
        joint = JointModel(list(p.feature_dims), p.hidden, p.fusion, p.temporal, p.layers,
                           p.attention_heads, p.dropout, tasks=self.tasks(cfg))
        backbones = None
        if p.end_to_end:
            from ..engine.build import build_model
            from ..engine.inference import load_run, read_run
            from ..engine.progressive import task_model_paths

            if load_weights:
                backbones = [load_run(x, "cpu").model.backbone for x in task_model_paths(cfg)]
            else:
                backbones = [build_model(read_run(x).cfg, load_weights=False).backbone
                             for x in task_model_paths(cfg)]
            for b in backbones:
                b.train()
        return ProgressiveModel(joint, backbones)

    def build_task(self, cfg, train_table=None):
        from .mtl import mtl_task

        return mtl_task(cfg, train_table, WindowTask)

    def build_job(self, cfg, tables, device=None):
        from ..engine.progressive import build_job

        return build_job(cfg, tables, device)

    def predict_table(self, run, table, **kw):
        from ..engine.inference import RunError
        from ..engine.progressive import predict_table

        if kw.pop("tta", None):
            raise RunError(f"{run.checkpoint}: a progressive run predicts windows of video "
                           "frames: it has no test-time augmentation (drop --tta)")
        kw.pop("missing", None)  # every listed frame must be there: windows need them all
        return predict_table(run, table, **kw)


register_kind(ProgressiveKind())
