"""Typed run configuration: dataclasses, strict YAML recipes and ``key=value`` overrides.

The dataclass defaults below are the single source of defaults: the EMMA recipe of
the ABAW4 paper (Table 3). A recipe (``affectkit/recipes/<name>.yaml``) is a small
YAML diff against them and may name a ``base:`` recipe to start from. Overrides are
dotted ``key=value`` strings whose values are parsed as YAML.

Everything is checked before any training starts: an unknown key anywhere (a typo
such as ``optim.base_lrr``) is an error naming the dotted key, where it was set
(file and line, or the override) and the closest known key; so are wrong types,
values out of range and inconsistent model settings. ``check_paths`` verifies the
files a run needs, kept apart so configs can be built without data.

YAML here follows YAML 1.2 where PyYAML's 1.1 rules surprise: ``5e-4`` is a float
(not a string) and only ``true``/``false`` are booleans (``off`` stays a string).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import subprocess
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from . import __version__
from .io import atomic_write_text

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
MISSING = "???"  # a value a recipe requires the user to set (checked by ``check_paths``)
BRANCH_WEIGHTS_HINT = ("EMMA's frozen expression branch needs its trained AffectNet weights: "
                       "the DAN checkpoint (affecnet8_epoch5_acc0.6209.pth) or a state dict "
                       "of the timm CNN named by model.expr_branch")
# validation scores a run can select its best checkpoint by (run.select_by)
SELECTABLE = ("score", "p_mtl", "p_lsd", "au_f1", "expr_f1", "expr_acc", "va", "ccc_valence",
              "ccc_arousal")
META_KEYS = ("base", "recipe", "git_sha", "affectkit_version")  # top-level, not sections

Layout = Literal["auto", "mtl", "per-video", "lsd", "csv", "folders", "images"]  # discover.LAYOUTS


class ConfigError(ValueError):
    """A configuration problem; ``problems`` lists every one found, each a full sentence."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


# ----------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class ExtraData:
    """Another labelled dataset mixed into the run, e.g. CK+ AU codes beside FER2013's
    expressions: one network learns every task, each loss masked to the rows labelling it.
    Rows of ``held_out_subjects`` are never read (a subject-independent test set), rows of
    ``val_subjects`` validate and never train."""
    root: str = MISSING  # a relative path is taken from data.root
    layout: Layout = "auto"
    split: str | None = None  # the split to read (None: the only one there is)
    expr_labels: str | None = None
    tasks: tuple[str, ...] = ("va", "expr", "au")  # labels kept; the others become unlabelled
    subject_column: str = "subject"
    val_subjects: tuple[str, ...] = ()
    held_out_subjects: tuple[str, ...] = ()
    repeat: int = 1  # the training rows count this many times an epoch (a small dataset)


