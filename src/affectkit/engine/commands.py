"""What ``affectkit train | pretrain | evaluate | predict | ensemble`` do, as functions
that return results.

The CLI only parses arguments and prints; the policy lives here: which command a recipe
belongs to, what a dry run shows, which split to use,
which AU thresholds (given, tuned on this data, or the run folder's own), where the
report, the tuned thresholds and the submission are written, and what goes into the
report's metadata. Each function returns ``None`` on the non-main ranks of a
``torchrun`` job (only rank 0 writes). Problems the user can fix raise ``RunError`` (or
``DataError``) with a message naming the file; ``note`` receives progress messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import (
    Config,
    ConfigError,
    check_paths,
    config_to_dict,
    git_sha,
    list_recipes,
    load_config,
)
from ..data.submission import prediction_table, write_prediction_table
from ..data.table import FaceTable
from ..io import atomic_write_json
from ..kinds import get_kind
from ..labels import ABAW_AU
from ..metrics import save_au_thresholds, tune_au_thresholds
from ..models.ensemble import retune_au_thresholds
from . import dist
from .evaluation import score_predictions
from .inference import (
    THRESHOLDS,
    EvalData,
    RunError,
    RunKind,
    check_images,
    check_same_kind,
    ensemble_arrays,
    hard_predictions,
    load_run,
    open_table,
    predict_table,
    read_run,
    read_thresholds,
    run_thresholds,
)

Note = Callable[[str], None]
PathLike = str | os.PathLike


class WrongCommand(ValueError):
    """A fine-tuning recipe given to ``pretrain``, or a pretraining one to ``train``."""


def _silent(message: str) -> None:
    """The default ``note``: library callers get results, not chatter."""


# ----------------------------------------------------------------------------- training


def _recipes_of_kind(mae: bool) -> list[str]:
    """Built-in recipes that are (or are not) MAE pretraining, for hints."""
    names = []
    for name in list_recipes():
        try:
            if get_kind(load_config(name).model.kind).pretraining == mae:
                names.append(name)
        except ConfigError:
            continue
    return names


def _wrong_command(cfg: Config, pretrain: bool) -> str | None:
    """The hint when a recipe is given to the other command (train <-> pretrain)."""
    is_mae = get_kind(cfg.model.kind).pretraining
    if is_mae == pretrain:
        return None
    if is_mae:
        return (f"recipe {cfg.recipe!r} is pretraining (model.kind: {cfg.model.kind}); run it with "
                f"'affectkit pretrain {cfg.recipe} ...'")
    return (f"recipe {cfg.recipe!r} is not pretraining (model.kind: {cfg.model.kind}); "
            f"fine-tune it with 'affectkit train {cfg.recipe} ...', or pretrain an MAE recipe "
            f"({', '.join(_recipes_of_kind(mae=True)) or 'model.kind: mae'})")


def prepare_training(recipe: str, overrides: Sequence[str], *, pretrain: bool = False
                     ) -> tuple[Config, FaceTable, FaceTable]:
    """The resolved config and its (train, val) tables, checked before anything trains.
    ``ConfigError`` for an invalid config or missing paths; ``WrongCommand`` when the
    recipe belongs to the other command."""
    from .build import open_splits

    cfg = load_config(recipe, list(overrides))
    hint = _wrong_command(cfg, pretrain)
    if hint is not None:
        raise WrongCommand(hint)
    check_paths(cfg)
    train_table, val_table = open_splits(cfg)
    return cfg, train_table, val_table


def resolved_config(cfg: Config) -> dict:
    """What a dry run shows: the recipe and the code's git commit first, then the config."""
    d = config_to_dict(cfg)
    return {"recipe": d.pop("recipe"), "git_sha": git_sha(), **d}


def exported_encoder(run_dir: PathLike) -> Path | None:
    """The encoder a pretraining run exported for fine-tuning, if it did."""
    from .pretrain import ENCODER

    encoder = Path(run_dir) / ENCODER
    return encoder if encoder.is_file() else None


# ----------------------------------------------------------------------------- inference


