"""What the real-data benchmarks share: the datasets, model configs, training through the
library's engine, evaluation of the selected checkpoint, MAE pretraining, and the results
file.

Every training run goes through ``affectkit.engine.loop.train`` with a config built by
``affectkit.config.load_config(recipe, overrides)``; the selected checkpoint (``best.pt``,
best validation score) is evaluated on the held-out set with ``engine.evaluation.infer``
and the ``affectkit.metrics`` functions. Run folders are resumable: running a benchmark
again continues killed runs from ``last.pt`` and reuses finished ones (``--fresh`` starts
over).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision

import affectkit
from affectkit.config import Config, ConfigError, config_to_dict, flat_config, git_sha, load_config
from affectkit.data import open_dataset
from affectkit.data.augment import transforms_for
from affectkit.data.dataset import FaceDataset
from affectkit.data.errors import DataError
from affectkit.data.table import FaceTable
from affectkit.engine.build import build_model, model_labels
from affectkit.engine.evaluation import collect_predictions, infer
from affectkit.engine.loop import read_metrics, resolve_run_config, train
from affectkit.io import atomic_write_json
from affectkit.labels import ABAW_AU, EXPR_INVALID, LabelSet
from affectkit.metrics import (
    au_scores,
    binarize_au,
    expr_scores,
    p_lsd,
    tune_au_thresholds,
)

log = logging.getLogger("benchmarks.real")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "benchmarks" / "results"
DEFAULT_WORK = REPO / "runs" / "bench-real"

RECIPES = {"cnn": "cnn-mtl", "vit": "vit-mtl", "cotex": "cotex-lsd"}  # MAE: profile["mae"]


class NotMeasured(Exception):
    """A model or step that cannot run here (missing recipe, data, ...): recorded, not fatal."""


# ----------------------------------------------------------------------------- environment


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_dirty() -> bool | None:
    """Whether tracked files differ from the commit, not counting what the harness itself
    writes (the results and the report)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                              ".", ":!benchmarks/RESULTS.md", ":!benchmarks/results"],
                             cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip())


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def environment() -> dict:
    """Device, versions and code revision for a results file."""
    dev = device()
    return {
        "device": dev.type,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "affectkit": affectkit.__version__,
        "git_sha": git_sha(REPO),
        "git_dirty": _git_dirty(),
        "host": platform.node(),
    }


def command_line(argv: list[str] | None = None, module: str = "benchmarks.real.run") -> str:
    argv = sys.argv[1:] if argv is None else argv
    exe = os.path.relpath(sys.executable) if sys.executable else "python"
    return shlex.join([exe, "-m", module, *argv])


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- data


def _pick(tables: dict, suffix: str, root: Path) -> FaceTable:
    names = [n for n in tables if n == suffix or n.endswith("/" + suffix)]
    if not names:
        raise NotMeasured(f"{root}: no split {suffix!r} (found {sorted(tables)})")
    table = tables[names[0]]
    if isinstance(table, DataError):
        raise NotMeasured(f"{root}: {table}")
    return table


def open_fer2013(data_root: Path) -> dict[str, FaceTable]:
    """FER2013's Training / PublicTest / PrivateTest tables (FER2013 class order), read
    from ``labels.csv``; the zips are extracted once into the affectkit cache."""
    root = Path(data_root) / "fer2013"
    if not root.is_dir():
        raise NotMeasured(f"FER2013 not found at {root}")
    tables = open_dataset(root)
    return {s: _pick(tables, f"labels/{s}", root)
            for s in ("Training", "PublicTest", "PrivateTest")}


def open_ckplus(data_root: Path) -> tuple[FaceTable, FaceTable]:
    """CK+48: all 981 images (7 classes, ``subject`` and ``sequence`` columns) and the 684
    AU-coded ones (19 CK AUs)."""
    root = Path(data_root) / "ckplus48"
    if not root.is_dir():
        raise NotMeasured(f"CK+48 not found at {root}")
    tables = open_dataset(root)
    return _pick(tables, "csv/labels", root), _pick(tables, "csv/au_labels_from_ck_codes", root)


def limit(table: FaceTable, n: int | None, seed: int) -> FaceTable:
    """At most ``n`` rows drawn at random (seeded), kept in their original order."""
    if n is None or len(table) <= n:
        return table
    rows = np.sort(np.random.default_rng(seed).choice(len(table), n, replace=False))
    return table.subset(rows)


