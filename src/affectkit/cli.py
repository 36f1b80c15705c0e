"""The ``affectkit`` command. The only module that parses arguments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__

# data.discover.LAYOUTS, spelled out so that --help needs no data imports
LAYOUT_CHOICES = ["auto", "mtl", "per-video", "lsd", "csv", "folders", "images"]


def _error(message) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _cmd_sample(args) -> int:
    from .data.sample import read_va_trace, write_sample, write_temporal_sample

    if args.temporal:
        try:
            trace = read_va_trace(args.va_trace) if args.va_trace else None
        except (OSError, ValueError) as e:
            return _error(e)
        paths = write_temporal_sample(args.dir, videos=args.videos, frames=args.frames or 300,
                                      seed=args.seed, va_trace=trace)
        print(f"wrote a SYNTHETIC temporal sample (per-video layout) to {args.dir}: "
              f"{args.videos} videos")
        return 0
    paths = write_sample(args.dir, frames_per_video=args.frames or 60, seed=args.seed)
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


def _cmd_models(args) -> int:
    from . import zoo

    try:
        if args.card:
            print(zoo.render_card(zoo.read_card(args.card)))
            return 0
        cards = [zoo.read_card(n) for n in zoo.model_names()]
    except zoo.UnknownModel as e:
        return _error(e)
    if args.json:
        print(json.dumps(cards, indent=2))
        return 0
    if not cards:
        print("no shipped models")
    for c in cards:
        tasks = ", ".join(t for t in ("expression", "AU", "VA")
                          if {"expression": True, "AU": bool(c.get("aus")),
                              "VA": c.get("va")}[t])
        print(f"{c['name']}{' (default)' if c['default'] else ''}: {tasks}")
        print(f"  {c.get('summary', '')}")
        for k, v in (c.get("scores") or {}).items():
            if isinstance(v, dict) and "value" in v:
                print(f"  {k}: {v['value']} ({v.get('what', '')})")
        print(f"  licence: {c.get('licence_short', c.get('licence', ''))}")
        print(f"  card: affectkit models --card {c['name']}")
    return 0


def _cmd_train(args, pretrain: bool = False) -> int:
    import yaml

    from .config import ConfigError
    from .engine.commands import WrongCommand, exported_encoder, prepare_training, resolved_config

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
                return _error("--run-dir needs a folder")
        elif item.startswith("-"):
            return _error(f"unknown option {item!r} ({command} takes --dry-run, --no-resume, "
                          "--run-dir DIR and key=value overrides)")
        else:
            overrides.append(item)
    try:
        cfg, train_table, val_table = prepare_training(args.recipe, overrides,
                                                       pretrain=pretrain)
    except WrongCommand as e:
        return _error(e)
    except ConfigError as e:
        print("error: invalid config:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    if dry_run:
        print(yaml.safe_dump(resolved_config(cfg), sort_keys=False), end="")
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
    encoder = exported_encoder(run_dir) if pretrain else None
    if encoder is not None:
        print(f"encoder: {encoder} (fine-tune from it: affectkit train RECIPE "
              f"model.pretrained={encoder})")
    return 0


def _cmd_pretrain(args) -> int:
    return _cmd_train(args, pretrain=True)


# ----------------------------------------------------------------------------- inference


def _note(message: str) -> None:
    from .engine import dist

    if dist.current().is_main:
        print(message, file=sys.stderr)


def _inference_kw(args) -> dict:
    """The options evaluate, predict and ensemble share, as plain keyword arguments."""
    return {"data": args.data, "layout": args.layout, "split": args.split,
            "images": args.images, "batch_size": args.batch_size,
            "num_workers": args.num_workers, "tta": args.tta, "note": _note}


def _submission_line(written: dict) -> str:
    return (f"wrote {written['format']} for {written['rows']} images of {written['source']} "
            f"to {written['out']}")


def _cmd_evaluate(args) -> int:
    from .engine.commands import evaluate_run
    from .engine.inference import RunError

    try:
        result = evaluate_run(args.run, out=args.out, au_thresholds=args.au_thresholds,
                              skip_missing=args.skip_missing, **_inference_kw(args))
    except RunError as e:
        return _error(e)
    if result is None:  # not rank 0
        return 0
    paths = result["paths"]
    _note(f"report: {paths['report.md']} ({len(paths)} files in {result['out']})")
    print(json.dumps(result["scores"], indent=2))
    return 0


def _cmd_predict(args) -> int:
    from .engine.commands import predict_run
    from .engine.inference import RunError
    from .zoo import UnknownModel, weights

    if (args.run is None) == (args.model is None):
        return _error("predict needs a run folder or --model NAME (one of them)")
    try:
        source = weights(args.model) if args.model else args.run
        fmt = args.format or ("table" if args.model else "submission")
        written = predict_run(source, args.out, au_thresholds=args.au_thresholds,
                              label_format=args.label_format, table=fmt == "table",
                              **_inference_kw(args))
    except (RunError, UnknownModel) as e:
        return _error(e)
    if written is not None:
        print(_submission_line(written))
    return 0


def _cmd_ensemble(args) -> int:
    import numpy as np

    from .engine.commands import ensemble_runs
    from .engine.inference import RunError

    try:
        result = ensemble_runs(args.runs, args.out, au_thresholds=args.au_thresholds,
                               label_format=args.label_format, **_inference_kw(args))
    except RunError as e:
        return _error(e)
    if result is None:  # not rank 0
        return 0
    if "scores" not in result:
        print(_submission_line(result) + f" ({result['members']} members)")
        return 0
    scores = result["scores"]
    _note(f"report: {result['paths']['report.md']}; members' scores "
          f"{[round(s, 4) for s in scores['member_scores']]}, ensemble "
          f"{float(np.round(scores['score'], 4))}")
    print(json.dumps(scores, indent=2))
    return 0


def _cmd_features(args) -> int:
    import time

    from .engine.features import ensure_features, extract_features
    from .engine.inference import RunError, load_run, open_table, read_run

    try:
        files = read_run(args.run)
        data = open_table(files.cfg, args.data, layout=args.layout, split=args.split,
                          images=args.images, default_split="train")
        run = load_run(files)
    except RunError as e:
        return _error(e)
    from tqdm import tqdm

    t0 = time.perf_counter()
    with tqdm(total=len(data.table), unit="frame", desc="features", disable=None) as bar:
        kw = {"batch_size": args.batch_size, "num_workers": args.num_workers or 0,
              "progress": bar.update}
        if args.rebuild:
            store, rebuilt = extract_features(run, data.table, args.out, **kw), True
        else:
            store, rebuilt = ensure_features(run, data.table, args.out, **kw)
    took = time.perf_counter() - t0
    what = "extracted" if rebuilt else "up to date (same model and frames): reused"
    print(f"{args.out}: {len(store.features)} frames x {store.dim} features of "
          f"{run.checkpoint} for {data.source} [{data.name}], {what} in {took:.1f} s")
    return 0


def _cmd_analyze(args) -> int:
    import logging
    import time

    from .engine.analyze import analyze
    from .engine.inference import RunError
    from .zoo import UnknownModel

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    src = Path(args.path)
    out = Path(args.out) if args.out else Path(f"{src.stem or 'analysis'}-analysis.csv")
    t0 = time.perf_counter()
    try:
        mode, _, width = (args.smooth or "none").partition(":")
        table = analyze(src, args.model, every=args.every, out=out, plots=args.plots,
                        smoothing=mode, width=int(width or 1), annotated=args.annotate,
                        min_face=args.min_face, detect_every=args.detect_every,
                        engine=args.engine, progress=True)
    except (RunError, UnknownModel, FileNotFoundError, ValueError) as e:
        return _error(e)
    took = time.perf_counter() - t0
    frames = table[["file", "frame"]].drop_duplicates().shape[0] if len(table) else 0
    faces = int(table["face_detected"].sum()) if len(table) else 0
    print(f"{out}: {len(table)} rows, {faces} faces in {frames} frames "
          f"({frames / took:.1f} frames/s)" + (f"; plots in {args.plots}" if args.plots
                                               else ""))
    for name, why in table.attrs.get("failed", []):
        print(f"  unreadable, skipped: {name} ({why})", file=sys.stderr)
    if table.attrs.get("skipped"):
        print(f"  {table.attrs['skipped']} file(s) neither image nor video: skipped",
              file=sys.stderr)
    return 0 if len(table) else 1  # nothing readable at all


def _cmd_export(args) -> int:
    from .engine.export import export_onnx
    from .engine.inference import RunError
    from .zoo import UnknownModel

    out = Path(args.out) if args.out else Path(f"{Path(args.source).name}.onnx")
    try:
        path = export_onnx(args.source, out)
    except (RunError, UnknownModel) as e:
        return _error(e)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): input 'image' (N, 3, S, S) "
          "normalised as the run evaluates; affectkit metadata inside")
    return 0


def _cmd_search(args) -> int:
    import logging

    from .config import ConfigError
    from .engine.search import run_search

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        result = run_search(args.spec, dry_run=args.dry_run)
    except ConfigError as e:
        print("error: invalid search:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue the search",
              file=sys.stderr)
        return 130
    if result["results"] is not None:
        print(result["paths"]["md"].read_text(encoding="utf-8"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="affectkit", description=__doc__)
    p.add_argument("--version", action="version", version=f"affectkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect, check and prepare datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("sample", help="write a small SYNTHETIC dataset in the ABAW layouts")
    s.add_argument("dir")
    s.add_argument("--frames", type=int, help="frames per video (default 60; --temporal 300)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--temporal", action="store_true",
                   help="per-video faces drawn from noisy labels around smooth true labels "
                        "(expressions in 2-6 s segments, gaps in the frames): a temporal "
                        "model can and must beat a per-frame one")
    s.add_argument("--videos", type=int, default=6, help="--temporal: videos (default 6)")
    s.add_argument("--va-trace", metavar="CSV",
                   help="--temporal: drive valence/arousal with this per-frame VA file, e.g. "
                        "shared/data/affwild2_va_sample/sample_labelfile_132-30-426x240.csv")
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

    mo = sub.add_parser("models", help="list the shipped models (trained here, inside the "
                                       "package): data, scores, licence notes")
    mo.add_argument("--card", metavar="NAME", help="print the model card of NAME ('default')")
    mo.add_argument("--json", action="store_true", help="the cards as JSON")
    mo.set_defaults(fn=_cmd_models)

    def train_args(q, recipe_help: str, example: str):
        q.add_argument("recipe", help=recipe_help)
        q.add_argument("overrides", nargs=argparse.REMAINDER,
                       help=f"key=value overrides, e.g. {example} optim.epochs=5")
        q.add_argument("--dry-run", action="store_true",
                       help="check the config and data, print the resolved config, train nothing")
        q.add_argument("--no-resume", action="store_true",
                       help="start fresh even if the run folder has a last.pt")
        q.add_argument("--run-dir", help="run folder (default: run.out_dir)")

    tr = sub.add_parser("train", help="train a recipe or config file (resumes its run folder)")
    train_args(tr, "built-in recipe name (see 'affectkit recipes') or YAML file",
               "data.root=/data")
    tr.set_defaults(fn=_cmd_train)

    pt = sub.add_parser("pretrain", help="MAE pretraining of a recipe (model.kind: mae); "
                                         "resumes its run folder, exports encoder.pth")
    train_args(pt, "MAE recipe name (e.g. mae-face, mae-face-tiny) or YAML file",
               "data.root=/data/celeba")
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
        q.add_argument("--tta", choices=["flip", "ten-crop"],
                       help="test-time augmentation: average over the mirror image, or over "
                            "ten crops (corners + centre, mirrored) of the training crop size")

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

    pr = sub.add_parser("predict", help="predict with a run or a shipped model: a challenge "
                                        "submission for a test list, or a per-image table")
    pr.add_argument("run", nargs="?",
                    help="run folder (best.pt, else last.pt) or checkpoint file")
    pr.add_argument("--model", help="a shipped model instead of a run ('affectkit models'; "
                                    "'default': the default one); writes the per-image table")
    pr.add_argument("--format", choices=["submission", "table"],
                    help="submission: the challenge's format (default for a run); table: one "
                         "row per image with named probability columns, the expression, AU "
                         "probabilities and 0/1 decisions (default for --model; .parquet "
                         "or .csv)")
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

    fe = sub.add_parser("features", help="progressive learning: a stage-1 run's per-frame "
                                         "features into a memory-mapped store (reused while "
                                         "the model and frames are the same)")
    fe.add_argument("run", help="stage-1 run folder or checkpoint file")
    fe.add_argument("--data", help="dataset folder, annotation file or list (default: the "
                                   "run's data.root)")
    fe.add_argument("--split", help="split of a dataset folder (default: train)")
    fe.add_argument("--layout", choices=LAYOUT_CHOICES)
    fe.add_argument("--images", help="face-crop root")
    fe.add_argument("--out", required=True, help="the store's folder")
    fe.add_argument("--batch-size", type=int, default=128)
    fe.add_argument("--num-workers", type=int, default=0)
    fe.add_argument("--rebuild", action="store_true",
                    help="extract again even when the store is up to date")
    fe.set_defaults(fn=_cmd_features)

    an = sub.add_parser("analyze", help="every face in a photo, a video or a folder of them: "
                                        "expression, AUs (and VA) per frame and face, as a "
                                        "table and plots")
    an.add_argument("path", help="image, video, or a folder of them (recursive)")
    an.add_argument("--model", default="default",
                    help="a shipped model ('affectkit models') or a run folder (default: "
                         "the default model)")
    an.add_argument("--out", help="table, .csv or .parquet (default: <name>-analysis.csv)")
    an.add_argument("--plots", help="folder for the plots (expression, VA, AU heat map over "
                                    "time, one per file and face)")
    an.add_argument("--every", type=int, default=1, help="analyse every N-th video frame")
    an.add_argument("--min-face", type=int, default=20,
                    help="smallest face to find, in pixels (default 20)")
    an.add_argument("--detect-every", type=int, default=1, metavar="N",
                    help="videos: full face detection on every N-th analysed frame, the "
                         "previous faces refined in between (much faster; a new face is "
                         "found at the next full detection)")
    an.add_argument("--annotate", metavar="DIR",
                    help="write each photo / video again with boxes, face ids and labels")
    an.add_argument("--smooth", metavar="MODE:WIDTH",
                    help="smooth each face track over time: box, gaussian or median over "
                         "WIDTH analysed frames (odd), e.g. gaussian:9")
    an.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                    help="run the model in PyTorch, or exported under onnxruntime (a "
                         "--model ending in .onnx always runs under onnxruntime)")
    an.set_defaults(fn=_cmd_analyze)

    ex = sub.add_parser("export", help="a run or shipped model as one ONNX file (dynamic "
                                       "batch; config, outputs and thresholds inside)")
    ex.add_argument("source", help="a shipped model name or a run folder / checkpoint")
    ex.add_argument("--format", choices=["onnx"], default="onnx")
    ex.add_argument("--out", help="the .onnx file (default: <name>.onnx)")
    ex.set_defaults(fn=_cmd_export)

    se = sub.add_parser("search", help="progressive learning's strategy search: a grid of "
                                       "runs (resumable), ranked by P and by each task, the "
                                       "best recipe per target task")
    se.add_argument("spec", help="search spec YAML (recipe, overrides, out, grid, points)")
    se.add_argument("--dry-run", action="store_true",
                    help="list the points and their overrides, train nothing")
    se.set_defaults(fn=_cmd_search)

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