@dataclass(frozen=True)
class DataConfig:
    root: str = MISSING  # dataset folder (or annotation file) given to data.open_dataset
    layout: Layout = "auto"
    images: str | None = None  # face-crop root; None: the layout's default (cropped_aligned)
    train_split: str = "train"  # split names within the layout: "<layout>/<split>"
    val_split: str = "val"
    expr_labels: str | None = None  # labels.LABEL_SETS name, for csv / class-folder datasets
    extra: tuple[ExtraData, ...] = ()  # more datasets trained (and validated) on with this one
    img_size: int = 224  # network input (random crop in training, resize in evaluation)
    resize: int = 232  # training: resize the 112 px crops to this, then random-crop img_size
    # input normalisation; null: what the weights expect (a timm tag's own statistics,
    # ImageNet's for MAE checkpoints, our runs and random init), fixed in the run's saved
    # config when training starts; a saved config without them (older runs): ImageNet's
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # evaluation: false resizes the whole face to img_size (the papers' code); true resizes
    # to ``resize`` and takes the centre img_size crop: the faces' scale in training
    eval_crop: bool = False
    jitter: float = 0.4  # colour jitter strength (brightness, contrast, saturation); 0: off
    hue: float = 0.1
    rotate: float = 0.0  # training: random rotation, up to this many degrees either way
    erase: float = 0.0  # training: probability of random erasing (a box of 2-20% of the face)
    packed: str | None = None  # a pack_images() file to read images from instead of JPEGs
    # where training augmentation runs: "sample" per image in the DataLoader (CPU),
    # "batch" on the whole uint8 batch on the training device (BatchAugment), "auto":
    # batch on CUDA (a CPU cannot feed a masked ViT on a GPU), sample elsewhere
    augment: Literal["auto", "sample", "batch"] = "auto"
    load_size: int | None = None  # batch augment: resize on load to this square (None: as is)
    num_workers: int = 8
    missing: Literal["error", "skip"] = "error"  # listed images absent on disk
    corrupt: Literal["error", "skip"] = "error"  # MAE: images that do not decode (checked first)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "emma"  # a registered model kind (affectkit.kinds): emma, vit-mtl, cnn-mtl,
    # cotex, mae (pretraining), or one registered by the user
    backbone: str = "vit_base_patch16_224"  # a timm model name
    pretrained: str | None = None  # local weights file, "timm:<name>.<tag>", or None (random)
    pool: Literal["cls", "avg"] = "avg"
    # ViT patch size (None: the model's own); weights of another patch size are resampled,
    # so 48 px faces at patch 8 give 36 tokens without upsampling
    patch_size: int | None = None
    drop_path: float = 0.1
    stop_gradient: bool = True  # EMMA: the VA head does not backpropagate into the backbones
    # EMMA's frozen CNN: "dan", a timm CNN name, "affectkit:NAME" (a shipped model) or
    # "affectkit" (a run of ours, expr_branch_checkpoint=RUN)
    expr_branch: str | None = "dan"
    # its trained weights: required, a frozen random branch would feed the VA head noise
    expr_branch_checkpoint: str | None = MISSING
    # EMMA's VA head reads the AU / EXPR / CNN prediction scores as "logits" (the paper,
    # section 3.2: scores before any softmax) or as "probs" (sigmoid / softmax of them)
    va_inputs: Literal["logits", "probs"] = "logits"
    mask_ratio: float = 0.0  # patch tokens dropped in training (CoTEX, MAE: 0.75)
    num_classes: int | None = None  # CoTEX classes (6 LSD, 8 ABAW EXPR); MTL models: 8
    va_hidden: int = 256
    # the tasks the model has heads for (None: every task of its kind); leave "va" out when
    # there are no VA labels, and the model says it has no VA instead of inventing it
    heads: tuple[str, ...] | None = None
    # CoTEX's JS consistency term over the labelled rows only (the supervised method) or
    # over every row of the batch ("all": the semi-supervised variant)
    js_rows: Literal["labelled", "all"] = "labelled"


@dataclass(frozen=True)
class MAEConfig:
    """MAE pretraining (model.kind 'mae'); the mask ratio is model.mask_ratio."""

    decoder_dim: int = 512  # the MAE paper's light decoder: 8 blocks of width 512, 16 heads
    decoder_depth: int = 8
    decoder_heads: int = 16
    norm_pix_loss: bool = True  # loss on per-patch normalised pixels (the paper's best)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop area range (+ flip)
    recon_images: int = 8  # validation faces drawn in recon/epoch_XXX.png (0: no grid)


@dataclass(frozen=True)
class LossConfig:
    au_weight: float = 1.0
    expr_weight: float = 1.0
    va_weight: float = 1.0
    js_weight: float = 1.0  # CoTEX: weight of JS(view 1, view 2)
    label_smoothing: float = 0.0
    au_pos_weight: bool = False  # weight AU positives by negatives/positives of the train set