def relabel(table: FaceTable, target: LabelSet, drop_unlabelled: bool = False) -> FaceTable:
    """Expressions mapped by name into ``target``; rows whose class ``target`` lacks get
    -1 and, with ``drop_unlabelled``, are removed."""
    if table.expr_labels.name != target.name:
        table = table.with_expr_labels(target)
    if drop_unlabelled:
        table = table.subset(np.flatnonzero(table.expression != EXPR_INVALID))
    return table


def without_expression(table: FaceTable) -> FaceTable:
    df = table.df.copy()
    df["expression"] = EXPR_INVALID
    return FaceTable(df, table.image_root, table.expr_labels, table.au_labels, table.source,
                     dict(table.skipped))


def class_counts(table: FaceTable) -> dict[str, int]:
    e = table.expression
    return {c: int((e == i).sum()) for i, c in enumerate(table.expr_labels.classes)}


def subject_folds(subjects, k: int, seed: int = 0) -> np.ndarray:
    """A fold index (0..k-1) per row such that every subject lies in one fold: subjects in
    a seeded random order, largest first, each to the fold with the fewest images so far
    (GroupKFold's balancing, with a shuffle)."""
    subjects = np.asarray([str(s) for s in subjects])
    uniq, counts = np.unique(subjects, return_counts=True)
    if len(uniq) < k:
        raise ValueError(f"{len(uniq)} subjects cannot make {k} folds")
    order = np.random.default_rng(seed).permutation(len(uniq))
    order = order[np.argsort(-counts[order], kind="stable")]
    sizes = np.zeros(k, np.int64)
    fold_of = {}
    for i in order:
        f = int(np.argmin(sizes))
        fold_of[uniq[i]] = f
        sizes[f] += counts[i]
    return np.array([fold_of[s] for s in subjects])


def pick_subjects(subjects, fraction: float, seed: int) -> set[str]:
    """A seeded random ``fraction`` of the distinct subjects (at least one)."""
    uniq = np.unique(np.asarray([str(s) for s in subjects]))
    k = max(1, round(fraction * len(uniq)))
    return set(np.random.default_rng(seed).choice(uniq, k, replace=False).tolist())


# ----------------------------------------------------------------------------- configs


def _q(value) -> str:
    """An override value: JSON is YAML, so paths and strings survive any characters."""
    return json.dumps(str(value)) if isinstance(value, (str, Path)) else json.dumps(value)


def model_config(kind: str, tr: dict, *, run_dir: Path, seed: int, epochs: int,
                 data_root: Path, pretrained: Path | None = None, mask_ratio: float = 0.0,
                 num_classes: int | None = None, expr_labels: str | None = None,
                 batch: int | None = None, extra: tuple[str, ...] = ()) -> tuple[Config, list]:
    """(config, overrides) of a ``cnn`` (recipe cnn-mtl), ``vit`` (vit-mtl: one ViT,
    8-class expression head) or ``cotex`` (cotex-lsd: two views, ``num_classes``) model
    with the profile's shared training settings ``tr``."""
    batch = batch or tr["batch"]
    accum = tr.get("accum", 1) if batch == tr["batch"] else 1  # CK+ sets its own batch
    size, resize = (tr["cnn_img_size"], tr["cnn_resize"]) if kind == "cnn" else \
        (tr["img_size"], tr["resize"])
    ov = [
        f"data.root={_q(data_root)}", "data.layout=csv",
        f"data.img_size={size}", f"data.resize={resize}",
        f"data.jitter={tr['jitter']}", "data.hue=0.0", f"data.num_workers={tr['num_workers']}",
        f"data.augment={tr.get('augment', 'auto')}",
        f"model.pretrained={_q(pretrained) if pretrained else 'null'}", "model.pool=avg",
        f"optim.base_lr={tr['lr'] * 256 / (batch * accum):.6g}", f"optim.batch_size={batch}",
        f"optim.accum_steps={accum}", f"optim.epochs={epochs}",
        f"optim.warmup_epochs={min(tr['warmup_epochs'], epochs)}", "optim.layer_decay=null",
        f"optim.weight_decay={tr['weight_decay']}", f"optim.clip_grad={tr['clip_grad']}",
        "optim.min_lr=1e-6",
        f"run.seed={seed}", f"run.amp={tr['amp']}", f"run.out_dir={_q(run_dir)}",
        f"run.log_every={tr['log_every']}", "run.eval_every=1",
    ]
    if kind == "cnn":
        ov += [f"model.backbone={tr['cnn']}", "model.drop_path=0.0"]
    elif kind in ("vit", "cotex"):
        ov += [f"model.backbone={tr['vit']}", f"model.drop_path={tr['drop_path']}"]
        ov += [f"model.patch_size={tr['patch']}"] if tr.get("patch") else []
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    if kind == "cotex":
        ov += [f"model.mask_ratio={mask_ratio}", f"model.num_classes={num_classes}",
               "loss.js_weight=1.0", "loss.label_smoothing=0.0"]
        ov += [f"data.expr_labels={expr_labels}"] if expr_labels else []
    ov += list(extra)
    return load_config(RECIPES[kind], ov), ov


