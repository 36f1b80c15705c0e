"""The ``affectkit`` command. The only module that parses arguments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__

# data.discover.LAYOUTS, spelled out so that --help needs no data imports
LAYOUT_CHOICES = ["auto", "mtl", "per-video", "lsd", "csv", "folders", "images"]


def _cmd_sample(args) -> int:
    from .data.sample import write_sample

    paths = write_sample(args.dir, frames_per_video=args.frames, seed=args.seed)
    print(f"wrote a SYNTHETIC sample in the ABAW layouts to {args.dir}:")
    for name, path in paths.items():
        print(f"  {name:6s} {path}")
    return 0


def _cmd_check(args) -> int:
    from .data.check import check, format_report
    from .data.discover import open_dataset
    from .labels import get_label_set

    labels = get_label_set(args.expr_labels) if args.expr_labels else None
    tables = open_dataset(args.root, args.layout, args.images, labels)
    report, errors = check(tables, allow_missing=args.allow_missing,
                           check_images=not args.no_images)
    if args.json:
        print(json.dumps({"splits": report, "errors": errors}, indent=2))
    else:
        print(format_report(report))
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        print(f"{len(report)} split(s) checked, {len(errors)} error(s)")
    return 1 if errors else 0


def _cmd_pack(args) -> int:
    from tqdm import tqdm

    from .data.dataset import pack_images
    from .data.discover import open_dataset
    from .data.errors import DataError

    tables = open_dataset(args.root, args.layout, args.images)
    names = [n for n in tables if args.split in (None, n, n.split("/")[-1])]
    if not names:
        raise DataError(args.root, None, f"no split {args.split!r}; found {sorted(tables)}")
    out = Path(args.out)
    for name in names:
        table = tables[name]
        if isinstance(table, DataError):
            raise table
        target = out / (name.replace("/", "_") + ".npy")
        with tqdm(total=len(table), desc=f"pack {name}", unit="img") as bar:
            pack_images(table, target, size=args.size, progress=lambda i: bar.update(1))
        print(f"{name}: {len(table)} images -> {target}")
    return 0


def _cmd_score(args) -> int:
    from .io import atomic_write_json
    from .scoring import score_files

    scores = score_files(args.task, args.truth, args.pred)
    text = json.dumps(scores, indent=2)
    if args.out:
        atomic_write_json(args.out, scores)
    print(text)
    return 0


def _cmd_recipes(args) -> int:
    from .config import list_recipes

    recipes = list_recipes()
    width = max((len(n) for n in recipes), default=0)
    for name, desc in recipes.items():
        print(f"{name:{width}s}  {desc}".rstrip())
    return 0


def _recipes_of_kind(mae: bool) -> list[str]:
    """Built-in recipes that are (or are not) MAE pretraining, for hints."""
    from .config import ConfigError, list_recipes, load_config
    from .kinds import get_kind

    names = []
    for name in list_recipes():
        try:
            if get_kind(load_config(name).model.kind).pretraining == mae:
                names.append(name)
        except ConfigError:
            continue
    return names


def _wrong_command(cfg, pretrain: bool) -> str | None:
    """The hint when a recipe is given to the other command (train <-> pretrain)."""
    from .kinds import get_kind

    is_mae = get_kind(cfg.model.kind).pretraining
    if is_mae == pretrain:
        return None
    if is_mae:
        return (f"recipe {cfg.recipe!r} is pretraining (model.kind: {cfg.model.kind}); run it with "
                f"'affectkit pretrain {cfg.recipe} ...'")
    return (f"recipe {cfg.recipe!r} is not pretraining (model.kind: {cfg.model.kind}); "
            f"fine-tune it with 'affectkit train {cfg.recipe} ...', or pretrain an MAE recipe "
            f"({', '.join(_recipes_of_kind(mae=True)) or 'model.kind: mae'})")


def _cmd_train(args, pretrain: bool = False) -> int:
    import yaml

    from .config import ConfigError, check_paths, config_to_dict, git_sha, load_config

    command = "pretrain" if pretrain else "train"
    overrides, dry_run, resume = [], args.dry_run, not args.no_resume
    run_dir = args.run_dir
    items = iter(args.overrides)
    for item in items:  # flags may also follow the overrides
        if item == "--dry-run":
            dry_run = True
        elif item == "--no-resume":
            resume = False
        elif item == "--run-dir" or item.startswith("--run-dir="):
            run_dir = item.split("=", 1)[1] if "=" in item else next(items, None)
            if not run_dir:
                print("error: --run-dir needs a folder", file=sys.stderr)
                return 2
        elif item.startswith("-"):
            print(f"error: unknown option {item!r} ({command} takes --dry-run, --no-resume, "
                  "--run-dir DIR and key=value overrides)", file=sys.stderr)
            return 2
        else:
            overrides.append(item)
    try:
        cfg = load_config(args.recipe, overrides)
        hint = _wrong_command(cfg, pretrain)
        if hint is not None:
            print(f"error: {hint}", file=sys.stderr)
            return 2
        check_paths(cfg)
        from .engine.build import open_splits

        train_table, val_table = open_splits(cfg)
    except ConfigError as e:
        print("error: invalid config:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    if dry_run:
        d = config_to_dict(cfg)
        d = {"recipe": d.pop("recipe"), "git_sha": git_sha(), **d}
        print(yaml.safe_dump(d, sort_keys=False), end="")
        print(f"# {command}: {len(train_table)} images, val: {len(val_table)} images "
              "(dry run: nothing trained)")
        return 0
    import logging

    from .engine.loop import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        run_dir = train(cfg, run_dir=run_dir, resume=resume,
                        tables=(train_table, val_table))
    except ConfigError as e:
        print("error: " + "\n  ".join(e.problems), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"run folder: {run_dir}")
    if pretrain:
        from .engine.pretrain import ENCODER

        encoder = Path(run_dir) / ENCODER
        if encoder.is_file():
            print(f"encoder: {encoder} (fine-tune from it: affectkit train RECIPE "
                  f"model.pretrained={encoder})")
    return 0


def _cmd_pretrain(args) -> int:
    return _cmd_train(args, pretrain=True)


# ----------------------------------------------------------------------------- inference


def _error(message) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _note(message: str) -> None:
    from .engine import dist

    if dist.current().is_main:
        print(message, file=sys.stderr)


def _batch_size(args, run) -> int:
    return args.batch_size or min(run.cfg.optim.batch_size, 256)


def _workers(args, run) -> int:
    return run.cfg.data.num_workers if args.num_workers is None else args.num_workers


def _tuned_scores(arrays, labels, thresholds, same_data: bool = True) -> dict:
    from .engine.evaluation import score_predictions

    tuned = score_predictions(arrays, labels, thresholds)
    out = {"au_thresholds": [float(t) for t in thresholds], "au_f1": tuned["au_f1"],
           "au_f1_per_au": tuned["au_f1_per_au"], "p_mtl": tuned["p_mtl"]}
    if same_data:
        out["optimistic"] = True
        out["note"] = ("AU thresholds tuned and scored on the same data: an optimistic "
                       "estimate; the scores above (at the thresholds given) are the honest ones")
    return out


def _ordered_scores(task: str, rows: int, scores: dict, meta: dict) -> dict:
    """``affectkit score``'s layout (task, rows, metrics), then where they come from."""
    return {"task": task, "rows": rows, **scores, **meta}