def _loader_args(run, batch_size: int | None, num_workers: int | None,
                 tta: str | None = None) -> dict:
    """Batch size, workers and test-time augmentation for prediction: as given, else the
    run's (batches <= 256)."""
    return {"batch_size": batch_size or min(run.cfg.optim.batch_size, 256),
            "num_workers": run.cfg.data.num_workers if num_workers is None else num_workers,
            "tta": tta}


def au_thresholds_of(value: PathLike | None, run: RunKind):
    """0.5, the thresholds of a file, or "tune" (multi-task models only)."""
    if not value:
        return 0.5
    if not run.multitask:
        raise RunError(f"{run.checkpoint} predicts expressions only: it has no AU "
                       "thresholds (drop --au-thresholds)")
    return "tune" if value == "tune" else read_thresholds(value)


def _tuned_scores(arrays, labels, thresholds, same_data: bool = True) -> dict:
    tuned = score_predictions(arrays, labels, thresholds)
    out = {"au_thresholds": [float(t) for t in thresholds], "au_f1": tuned["au_f1"],
           "au_f1_per_au": tuned["au_f1_per_au"], "score": tuned["score"]}
    if "p_mtl" in tuned:
        out["p_mtl"] = tuned["p_mtl"]
    if same_data:
        out["optimistic"] = True
        out["note"] = ("AU thresholds tuned and scored on the same data: an optimistic "
                       "estimate; the scores above (at the thresholds given) are the honest ones")
    return out


def _ordered_scores(task: str, rows: int, scores: dict, meta: dict) -> dict:
    """``affectkit score``'s layout (task, rows, metrics), then where they come from."""
    return {"task": task, "rows": rows, **scores, **meta}


def _write_evaluation(out: Path, arrays, table, run, scores, thresholds, tuned_thr, title,
                      meta) -> dict:
    from ..report import write_report

    hard = hard_predictions(arrays, thresholds)
    paths = {"scores.json": atomic_write_json(out / "scores.json", scores)}
    paths.update(write_report(out, arrays, table.images, run.labels, scores, hard,
                              au_thresholds=thresholds, tuned_thresholds=tuned_thr,
                              title=title, meta=meta))
    return paths


def _submission(out: PathLike, run: RunKind, data: EvalData, hard, label_format: str,
                rows: int) -> dict:
    """Write the submission; a ``RunError`` when it cannot be, nothing written."""
    if not data.videos and Path(out).is_dir():
        raise RunError(f"{out} is a folder: --out names the submission file")
    try:
        paths = run.kind.write_submission(out, data.table, hard, run.labels,
                                          videos=data.videos, label_format=label_format)
    except ValueError as e:
        raise RunError(f"{out}: prediction not written: {e}") from None
    if data.videos:
        kind = "per-video " + ("VA/EXPR/AU folders" if run.multitask else "EXPR files")
    else:
        kind = "MTL submission" if run.multitask else "image,label CSV"
    return {"out": Path(out), "paths": paths, "format": kind, "rows": rows,
            "source": data.source}