def parse_model(name: str) -> dict:
    """A model name of the benchmarks -> kind, init and mask ratio:
    ``cnn`` (random init), ``vit-random`` / ``vit-mae`` (one ViT), ``cotex-random`` /
    ``cotex-mae`` (masked CoTEX at the paper's 0.75) and ``cotex-<init>-r<ratio>``; a
    trailing ``-eqtime`` trains for the reference model's time instead of its epochs."""
    eqtime = name.endswith("-eqtime")
    if eqtime:
        spec = parse_model(name[:-len("-eqtime")])
        if spec["kind"] == "cnn":
            raise ValueError(f"{name!r}: only ViT and CoTEX models train for equal time")
        return {**spec, "equal_time": True}
    parts = name.split("-")
    if name == "cnn":
        return {"kind": "cnn", "init": "random", "mask_ratio": 0.0}
    if len(parts) >= 2 and parts[0] in ("vit", "cotex") and parts[1] in ("random", "mae"):
        ratio = 0.75 if parts[0] == "cotex" else 0.0
        if len(parts) == 3 and parts[0] == "cotex" and parts[2].startswith("r"):
            ratio = float(parts[2][1:])
        elif len(parts) != 2:
            raise ValueError(f"unknown model name {name!r}")
        return {"kind": parts[0], "init": parts[1], "mask_ratio": ratio}
    raise ValueError(f"unknown model name {name!r} (cnn, vit-random, vit-mae, cotex-random, "
                     "cotex-mae, cotex-<init>-r<ratio>, any of them + -eqtime)")


# ----------------------------------------------------------------------------- training


def train_and_load(cfg: Config, overrides: list[str], train_table: FaceTable,
                   val_table: FaceTable, run_dir: Path, keep_last: bool = False
                   ) -> tuple[torch.nn.Module, dict]:
    """Train ``cfg`` with the library's loop (resuming ``run_dir`` if it holds a killed
    run, reusing it if it holds a finished one), then load ``best.pt`` (the epoch with
    the best validation score) into a fresh model. ``last.pt`` is deleted afterwards
    unless ``keep_last``. Returns the model (eval mode, on ``device()``) and what to
    record about the run."""
    labels = model_labels(cfg)
    train_table, val_table = relabel(train_table, labels), relabel(val_table, labels)
    run_dir = Path(run_dir)
    resumed = (run_dir / "last.pt").exists()
    finished = not resumed and _finished(run_dir, cfg)
    t0 = time.perf_counter()
    if not finished:
        train(cfg, run_dir, resume=True, progress=False, tables=(train_table, val_table))
    wall = time.perf_counter() - t0
    rows = read_metrics(run_dir)
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    fresh = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=None))
    model = build_model(fresh)
    model.load_state_dict(best["model"])
    model = model.to(device()).eval()
    if not keep_last:  # a finished run needs only best.pt (ViT-B CoTEX's last.pt: ~2 GB)
        (run_dir / "last.pt").unlink(missing_ok=True)
    ips = [r["img_per_s"] for r in rows if r.get("img_per_s")]
    info = {
        "recipe": cfg.recipe,
        "overrides": overrides,
        "run_dir": os.path.relpath(run_dir, REPO),
        "model_labels": labels.name,
        "train_images": len(train_table),
        "val_images": len(val_table),
        "epochs": len(rows),
        "steps": rows[-1]["step"] if rows else 0,
        "best_epoch": int(best.get("epoch", -1)),
        "val_score_by_epoch": [r.get("val", {}).get("score") for r in rows],
        "train_loss_by_epoch": [r["train"].get("loss") for r in rows],
        "train_img_per_s": float(np.median(ips)) if ips else None,
        "train_img_per_s_by_epoch": ips,
        "train_call_wall_s": round(wall, 1),
        "resumed": resumed,
        "reused_finished_run": finished,
    }
    return model, info


