"""Model kinds: ``model.kind`` names one, and that one module owns everything kind-specific.

A kind knows how to check its part of a config, build its model, its task (the named
losses), which expression classes it predicts and which of VA / EXPR / AU, so which
official score applies and which submission it writes. The engine, evaluation, predict
and ensemble ask the kind; nothing outside this package switches on ``model.kind``.

Built-in kinds are imported on first use (``config`` validation stays light); a new one
is registered from anywhere with ``register_kind`` before its config is loaded::

    class MyKind(ModelKind):
        name = "mine"
        predicts = frozenset({"expr"})
        def build_model(self, cfg, img_size=None, load_weights=True): ...
        def build_task(self, cfg, train_table=None): ...
    register_kind(MyKind())
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable

from ..labels import ABAW_EXPR, LabelSet

TASKS = ("va", "expr", "au")

# kind name -> the module of this package that registers it
_BUILTIN = {"emma": "emma", "vit-mtl": "mtl", "cnn-mtl": "mtl", "cotex": "cotex", "mae": "mae",
            "progressive": "progressive"}
_KINDS: dict[str, ModelKind] = {}

Need = Callable[[bool, str, str], None]  # config.validate's need(ok, "section.key", rule)


class ModelKind(ABC):
    """One kind of model; subclasses set ``name`` and ``predicts`` and build model + task."""

    name: str
    predicts: frozenset[str] = frozenset(TASKS)  # which of "va", "expr", "au"
    pretraining: bool = False  # MAE-like: trained by ``affectkit pretrain``, predicts nothing
    has_expr_branch: bool = False  # takes model.expr_branch (EMMA's frozen CNN)
    optional_heads: bool = False  # model.heads may leave some of ``predicts`` out

    def tasks(self, cfg) -> frozenset[str]:
        """What a model of ``cfg`` predicts: ``model.heads`` of ``predicts``."""
        heads = getattr(getattr(cfg, "model", cfg), "heads", None)
        return frozenset(heads) if heads is not None else self.predicts

    def validate(self, cfg, need: Need) -> None:  # noqa: B027 (optional: no checks)
        """Kind-specific config checks, reported through ``need`` (every problem at once)."""

    @abstractmethod
    def build_model(self, cfg, img_size: int | None = None, load_weights: bool = True):
        """``cfg`` is a whole ``Config`` or its ``ModelConfig``; ``load_weights=False``:
        the architecture alone (no pretrained file, no branch checkpoint), for a run's own
        checkpoint to fill."""

    @abstractmethod
    def build_task(self, cfg, train_table=None):
        """The task for ``cfg`` (a whole ``Config``): outputs + batch -> named losses."""

    def build_job(self, cfg, tables, device=None):
        """A ``Job`` of the kind's own, or None for the shared fine-tuning job."""
        return None

    def resolve(self, cfg):
        """``cfg`` with what training fixes from the files it starts from (saved in the
        run's config.yaml); called when a training run starts or resumes."""
        return cfg

    def predict_table(self, run, table, **kw):
        """Per-row prediction arrays of ``table`` (``engine.inference.predict_table``'s);
        None: the shared image-by-image path. A kind that reads more than one face at a
        time (windows of a video) predicts here."""
        return None

    def labels(self, cfg) -> LabelSet:
        """The expression classes the model predicts, in its output order."""
        return ABAW_EXPR

    @property
    def multitask(self) -> bool:
        return self.predicts == frozenset(TASKS)

    def write_submission(self, out, table, hard, labels: LabelSet, *, videos: bool,
                         label_format: str = "name") -> list:
        """Write ``hard`` predictions for ``table`` in the challenge format of this kind's
        score task (``data.submission.write_submission``); a kind with its own format
        overrides this. Returns the paths written."""
        from ..data.submission import write_submission

        return write_submission(out, table, hard, labels, multitask=self.multitask,
                                videos=videos, label_format=label_format)

    def score_task(self, cfg) -> str:
        """The ``affectkit score --task`` its predictions are scored and written as."""
        if self.multitask:
            return "mtl"
        if self.predicts != frozenset({"expr"}):
            raise ValueError(f"kind {self.name!r} predicts {sorted(self.predicts)}: only "
                             "all three tasks or expressions alone have an official score")
        return "lsd" if self.labels(cfg).name == "lsd" else "expr"


def register_kind(kind: ModelKind, replace: bool = False) -> ModelKind:
    """Make ``kind`` available as ``model.kind: <kind.name>``."""
    if not set(kind.predicts) <= set(TASKS) or (not kind.predicts and not kind.pretraining):
        raise ValueError(f"kind {kind.name!r}: predicts must be a non-empty subset of {TASKS}")
    if kind.name in _KINDS and not replace and _KINDS[kind.name] is not kind:
        raise ValueError(f"model kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def kind_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_KINDS))


def get_kind(name: str) -> ModelKind:
    """The registered kind ``name``; a ValueError listing the kinds there are otherwise."""
    if name not in _KINDS and name in _BUILTIN:
        importlib.import_module(f"{__name__}.{_BUILTIN[name]}")
    if name not in _KINDS:
        raise ValueError(f"unknown model kind {name!r}; known: {', '.join(kind_names())}")
    return _KINDS[name]