def evaluate_run(run_path: PathLike, data: PathLike | None = None, *, layout: str | None = None,
                 split: str | None = None, images: PathLike | None = None,
                 out: PathLike | None = None, au_thresholds: PathLike | None = None,
                 skip_missing: bool = False, batch_size: int | None = None,
                 num_workers: int | None = None, tta: str | None = None,
                 note: Note = _silent) -> dict | None:
    """Official scores of a run on a labelled split, written with a report to ``out``
    (default ``RUN/eval-<split>``). ``au_thresholds="tune"`` also tunes them on this data;
    on the run's own validation split they are kept in the run folder for ``predict``.
    Returns ``{"scores", "paths", "out"}``."""
    info = dist.init_distributed()
    files = read_run(run_path)
    thresholds = au_thresholds_of(au_thresholds, files)
    table_data = open_table(files.cfg, data, layout=layout, split=split, images=images)
    if table_data.videos or not table_data.has_labels(files.multitask):
        raise RunError(f"{table_data.source} [{table_data.name}] has no labels for this model: "
                       "evaluate needs a labelled split (--split val); to write a "
                       "submission for a test list use 'affectkit predict'")
    run = load_run(files)
    skip = skip_missing or (data is None and run.cfg.data.missing == "skip")
    arrays, table = predict_table(run, table_data.table,
                                  **_loader_args(run, batch_size, num_workers, tta),
                                  missing="skip" if skip else "error", progress=True)
    tune = isinstance(thresholds, str)
    given = 0.5 if tune else thresholds
    scores = score_predictions(arrays, run.labels, given)
    tuned_thr = None
    if tune:
        tuned_thr = tune_au_thresholds(arrays["au_probs"], arrays["au_true"])
        scores["tuned"] = _tuned_scores(arrays, run.labels, tuned_thr)
    if not info.is_main:
        return None
    out = Path(out) if out else run.run_dir / f"eval-{table_data.name.split('/')[-1]}"
    meta = {"checkpoint": str(run.checkpoint), "epoch": run.epoch,
            "data": str(table_data.source), "split": table_data.name, "tta": tta,
            "au_thresholds": (None if not run.multitask else 0.5 if tune
                              or au_thresholds is None else au_thresholds)}
    if tune:
        meta["tuned_au_thresholds"] = f"{THRESHOLDS} (tuned on this data: see 'tuned')"
    scores = _ordered_scores(run.task, len(table), scores, meta)
    paths = _write_evaluation(out, arrays, table, run, scores, given, tuned_thr,
                              f"Evaluation of {run.checkpoint}", meta)
    if tune:
        info_kw = {"checkpoint": str(run.checkpoint), "checkpoint_file": run.checkpoint.name,
                   "data": str(table_data.source), "split": table_data.name,
                   "rows": len(table), "au_f1_at_0.5": scores["au_f1"],
                   "au_f1_tuned": scores["tuned"]["au_f1"]}
        paths[THRESHOLDS] = save_au_thresholds(out / THRESHOLDS, tuned_thr, ABAW_AU.classes,
                                               **info_kw)
        own_val = data is None and split in (None, run.cfg.data.val_split)
        if own_val and (run.run_dir / "config.yaml").is_file():
            kept = save_au_thresholds(run.run_dir / THRESHOLDS, tuned_thr, ABAW_AU.classes,
                                      **info_kw)
            note(f"tuned AU thresholds kept with the run: {kept} (predict uses them)")
        else:
            note(f"tuned AU thresholds: {paths[THRESHOLDS]} (pass --au-thresholds "
                 f"{paths[THRESHOLDS]} to predict)")
    return {"scores": scores, "paths": paths, "out": out}


def predict_run(run_path: PathLike, out: PathLike, data: PathLike | None = None, *,
                layout: str | None = None, split: str | None = None,
                images: PathLike | None = None, au_thresholds: PathLike | None = None,
                label_format: str = "name", batch_size: int | None = None,
                num_workers: int | None = None, tta: str | None = None, table: bool = False,
                note: Note = _silent) -> dict | None:
    """A challenge submission for a test list (default: the run's ``test`` split), in its
    order, at the given AU thresholds, else the run folder's tuned ones, else 0.5; with
    ``table``, the per-image table (``data.submission.prediction_table``) of any images.
    Returns ``{"out", "paths", "format", "rows", "source"}``."""
    info = dist.init_distributed()
    files = read_run(run_path)
    thresholds = au_thresholds_of(au_thresholds, files)
    if isinstance(thresholds, str):
        raise RunError("--au-thresholds tune needs labels: tune with 'affectkit evaluate "
                       "--au-thresholds tune' on validation, then pass its file")
    where = f"AU thresholds: from {au_thresholds}" if au_thresholds else None
    if where is None and files.multitask:
        found, where = run_thresholds(files)
        thresholds = found if found is not None else 0.5
    table_data = open_table(files.cfg, data, layout=layout, split=split, images=images,
                            default_split="test")
    check_images(table_data)
    run = load_run(files)
    arrays, rows = predict_table(run, table_data.table,
                                 **_loader_args(run, batch_size, num_workers, tta), progress=True)
    if not info.is_main:
        return None
    if where:
        note(where)
    if table:
        if Path(out).is_dir():
            raise RunError(f"{out} is a folder: --out names the table file (.csv, .parquet)")
        frame = prediction_table(rows.images, arrays, run.labels, thresholds)
        try:
            written = write_prediction_table(out, frame)
        except ValueError as e:
            raise RunError(f"prediction not written: {e}") from None
        return {"out": Path(out), "paths": [written],
                "format": "per-image table", "rows": len(rows), "source": table_data.source}
    return _submission(out, run, table_data, hard_predictions(arrays, thresholds),
                       label_format, len(rows))