def _write_evaluation(out, arrays, table, run, scores, thresholds, tuned_thr, title,
                      meta) -> dict:
    from .engine.inference import hard_predictions
    from .io import atomic_write_json
    from .report import write_report

    hard = hard_predictions(arrays, thresholds)
    paths = {"scores.json": atomic_write_json(out / "scores.json", scores)}
    paths.update(write_report(out, arrays, table.images, run.labels, scores, hard,
                              au_thresholds=thresholds, tuned_thresholds=tuned_thr,
                              title=title, meta=meta))
    return paths


def _au_thresholds_arg(value, run):
    """0.5, the thresholds of a file, or "tune" (multi-task models only)."""
    from .engine.inference import RunError, read_thresholds

    if not value:
        return 0.5
    if not run.multitask:
        raise RunError(f"{run.checkpoint} predicts expressions only: it has no AU "
                       "thresholds (drop --au-thresholds)")
    return "tune" if value == "tune" else read_thresholds(value)


def _cmd_evaluate(args) -> int:
    from .engine import dist
    from .engine.evaluation import score_predictions
    from .engine.inference import (
        THRESHOLDS,
        RunError,
        load_run,
        open_table,
        predict_table,
        read_run,
    )
    from .labels import ABAW_AU
    from .metrics import save_au_thresholds, tune_au_thresholds

    info = dist.init_distributed()
    try:
        files = read_run(args.run)
        thresholds = _au_thresholds_arg(args.au_thresholds, files)
        data = open_table(files.cfg, args.data, layout=args.layout, split=args.split,
                          images=args.images)
        if data.videos or not data.has_labels(files.multitask):
            return _error(f"{data.source} [{data.name}] has no labels for this model: "
                          "evaluate needs a labelled split (--split val); to write a "
                          "submission for a test list use 'affectkit predict'")
        run = load_run(files)
    except RunError as e:
        return _error(e)
    arrays, table = predict_table(run, data.table, batch_size=_batch_size(args, run),
                                  num_workers=_workers(args, run),
                                  missing="skip" if args.skip_missing or (
                                      args.data is None and run.cfg.data.missing == "skip")
                                  else "error",
                                  progress=True)
    tune = isinstance(thresholds, str)
    given = 0.5 if tune else thresholds
    scores = score_predictions(arrays, run.labels, given)
    tuned_thr = None
    if tune:
        tuned_thr = tune_au_thresholds(arrays["au_probs"], arrays["au_true"])
        scores["tuned"] = _tuned_scores(arrays, run.labels, tuned_thr)
    if not info.is_main:
        return 0
    out = Path(args.out) if args.out else run.run_dir / f"eval-{data.name.split('/')[-1]}"
    meta = {"checkpoint": str(run.checkpoint), "epoch": run.epoch, "data": str(data.source),
            "split": data.name,
            "au_thresholds": (None if not run.multitask else 0.5 if tune
                              or args.au_thresholds is None else args.au_thresholds)}
    if tune:
        meta["tuned_au_thresholds"] = f"{THRESHOLDS} (tuned on this data: see 'tuned')"
    scores = _ordered_scores(run.task, len(table), scores, meta)
    paths = _write_evaluation(out, arrays, table, run, scores, given, tuned_thr,
                              f"Evaluation of {run.checkpoint}", meta)
    if tune:
        info_kw = {"checkpoint": str(run.checkpoint), "checkpoint_file": run.checkpoint.name,
                   "data": str(data.source), "split": data.name, "rows": len(table),
                   "au_f1_at_0.5": scores["au_f1"], "au_f1_tuned": scores["tuned"]["au_f1"]}
        paths[THRESHOLDS] = save_au_thresholds(out / THRESHOLDS, tuned_thr, ABAW_AU.classes,
                                               **info_kw)
        own_val = args.data is None and args.split in (None, run.cfg.data.val_split)
        if own_val and (run.run_dir / "config.yaml").is_file():
            kept = save_au_thresholds(run.run_dir / THRESHOLDS, tuned_thr, ABAW_AU.classes,
                                      **info_kw)
            _note(f"tuned AU thresholds kept with the run: {kept} (predict uses them)")
        else:
            _note(f"tuned AU thresholds: {paths[THRESHOLDS]} (pass --au-thresholds "
                  f"{paths[THRESHOLDS]} to predict)")
    _note(f"report: {paths['report.md']} ({len(paths)} files in {out})")
    print(json.dumps(scores, indent=2))
    return 0