_MAY_DIFFER = ("run.out_dir", "data.root")


def _finished(run_dir: Path, cfg: Config) -> bool:
    """A run folder whose training ended (``last.pt`` removed after evaluation) under the
    same config: all epochs in ``metrics.jsonl``, ``best.pt`` saved with this config."""
    best_path = run_dir / "best.pt"
    if not best_path.is_file() or not (run_dir / "metrics.jsonl").is_file():
        return False
    if len(read_metrics(run_dir)) != cfg.optim.epochs:
        return False
    saved = torch.load(best_path, map_location="cpu", weights_only=True).get("config") or {}
    # best.pt holds the config as training resolved it (data.mean / std fixed, ...)
    a, b = flat_config(saved), flat_config(config_to_dict(resolve_run_config(cfg)))
    return all(a.get(k) == b.get(k) for k in set(a) | set(b) if k not in _MAY_DIFFER)


def is_cnn(model: torch.nn.Module) -> bool:
    """An EMMA-style model (``backbone``) or CoTEX (``views``) whose backbone is a CNN."""
    backbone = getattr(model, "backbone", None)
    if backbone is None and hasattr(model, "views"):
        backbone = model.views[0]
    return backbone is not None and not backbone.is_vit


def predict(model: torch.nn.Module, table: FaceTable, cfg: Config, batch: int
            ) -> dict[str, np.ndarray]:
    """``infer`` over ``table`` with the evaluation transform (resize to ``img_size``)."""
    dev = device()
    cnn = is_cnn(model)
    ds = FaceDataset(table, transforms_for(cfg.data)[1])
    amp = torch.bfloat16 if dev.type == "cuda" else None
    if cnn:
        model = model.to(memory_format=torch.channels_last)
    return infer(model, ds, collect_predictions, batch_size=batch,
                 num_workers=cfg.data.num_workers, device=dev, amp_dtype=amp,
                 channels_last=cnn)


def encode_labels(values) -> str:
    """Class indices 0-9 as a digit string (compact per-image predictions in JSON)."""
    v = np.asarray(values, np.int64)
    if v.size and (v.min() < 0 or v.max() > 9):
        raise ValueError("encode_labels needs indices 0..9")
    return "".join(map(str, v.tolist()))


def decode_labels(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8).astype(np.int64) - ord("0")


def expression_eval(arrays: dict[str, np.ndarray], model_set: LabelSet, table: FaceTable,
                    target: LabelSet) -> dict:
    """Expression scores on ``target``'s classes: the model's probabilities restricted to
    those classes (mapped by name; a column the target lacks, such as ABAW's 'Other', is
    left out of the argmax), truth mapped by name; rows of classes ``target`` lacks are
    skipped. Also how often the unrestricted argmax fell on a left-out column."""
    cols = target.mapping_to(model_set)
    if (cols < 0).any():
        missing = [c for c, j in zip(target.classes, cols) if j < 0]
        raise ValueError(f"model classes {model_set.name} lack {missing}")
    truth = table.expr_labels.convert(table.expression, target)[arrays["index"]]
    keep = truth != EXPR_INVALID
    probs = arrays["expr_probs"][keep]
    truth = truth[keep]
    pred = probs[:, cols].argmax(-1)
    outside = ~np.isin(probs.argmax(-1), cols)
    out = expr_scores(truth, pred, target.classes)
    out = {"f1": out["expr_f1"], "acc": out["expr_acc"], "n": out["expr_count"],
           "f1_per_class": out["expr_f1_per_class"],
           "argmax_outside_classes": float(outside.mean()) if outside.size else 0.0}
    if target.name == "lsd":
        out["p_lsd"] = p_lsd(truth, pred, len(target))
    out["pred"] = encode_labels(pred)
    out["truth"] = encode_labels(truth)
    return out