def ensemble_runs(run_paths: Sequence[PathLike], out: PathLike, data: PathLike | None = None,
                  *, layout: str | None = None, split: str | None = None,
                  images: PathLike | None = None, au_thresholds: PathLike | None = None,
                  label_format: str = "name", batch_size: int | None = None,
                  num_workers: int | None = None, tta: str | None = None,
                  note: Note = _silent) -> dict | None:
    """Several runs' probabilities averaged. On labelled data: scores, a report in ``out``
    and AU thresholds re-tuned for the ensemble, returned as ``{"scores", "paths", "out"}``
    (``scores["member_scores"]`` holds each member's). On a test list: the submission
    ``predict_run`` would write, with ``"members"`` added."""
    info = dist.init_distributed()
    members, runs = [], []
    all_files = [read_run(path) for path in run_paths]
    check_same_kind(all_files, list(run_paths))
    first = all_files[0]
    thresholds = au_thresholds_of(au_thresholds, first)
    if isinstance(thresholds, str):
        raise RunError("ensemble re-tunes AU thresholds itself on labelled data; "
                       "--au-thresholds takes a file")
    table_data = open_table(first.cfg, data, layout=layout, split=split, images=images)
    labelled = not table_data.videos and table_data.has_labels(first.multitask)
    if not labelled:
        check_images(table_data)
    for files in all_files:
        run = load_run(files)  # frees the files' copy of the weights
        note(f"member {len(runs) + 1}/{len(run_paths)}: {run.checkpoint}")
        arrays, table = predict_table(run, table_data.table,
                                      **_loader_args(run, batch_size, num_workers, tta),
                                      progress=True)
        members.append(arrays)
        run.model = None  # free each member once its predictions are in
        runs.append(run)
    first = runs[0]
    arrays = ensemble_arrays(members)
    out = Path(out)
    if not labelled:
        if not info.is_main:
            return None
        if first.multitask:
            note(f"AU thresholds: from {au_thresholds}" if au_thresholds else
                 "AU thresholds: 0.5 (pass --au-thresholds with the au_thresholds.json of "
                 "this ensemble on validation)")
        written = _submission(out, first, table_data, hard_predictions(arrays, thresholds),
                              label_format, len(table))
        return {**written, "members": len(runs)}
    scores = score_predictions(arrays, first.labels, thresholds)
    tuned_thr = None
    if first.multitask:
        tuned_thr = retune_au_thresholds(arrays["au_probs"], arrays["au_true"])
        scores["tuned"] = _tuned_scores(arrays, first.labels, tuned_thr)
    if not info.is_main:
        return None
    meta = {"members": [str(r.checkpoint) for r in runs],
            "member_scores": [float(score_predictions(m, first.labels, thresholds)["score"])
                              for m in members],
            "data": str(table_data.source), "split": table_data.name, "tta": tta,
            "au_thresholds": (None if not first.multitask else 0.5 if au_thresholds is None
                              else au_thresholds)}
    scores = _ordered_scores(first.task, len(table), scores, meta)
    paths = _write_evaluation(out, arrays, table, first, scores, thresholds, tuned_thr,
                              f"Ensemble of {len(runs)} members", meta)
    if tuned_thr is not None:
        paths[THRESHOLDS] = save_au_thresholds(
            out / THRESHOLDS, tuned_thr, ABAW_AU.classes, members=meta["members"],
            data=str(table_data.source), split=table_data.name, rows=len(table),
            au_f1_tuned=scores["tuned"]["au_f1"])
        note(f"ensemble AU thresholds: {paths[THRESHOLDS]} (pass --au-thresholds "
             f"{paths[THRESHOLDS]} to the test-set ensemble)")
    return {"scores": scores, "paths": paths, "out": out}