@dataclass(frozen=True)
class OptimConfig:
    optimizer: Literal["adamw"] = "adamw"
    base_lr: float = 5e-4  # lr = base_lr * batch_size * accum_steps * world size / 256
    weight_decay: float = 0.05
    layer_decay: float | None = 0.65  # None: no layer-wise lr decay
    batch_size: int = 100  # per device, per step
    accum_steps: int = 4
    clip_grad: float | None = 0.05
    epochs: int = 30
    warmup_epochs: float = 5  # linear warm-up (may be a fraction of an epoch), then cosine
    min_lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class ProgressiveConfig:
    """Progressive learning, stage 2 (``model.kind: progressive``, ABAW7 winner): a joint
    model over the per-frame features of stage-1 task models, on windows of one video."""

    task_models: tuple[str, ...] = ()  # stage-1 run folders (their best.pt), one per task
    # feature stores: <features>/<task run name>/<split tag>; null: each task run's own
    # features/ folder (a store of other weights is detected and rebuilt, never reused)
    features: str | None = None
    # fine-tune the task backbones on windows of images instead of reading the stores
    # (GPU-sized: every frame of every window goes through every backbone)
    end_to_end: bool = False
    fusion: Literal["sum", "concat", "gated"] = "sum"  # the paper's: sum, then an MLP
    temporal: Literal["none", "transformer", "lstm", "gru", "tcn"] = "transformer"
    hidden: int = 512
    layers: int = 2
    attention_heads: int = 4
    dropout: float = 0.1
    window: int = 30  # frames per window (public configs: EXPR 5, VA 30, AU 1)
    stride: int | None = None  # training: a window starts every this many frames (null: window)
    eval_stride: int | None = None  # prediction: overlapping windows averaged (null: window/2)
    max_gap: int = 10  # a window never spans a gap of more frames (missing face crops)
    # per-frame outputs smoothed over time within a video at prediction; each task's width
    # tuned on validation (the best epoch's kept in smoothing.json), 1 = not smoothed
    smoothing: Literal["none", "box", "gaussian", "median"] = "none"
    smoothing_widths: tuple[int, ...] = (1, 3, 5, 9, 15, 25, 45)
    # the task models' feature widths, fixed when training starts (the saved config builds
    # the joint model without opening them)
    feature_dims: tuple[int, ...] | None = None


@dataclass(frozen=True)
class RunConfig:
    out_dir: str = "runs"
    seed: int = 0
    # the validation number best.pt maximises: "score" (the task's official one) or one of
    # the scores by name (au_f1, expr_f1, va, p_mtl, ...): a stage-1 task model by its task
    select_by: str = "score"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    compile: bool = False
    channels_last: bool = False
    eval_every: int = 1  # epochs
    log_every: int = 50  # optimiser steps


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)
    recipe: str = "defaults"