def _submission_note(out, data, run_like, n: int) -> str:
    if data.videos:
        kind = "per-video " + ("VA/EXPR/AU folders" if run_like.multitask else "EXPR files")
    else:
        kind = "MTL submission" if run_like.multitask else "image,label CSV"
    return f"wrote {kind} for {n} images of {data.source} to {out}"


def _write_submission_or_fail(out, run_like, data, hard, label_format) -> int | None:
    from .engine.inference import write_submission

    if not data.videos and Path(out).is_dir():
        return _error(f"{out} is a folder: --out names the submission file")
    try:
        write_submission(out, run_like, data, hard, label_format)
    except ValueError as e:
        return _error(f"{out}: prediction not written: {e}")
    return None


def _cmd_predict(args) -> int:
    from .engine import dist
    from .engine.inference import (
        RunError,
        check_images,
        hard_predictions,
        load_run,
        open_table,
        predict_table,
        read_run,
        run_thresholds,
    )

    info = dist.init_distributed()
    try:
        files = read_run(args.run)
        thresholds = _au_thresholds_arg(args.au_thresholds, files)
        if isinstance(thresholds, str):
            return _error("--au-thresholds tune needs labels: tune with 'affectkit evaluate "
                          "--au-thresholds tune' on validation, then pass its file")
        note = f"AU thresholds: from {args.au_thresholds}" if args.au_thresholds else None
        if note is None and files.multitask:
            found, note = run_thresholds(files)
            thresholds = found if found is not None else 0.5
        data = open_table(files.cfg, args.data, layout=args.layout, split=args.split,
                          images=args.images, default_split="test")
        check_images(data)
        run = load_run(files)
    except RunError as e:
        return _error(e)
    arrays, table = predict_table(run, data.table, batch_size=_batch_size(args, run),
                                  num_workers=_workers(args, run), progress=True)
    if not info.is_main:
        return 0
    if note:
        _note(note)
    hard = hard_predictions(arrays, thresholds)
    failed = _write_submission_or_fail(args.out, run, data, hard, args.label_format)
    if failed is not None:
        return failed
    print(_submission_note(args.out, data, run, len(table)))
    return 0