def au_eval(arrays: dict[str, np.ndarray], thresholds=0.5) -> dict:
    """AU F1 per ABAW AU and their mean, at ``thresholds`` (on probabilities)."""
    truth = arrays["au_true"].astype(np.int64)
    s = au_scores(truth, binarize_au(arrays["au_probs"], thresholds), ABAW_AU.classes)
    return {"mean_f1": s["au_f1"], "f1_per_au": s["au_f1_per_au"],
            "positives": {a: int((truth[:, j] == 1).sum()) for j, a in
                          enumerate(ABAW_AU.classes)}, "n": int(len(truth))}


def tuned_thresholds(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return tune_au_thresholds(arrays["au_probs"], arrays["au_true"].astype(np.int64))


# ----------------------------------------------------------------------------- MAE


def mae_encoder(profile: dict, data_root: Path, work: Path, seed: int) -> tuple[Path, dict]:
    """The FER2013-Training MAE encoder of this profile and seed: pretrained with the
    library's MAE recipe on the Training images only (labels unused; layout ``images``
    over the extracted ``train/`` folder), shared by every benchmark of the profile and
    seed (``work/mae-fer2013``), resumed or reused when already there."""
    p = profile["mae"]
    run_dir = work / "mae-fer2013"
    fer = open_fer2013(data_root)
    images = Path(fer["Training"].image_root) / "train"
    if not images.is_dir():
        raise NotMeasured(f"FER2013 Training images not found at {images}")
    tr = profile["train"]
    ov = [f"data.root={_q(images)}", "data.layout=images",
          f"data.img_size={tr['img_size']}", f"data.resize={tr['img_size']}",
          f"model.backbone={tr['vit']}",
          *([f"model.patch_size={tr['patch']}"] if tr.get("patch") else []),
          f"optim.epochs={p['epochs']}", f"optim.warmup_epochs={p['warmup_epochs']}",
          f"optim.batch_size={p['batch']}", f"optim.base_lr={p['lr'] * 256 / p['batch']:.6g}",
          f"run.seed={seed}", f"run.out_dir={_q(run_dir)}", f"run.amp={tr['amp']}",
          f"data.augment={tr.get('augment', 'auto')}", *p.get("overrides", [])]
    try:
        cfg = load_config(p["recipe"], ov)
    except ConfigError as e:
        raise NotMeasured(f"MAE recipe {p['recipe']!r} unusable: {e}") from None
    tables = open_dataset(images, "images")
    train_t, val_t = (_pick(tables, s, images) for s in ("images/train", "images/val"))
    train_t = limit(train_t, p.get("train_limit"), seed)
    val_t = limit(val_t, p.get("val_limit"), seed)
    resumed = (run_dir / "last.pt").exists()
    t0 = time.perf_counter()
    train(cfg, run_dir, resume=True, progress=False, tables=(train_t, val_t))
    wall = time.perf_counter() - t0
    encoder = run_dir / "encoder.pth"
    if not encoder.is_file():
        raise NotMeasured(f"MAE run {run_dir} wrote no encoder.pth")
    rows = read_metrics(run_dir)
    ips = [r["img_per_s"] for r in rows if r.get("img_per_s")]
    # how the encoder loads into the fine-tuning ViT (what stays at random init)
    from affectkit.models.backbone import create_backbone

    report = create_backbone(tr["vit"], img_size=tr["img_size"], patch_size=tr.get("patch"),
                             pretrained=str(encoder), pool="avg").load_report or {}
    info = {
        "recipe": p["recipe"], "overrides": ov, "run_dir": os.path.relpath(run_dir, REPO),
        "encoder": os.path.relpath(encoder, REPO), "train_images": len(train_t),
        "val_images": len(val_t), "epochs": len(rows),
        "recon_loss_by_epoch": [r.get("val", {}).get("recon_loss") for r in rows],
        "train_img_per_s": float(np.median(ips)) if ips else None,
        "train_call_wall_s": round(wall, 1), "resumed": resumed,
        "fine_tune_load": {"missing": report.get("missing", []),
                           "dropped": len(report.get("dropped", []))},
    }
    return encoder, info


# ----------------------------------------------------------------------------- results


def bearing(settings: dict, benchmark: str) -> dict:
    """The part of a profile's settings that a benchmark's numbers depend on: the shared
    training settings, the MAE and its own section (a section added for another benchmark
    leaves its results valid)."""
    return {k: settings.get(k) for k in ("train", "mae", "mae_from", benchmark)}


class Results:
    """One results JSON (``<benchmark>-<profile>-s<seed>.json``), rewritten atomically after
    every model. Models already in an existing file of the same benchmark, profile and
    seed and not run again are kept (so a benchmark can be run model by model)."""

    def __init__(self, out_dir: Path, benchmark: str, profile_name: str, profile: dict,
                 seed: int, argv: list[str] | None = None, module: str = "benchmarks.real.run"):
        self.path = Path(out_dir) / f"{benchmark}-{profile_name}-s{seed}.json"
        self.t0 = time.perf_counter()
        old = {}
        if self.path.is_file():
            try:
                old = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError:
                old = {}
        if old and bearing(json.loads(json.dumps(profile)), benchmark) != bearing(
                old.get("settings") or {}, benchmark):
            log.warning("%s was measured with other profile settings: its models are "
                        "dropped", self.path)
            old = {}
        self.data = {
            "benchmark": benchmark, "profile": profile_name, "seed": seed,
            "command": command_line(argv, module), "started": now(), "finished": None,
            "wall_s": None, "environment": environment(), "settings": profile,
            "commands": old.get("commands", []) + [command_line(argv, module)],
            "data": old.get("data", {}), "pretrain": old.get("pretrain"),
            "models": old.get("models", {}), "extra": old.get("extra", {}),
            "not_measured": {},
        }

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self.write()

    def model(self, name: str, entry: dict) -> None:
        entry = {**entry, "measured": now(), "device_name": self.data["environment"][
            "device_name"]}
        self.data["models"][name] = entry
        self.data["not_measured"].pop(name, None)
        self.write()

    def skip(self, name: str, why: str) -> None:
        log.warning("%s: not measured: %s", name, why)
        self.data["not_measured"][name] = why
        self.write()

    def write(self, final: bool = False) -> Path:
        self.data["wall_s"] = round(time.perf_counter() - self.t0, 1)
        if final:
            self.data["finished"] = now()
        return atomic_write_json(self.path, self.data)


# ----------------------------------------------------------------------------- context


@dataclasses.dataclass
class Context:
    """One benchmark invocation: profile, seed, where data and run folders are, results."""

    profile_name: str
    profile: dict
    seed: int
    data_root: Path
    work: Path  # run folders of this profile and seed: <work>/<benchmark>/<model>/...
    results: Results
    only: list[str] | None = None  # --models: run only these (others kept from the file)
    _mae: dict = dataclasses.field(default_factory=dict)
    # the MAE's own seed and profile-and-seed folder (--mae-seed; default: the training's)
    mae_seed: int | None = None
    mae_work: Path | None = None

    def wants(self, name: str) -> bool:
        return self.only is None or name in self.only

    def init_weights(self, init: str) -> Path | None:
        """``None`` for random init; for ``mae`` the FER2013 MAE encoder (pretrained on
        first use, recorded under ``pretrain`` in the results)."""
        if init == "random":
            return None
        if init != "mae":
            raise ValueError(f"unknown init {init!r}")
        if "error" in self._mae:
            raise NotMeasured(self._mae["error"])
        if "encoder" not in self._mae:
            work = self.mae_work or self.work
            seed = self.seed if self.mae_seed is None else self.mae_seed
            log.info("MAE pretraining on FER2013 Training images (%s)", work / "mae-fer2013")
            try:
                encoder, info = mae_encoder(self.profile, self.data_root, work, seed)
                info["seed"] = seed
            except NotMeasured as e:
                self._mae["error"] = str(e)
                raise
            self._mae.update(encoder=encoder, info=info)
            log.info("MAE encoder %s (recon loss by epoch %s, %.0f img/s)", encoder,
                     info["recon_loss_by_epoch"], info["train_img_per_s"] or 0)
        self.results.set("pretrain", self._mae["info"])
        return self._mae["encoder"]