# ----------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (``5e-4``) and booleans (only true / false)."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag != "tag:yaml.org,2002:bool"]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def yaml_error(path, e: yaml.YAMLError) -> ConfigError:
    """A YAML syntax error as ``FILE, line L, column C: what`` (PyYAML's own message
    names the text as "<unicode string>")."""
    mark = getattr(e, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
    what = " ".join(x for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x)
    return ConfigError(f"{where}: invalid YAML: {what or e}")


def parse_value(text: str) -> Any:
    """An override value as YAML (``1e-3`` -> float, ``false`` -> bool, ``null`` -> None)."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe


def _read_yaml(path: Path) -> tuple[dict, dict[str, str]]:
    """A YAML mapping and, for every dotted key in it, ``"<file>:<line>"`` where it is set."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else {}
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    where: dict[str, str] = {}

    def walk(n, prefix: str) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = f"{prefix}{k.value}"
                where[key] = f"{path}:{k.start_mark.line + 1}"
                walk(v, key + ".")

    walk(node, "")
    return data, where


def _recipe_path(name: str, relative_to: Path | None = None) -> Path:
    p = Path(name)
    candidates = [p] if p.is_absolute() else (
        ([relative_to / p] if relative_to else []) + [p])
    if p.suffix in (".yaml", ".yml") or p.is_absolute() or len(p.parts) > 1:
        for c in candidates:
            if c.is_file():
                return c.resolve()
    builtin = RECIPES_DIR / f"{name}.yaml"
    if not name.startswith("_") and builtin.is_file():
        return builtin
    known = sorted(list_recipes())
    hint = difflib.get_close_matches(name, known, n=1)
    raise ConfigError(f"unknown recipe or config file {name!r}"
                      + (f"; did you mean {hint[0]!r}?" if hint else "")
                      + f" (recipes: {', '.join(known)})")


def list_recipes() -> dict[str, str]:
    """Built-in recipe name -> its one-line description (the file's first comment line)."""
    out = {}
    for p in sorted(RECIPES_DIR.glob("*.yaml")):
        if p.name.startswith("_"):
            continue
        first = p.read_text(encoding="utf-8").split("\n", 1)[0].strip()
        out[p.stem] = first.lstrip("#").strip() if first.startswith("#") else ""
    return out


def _merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def _load_chain(recipe_or_path: str) -> tuple[dict, dict[str, str], str]:
    """The merged YAML of a recipe and its ``base:`` chain, locations, and the recipe name."""
    chain: list[tuple[dict, dict[str, str]]] = []
    seen: list[Path] = []
    name, rel = recipe_or_path, None
    while name is not None:
        path = _recipe_path(str(name), rel)
        if path in seen:
            cycle = " -> ".join(str(p) for p in [*seen, path])
            raise ConfigError(f"recipe base cycle: {cycle}")
        seen.append(path)
        data, where = _read_yaml(path)
        name, rel = data.pop("base", None), path.parent
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"base ({where['base']}): expected a recipe name or path, "
                              f"got {name!r}")
        chain.append((data, where))
    merged: dict = {}
    where_all: dict[str, str] = {}
    for data, where in reversed(chain):
        _merge(merged, data)
        where_all.update(where)
    first = seen[0]
    label = first.stem if first.parent == RECIPES_DIR else recipe_or_path
    return merged, where_all, label


def _apply_overrides(merged: dict, where: dict[str, str], overrides) -> None:
    for item in overrides:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. optim.base_lr=1e-3)")
        parts = key.split(".")
        if parts[0] == "base":
            raise ConfigError(f"override {item!r}: base can only be set in a recipe file")
        try:
            value = parse_value(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
        d = merged
        for i, part in enumerate(parts[:-1]):
            if not isinstance(d.get(part), dict):
                d[part] = {}
            d = d[part]
            where[".".join(parts[: i + 1])] = f"override {item!r}"
        d[parts[-1]] = value
        where[key] = f"override {item!r}"


# ----------------------------------------------------------------------------- building


_NoneType = type(None)
_ALL_KEYS: list[str] = []  # every dotted key of the schema, filled below


def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not _NoneType]
        return " or ".join(names) + (" or null" if _NoneType in args else "")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"a list of {_type_name(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)} {_type_name(args[0])}s"
    return getattr(tp, "__name__", str(tp))


class _Bad(Exception):
    pass