def _cmd_ensemble(args) -> int:
    import numpy as np

    from .engine import dist
    from .engine.evaluation import score_predictions
    from .engine.inference import (
        THRESHOLDS,
        RunError,
        check_images,
        check_same_kind,
        ensemble_arrays,
        hard_predictions,
        load_run,
        open_table,
        predict_table,
        read_run,
    )
    from .labels import ABAW_AU
    from .metrics import save_au_thresholds
    from .models.ensemble import retune_au_thresholds

    info = dist.init_distributed()
    members, runs = [], []
    try:
        all_files = [read_run(path) for path in args.runs]
        check_same_kind(all_files, args.runs)
        first = all_files[0]
        thresholds = _au_thresholds_arg(args.au_thresholds, first)
        if isinstance(thresholds, str):
            return _error("ensemble re-tunes AU thresholds itself on labelled data; "
                          "--au-thresholds takes a file")
        data = open_table(first.cfg, args.data, layout=args.layout, split=args.split,
                          images=args.images)
        labelled = not data.videos and data.has_labels(first.multitask)
        if not labelled:
            check_images(data)
        for files in all_files:
            run = load_run(files)  # frees the files' copy of the weights
            _note(f"member {len(runs) + 1}/{len(args.runs)}: {run.checkpoint}")
            arrays, table = predict_table(run, data.table, batch_size=_batch_size(args, run),
                                          num_workers=_workers(args, run), progress=True)
            members.append(arrays)
            run.model = None  # free each member once its predictions are in
            runs.append(run)
    except RunError as e:
        return _error(e)
    first = runs[0]
    arrays = ensemble_arrays(members)
    out = Path(args.out)
    if not labelled:
        if not info.is_main:
            return 0
        if first.multitask:
            _note(f"AU thresholds: from {args.au_thresholds}" if args.au_thresholds else
                  "AU thresholds: 0.5 (pass --au-thresholds with the au_thresholds.json of "
                  "this ensemble on validation)")
        hard = hard_predictions(arrays, thresholds)
        failed = _write_submission_or_fail(out, first, data, hard, args.label_format)
        if failed is not None:
            return failed
        print(_submission_note(out, data, first, len(table)) + f" ({len(runs)} members)")
        return 0
    scores = score_predictions(arrays, first.labels, thresholds)
    tuned_thr = None
    if first.multitask:
        tuned_thr = retune_au_thresholds(arrays["au_probs"], arrays["au_true"])
        scores["tuned"] = _tuned_scores(arrays, first.labels, tuned_thr)
    if not info.is_main:
        return 0
    meta = {"members": [str(r.checkpoint) for r in runs],
            "member_scores": [float(score_predictions(m, first.labels, thresholds)["score"])
                              for m in members],
            "data": str(data.source), "split": data.name,
            "au_thresholds": (None if not first.multitask else 0.5 if args.au_thresholds is None
                              else args.au_thresholds)}
    scores = _ordered_scores(first.task, len(table), scores, meta)
    paths = _write_evaluation(out, arrays, table, first, scores, thresholds, tuned_thr,
                              f"Ensemble of {len(runs)} members", meta)
    if tuned_thr is not None:
        paths[THRESHOLDS] = save_au_thresholds(
            out / THRESHOLDS, tuned_thr, ABAW_AU.classes, members=meta["members"],
            data=str(data.source), split=data.name, rows=len(table),
            au_f1_tuned=scores["tuned"]["au_f1"])
        _note(f"ensemble AU thresholds: {paths[THRESHOLDS]} (pass --au-thresholds "
              f"{paths[THRESHOLDS]} to the test-set ensemble)")
    _note(f"report: {paths['report.md']}; members' scores "
          f"{[round(s, 4) for s in meta['member_scores']]}, ensemble "
          f"{float(np.round(scores['score'], 4))}")
    print(json.dumps(scores, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="affectkit", description=__doc__)
    p.add_argument("--version", action="version", version=f"affectkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect, check and prepare datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("sample", help="write a small SYNTHETIC dataset in the ABAW layouts")
    s.add_argument("dir")
    s.add_argument("--frames", type=int, default=60, help="frames per video (default 60)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_cmd_sample)

    def dataset_args(q):
        q.add_argument("root", help="dataset folder or annotation file")
        q.add_argument("--layout", default="auto",
                       choices=LAYOUT_CHOICES)
        q.add_argument("--images", help="image root (default: cropped_aligned/ or beside the "
                                        "annotations)")

    c = dsub.add_parser("check", help="per-split, per-task summary; non-zero exit on errors")
    dataset_args(c)
    c.add_argument("--expr-labels", help="label set of integer expression columns "
                                         "(abaw_expr, fer2013, affectnet8, lsd, ckplus)")
    c.add_argument("--allow-missing", action="store_true",
                   help="report missing images without failing")
    c.add_argument("--no-images", action="store_true", help="do not look for the image files")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(fn=_cmd_check)

    k = dsub.add_parser("pack", help="decode a split once into a memory-mapped uint8 array")
    dataset_args(k)
    k.add_argument("--split", help="split name, e.g. train or mtl/train (default: all)")
    k.add_argument("--out", required=True, help="output folder")
    k.add_argument("--size", type=int, default=112, help="square side in pixels (default 112)")
    k.set_defaults(fn=_cmd_pack)

    sc = sub.add_parser("score", help="score a prediction file as the challenge does")
    sc.add_argument("--task", required=True, choices=["mtl", "va", "expr", "au", "lsd"])
    sc.add_argument("--truth", required=True, help="ground truth file or folder")
    sc.add_argument("--pred", required=True, help="prediction file or folder")
    sc.add_argument("--out", help="also write the JSON here")
    sc.set_defaults(fn=_cmd_score)

    rc = sub.add_parser("recipes", help="list the built-in training recipes")
    rc.set_defaults(fn=_cmd_recipes)

    tr = sub.add_parser("train", help="train a recipe or config file (resumes its run folder)")
    tr.add_argument("recipe", help="built-in recipe name (see 'affectkit recipes') or YAML file")
    tr.add_argument("overrides", nargs=argparse.REMAINDER,
                    help="key=value overrides, e.g. data.root=/data optim.epochs=5")
    tr.add_argument("--dry-run", action="store_true",
                    help="check the config and data, print the resolved config, train nothing")
    tr.add_argument("--no-resume", action="store_true",
                    help="start fresh even if the run folder has a last.pt")
    tr.add_argument("--run-dir", help="run folder (default: run.out_dir)")
    tr.set_defaults(fn=_cmd_train)

    pt = sub.add_parser("pretrain", help="MAE pretraining of a recipe (model.kind: mae); "
                                         "resumes its run folder, exports encoder.pth")
    pt.add_argument("recipe", help="MAE recipe name (e.g. mae-face, mae-face-tiny) or YAML file")
    pt.add_argument("overrides", nargs=argparse.REMAINDER,
                    help="key=value overrides, e.g. data.root=/data/celeba optim.epochs=5")
    pt.add_argument("--dry-run", action="store_true",
                    help="check the config and data, print the resolved config, train nothing")
    pt.add_argument("--no-resume", action="store_true",
                    help="start fresh even if the run folder has a last.pt")
    pt.add_argument("--run-dir", help="run folder (default: run.out_dir)")
    pt.set_defaults(fn=_cmd_pretrain)

    def inference_args(q, data_help: str, split_help: str):
        q.add_argument("--data", help=data_help)
        q.add_argument("--layout", choices=LAYOUT_CHOICES,
                       help="layout of --data (default: auto; without --data the run's)")
        q.add_argument("--split", help=split_help)
        q.add_argument("--images", help="image root (default: cropped_aligned/ or beside the "
                                        "annotations; without --data the run's data.images)")
        q.add_argument("--batch-size", type=int,
                       help="images per forward pass (default: the run's optim.batch_size, "
                            "at most 256)")
        q.add_argument("--num-workers", type=int,
                       help="data loading processes (default: the run's data.num_workers)")

    ev = sub.add_parser("evaluate", help="official scores of a run on a labelled split, with "
                                         "a report (tables, confusion matrix, AU F1, VA plots)")
    ev.add_argument("run", help="run folder (best.pt, else last.pt) or checkpoint file "
                                "(.pt/.pth/.safetensors holding its config)")
    inference_args(ev, "dataset folder or annotation file (default: the run's data.root)",
                   "split to score, e.g. val or mtl/val (default: the run's data.val_split)")
    ev.add_argument("--out", help="report folder (default: RUN/eval-<split>)")
    ev.add_argument("--au-thresholds", metavar="FILE|tune",
                    help="per-AU thresholds file, or 'tune': tune them on this data (saved as "
                         "au_thresholds.json in --out, and in the run folder when this is the "
                         "run's own validation split) and score at 0.5 and tuned "
                         "(default: 0.5)")
    ev.add_argument("--skip-missing", action="store_true",
                    help="score without images missing on disk (default: an error, unless "
                         "the run's own data with data.missing: skip)")
    ev.set_defaults(fn=_cmd_evaluate)

    pr = sub.add_parser("predict", help="write a challenge submission for a test list, in its "
                                        "order")
    pr.add_argument("run", help="run folder (best.pt, else last.pt) or checkpoint file")
    inference_args(pr, "test list (MTL image list, or video names for the per-video format), "
                       "annotation file, CSV with a path column, image folder or dataset "
                       "folder (default: the run's data.root)",
                   "split of a dataset folder (default: test)")
    pr.add_argument("--out", required=True,
                    help="submission file (a folder for per-video lists)")
    pr.add_argument("--au-thresholds", metavar="FILE",
                    help="per-AU thresholds (default: the run folder's au_thresholds.json "
                         "from 'evaluate --au-thresholds tune' if present, else 0.5)")
    pr.add_argument("--label-format", choices=["name", "index"], default="name",
                    help="expression-only models: write class names (default) or indices")
    pr.set_defaults(fn=_cmd_predict)

    en = sub.add_parser("ensemble", help="average several runs' probabilities: scores and "
                                         "re-tuned AU thresholds on labelled data, a "
                                         "submission on a test list")
    en.add_argument("runs", nargs="+", help="run folders or checkpoint files")
    inference_args(en, "labelled split or test list (default: the first run's data.root)",
                   "split of a dataset folder (default: the first run's data.val_split)")
    en.add_argument("--out", required=True,
                    help="report folder for labelled data, submission file for a test list")
    en.add_argument("--au-thresholds", metavar="FILE",
                    help="per-AU thresholds, e.g. the au_thresholds.json of this ensemble on "
                         "validation (default: 0.5)")
    en.add_argument("--label-format", choices=["name", "index"], default="name",
                    help="expression-only models: write class names (default) or indices")
    en.set_defaults(fn=_cmd_ensemble)
    return p


def main(argv: list[str] | None = None) -> int:
    from .data.errors import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:  # unknown label-set names and the like
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