def _coerce(value: Any, tp) -> Any:
    """``value`` as type ``tp``, or raise ``_Bad``. bool is not an int; an int is a float."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and _NoneType in args:
            return None
        for a in args:
            if a is not _NoneType:
                try:
                    return _coerce(value, a)
                except _Bad:
                    pass
        raise _Bad
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise _Bad
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise _Bad
        return tuple(_coerce(v, args[0]) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _Bad
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise _Bad


def _suggest(key: str, section_fields: list[str], prefix: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    near = difflib.get_close_matches(leaf, section_fields, n=1, cutoff=0.6)
    if near:
        return f"; did you mean {prefix + near[0]!r}?"
    elsewhere = [k for k in _ALL_KEYS if k.rsplit(".", 1)[-1] == leaf]
    near = elsewhere or difflib.get_close_matches(key, _ALL_KEYS, n=1, cutoff=0.75)
    return f"; did you mean {near[0]!r}?" if near else ""


def _at(where: dict[str, str], key: str) -> str:
    return f" ({where[key]})" if key in where else ""


def _build(cls, raw: dict, where: dict[str, str], errors: list[str], prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if k not in hints:
            if prefix == "" and k in META_KEYS:
                continue
            errors.append(f"unknown key {key!r}{_at(where, key)}{_suggest(key, names, prefix)}")
            continue
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            if not isinstance(v, dict):
                errors.append(f"{key}{_at(where, key)}: expected a mapping of "
                              f"{tp.__name__} keys, got {v!r}")
                continue
            kwargs[k] = _build(tp, v, where, errors, key + ".")
            continue
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else None
        if dataclasses.is_dataclass(item):  # a list of sections (data.extra)
            if not isinstance(v, (list, tuple)) or not all(isinstance(e, dict) for e in v):
                errors.append(f"{key}{_at(where, key)}: expected a list of mappings of "
                              f"{item.__name__} keys, got {v!r}")
                continue
            kwargs[k] = tuple(_build(item, e, where, errors, f"{key}.{i}.")
                              for i, e in enumerate(v))
            continue
        try:
            kwargs[k] = _coerce(v, tp)
        except _Bad:
            errors.append(f"{key}{_at(where, key)}: expected {_type_name(tp)}, "
                          f"got {v!r} ({type(v).__name__})")
    return cls(**kwargs)


def _collect_keys(cls, prefix: str = "") -> None:
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            _collect_keys(tp, f"{prefix}{f.name}.")
        else:
            _ALL_KEYS.append(prefix + f.name)


_collect_keys(Config)


def validate(cfg: Config, where: dict[str, str] | None = None) -> None:
    """Range and consistency checks; raises ``ConfigError`` listing every problem."""
    where = where or {}
    errors: list[str] = []

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            section, name = key.split(".")
            value = getattr(getattr(cfg, section), name)
            errors.append(f"{key}{_at(where, key)}: {rule}, got {value!r}")

    d, m, lo, o, r, mae = cfg.data, cfg.model, cfg.loss, cfg.optim, cfg.run, cfg.mae
    need(d.img_size >= 1, "data.img_size", "must be >= 1")
    need(d.resize >= d.img_size, "data.resize", f"must be >= data.img_size ({d.img_size})")
    need(d.jitter >= 0, "data.jitter", "must be >= 0")
    need(0 <= d.hue <= 0.5, "data.hue", "must be in [0, 0.5]")
    need(d.num_workers >= 0, "data.num_workers", "must be >= 0")
    need(d.load_size is None or d.load_size >= 1, "data.load_size", "must be >= 1 or null")
    need(0 <= d.rotate <= 180, "data.rotate", "must be in [0, 180] degrees")
    need(d.std is None or all(x > 0 for x in d.std), "data.std", "each must be > 0")
    need((d.mean is None) == (d.std is None), "data.mean",
         "data.mean and data.std are set together (or both null)")
    need(0 <= d.erase <= 1, "data.erase", "must be a probability in [0, 1]")
    for i, x in enumerate(d.extra):
        key = f"data.extra.{i}"
        if x.root == MISSING:
            errors.append(f"{key}.root{_at(where, key + '.root')}: required")
        bad = sorted(set(x.tasks) - {"va", "expr", "au"})
        if bad or not x.tasks:
            errors.append(f"{key}.tasks{_at(where, key + '.tasks')}: each one of 'va', "
                          f"'expr', 'au' (at least one), got {list(x.tasks)!r}")
        if x.repeat < 1:
            errors.append(f"{key}.repeat{_at(where, key + '.repeat')}: must be >= 1, "
                          f"got {x.repeat}")
        both = sorted(set(x.val_subjects) & set(x.held_out_subjects))
        if both:
            errors.append(f"{key}: subjects both validate and are held out: {both}")
    if d.expr_labels is not None:
        from .labels import LABEL_SETS

        exprs = sorted(n for n, s in LABEL_SETS.items() if s.kind == "expression")
        need(d.expr_labels in exprs, "data.expr_labels", f"must be one of {exprs}")

    need(0 <= m.drop_path < 1, "model.drop_path", "must be in [0, 1)")
    need(0 <= m.mask_ratio < 1, "model.mask_ratio", "must be in [0, 1)")
    need(m.va_hidden >= 1, "model.va_hidden", "must be >= 1")
    need(m.patch_size is None or m.patch_size >= 1, "model.patch_size", "must be >= 1 or null")
    need(m.heads is None or (bool(m.heads) and set(m.heads) <= {"va", "expr", "au"}),
         "model.heads", "must be null or a non-empty list of 'va', 'expr', 'au'")
    need(m.expr_branch_checkpoint is None or m.expr_branch is not None,
         "model.expr_branch_checkpoint", "needs model.expr_branch to be set")
    from .kinds import get_kind, kind_names

    if m.kind in kind_names():
        kind = get_kind(m.kind)
        need(m.expr_branch is None or kind.has_expr_branch, "model.expr_branch",
             f"only kind 'emma' has a CNN expression branch (kind is {m.kind!r}): must be null")
        need(m.heads is None or set(m.heads) <= kind.predicts, "model.heads",
             f"kind {m.kind!r} predicts {sorted(kind.predicts)}")
        need(m.heads is None or set(m.heads) == kind.predicts or kind.optional_heads,
             "model.heads", f"kind {m.kind!r} always has all its heads: must be null")
        kind.validate(cfg, need)  # every kind checks its own settings
    else:
        need(False, "model.kind", f"must be one of {kind_names()}")

    for k in ("au_weight", "expr_weight", "va_weight", "js_weight"):
        need(getattr(lo, k) >= 0, f"loss.{k}", "must be >= 0")
    need(0 <= lo.label_smoothing < 1, "loss.label_smoothing", "must be in [0, 1)")

    need(o.base_lr > 0, "optim.base_lr", "must be > 0")
    need(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    need(o.layer_decay is None or 0 < o.layer_decay <= 1, "optim.layer_decay",
         "must be in (0, 1] or null")
    need(o.batch_size >= 1, "optim.batch_size", "must be >= 1")
    need(o.accum_steps >= 1, "optim.accum_steps", "must be >= 1")
    need(o.clip_grad is None or o.clip_grad > 0, "optim.clip_grad", "must be > 0 or null")
    need(o.epochs >= 1, "optim.epochs", "must be >= 1")
    need(0 <= o.warmup_epochs <= o.epochs, "optim.warmup_epochs",
         f"must be in [0, optim.epochs={o.epochs}]")
    need(0 <= o.min_lr <= o.base_lr, "optim.min_lr", f"must be in [0, base_lr={o.base_lr}]")
    need(all(0 <= b < 1 for b in o.betas), "optim.betas", "each must be in [0, 1)")

    for k in ("decoder_dim", "decoder_depth", "decoder_heads"):
        need(getattr(mae, k) >= 1, f"mae.{k}", "must be >= 1")
    need(mae.decoder_dim % max(mae.decoder_heads, 1) == 0, "mae.decoder_dim",
         f"must be divisible by mae.decoder_heads ({mae.decoder_heads})")
    need(mae.decoder_dim % 4 == 0, "mae.decoder_dim",
         "must be divisible by 4 (2-D sin-cos position embedding)")
    lo_s, hi_s = mae.crop_scale
    need(0 < lo_s <= hi_s <= 1, "mae.crop_scale", "must be 0 < min <= max <= 1")
    need(mae.recon_images >= 0, "mae.recon_images", "must be >= 0")

    need(r.eval_every >= 1, "run.eval_every", "must be >= 1")
    need(r.log_every >= 1, "run.log_every", "must be >= 1")
    need(r.select_by in SELECTABLE, "run.select_by", f"must be one of {list(SELECTABLE)}")
    if errors:
        raise ConfigError(errors)


def config_from_dict(raw: dict, where: dict[str, str] | None = None,
                     recipe: str | None = None) -> Config:
    """A validated ``Config`` from a nested dict (unknown keys and bad types rejected)."""
    where = where or {}
    errors: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping, got {raw!r}")
    cfg = _build(Config, raw, where, errors)
    if errors:
        raise ConfigError(errors)
    shipped = (cfg.model.expr_branch or "").startswith("affectkit:")
    if (cfg.model.expr_branch is None or shipped) and \
            cfg.model.expr_branch_checkpoint == MISSING:
        # no branch, or a shipped model's (weights in the package): no checkpoint to give
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, expr_branch_checkpoint=None))
    if "recipe" not in raw and recipe is not None:
        cfg = dataclasses.replace(cfg, recipe=recipe)
    validate(cfg, where)
    return cfg


def load_config(recipe_or_path: str, overrides: typing.Iterable[str] = ()) -> Config:
    """Defaults <- recipe (and its ``base:`` chain) <- ``key=value`` overrides, validated.

    ``recipe_or_path``: a built-in recipe name (see ``list_recipes``) or a YAML file,
    such as the ``config.yaml`` a run saved (``load_config(saved)`` rebuilds that run's
    config). Raises ``ConfigError`` naming every unknown key, bad type or bad value.
    """
    merged, where, label = _load_chain(recipe_or_path)
    _apply_overrides(merged, where, list(overrides))
    return config_from_dict(merged, where, recipe=label)


# ----------------------------------------------------------------------------- paths, dump


def check_paths(cfg: Config) -> None:
    """The files a run reads exist, and no required (``???``) value is left unset.

    Raises ``ConfigError`` naming each key and path. Call before training / --dry-run.
    """
    errors = []
    for section in ("data", "model", "loss", "mae", "optim", "run", "progressive"):
        for k, v in dataclasses.asdict(getattr(cfg, section)).items():
            if v == MISSING:
                hint = f" ({BRANCH_WEIGHTS_HINT})" if k == "expr_branch_checkpoint" else ""
                errors.append(f"{section}.{k}: required by recipe {cfg.recipe!r} but not set "
                              f"(pass {section}.{k}=...){hint}")
    m = cfg.model
    paths = {"data.root": cfg.data.root, "data.images": cfg.data.images,
             "model.pretrained": None if (m.pretrained or "").startswith("timm:")
             else m.pretrained,
             "model.expr_branch_checkpoint": m.expr_branch_checkpoint}
    if m.kind == "progressive" and not cfg.progressive.task_models:
        errors.append("progressive.task_models: required: the stage-1 runs whose features "
                      "the joint model fuses (progressive.task_models=[RUN_AU,RUN_EXPR,RUN_VA])")
    if m.kind == "progressive":
        paths.update({f"progressive.task_models.{i}": p
                      for i, p in enumerate(cfg.progressive.task_models)})
    for key, p in paths.items():
        if p is not None and p != MISSING and not Path(p).expanduser().exists():
            errors.append(f"{key}: no such file or directory: {p}")
    if errors:
        raise ConfigError(errors)


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict (lists for tuples), ``recipe`` first; loadable by ``load_config``."""
    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    d = plain(dataclasses.asdict(cfg))
    return {"recipe": d.pop("recipe"), **d}


def flat_config(d: dict, prefix: str = "") -> dict:
    """A nested config dict as ``{"section.key": value}``, to compare two configs key by key."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def git_sha(path: str | Path | None = None) -> str | None:
    """HEAD of the git checkout holding ``path`` (default: this package), None if none."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def dump_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically) with the git SHA and affectkit version."""
    d = config_to_dict(cfg)
    d = {"recipe": d.pop("recipe"), "git_sha": git_sha(), "affectkit_version": __version__, **d}
    text = "# resolved affectkit config\n" + yaml.safe_dump(d, sort_keys=False)
    return atomic_write_text(path, text)
