"""The ``affectkit`` command. The only module that parses arguments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__


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


def _cmd_train(args) -> int:
    import yaml

    from .config import ConfigError, check_paths, config_to_dict, git_sha, load_config

    overrides, dry_run, resume = [], args.dry_run, not args.no_resume
    for item in args.overrides:  # flags may also follow the overrides
        if item == "--dry-run":
            dry_run = True
        elif item == "--no-resume":
            resume = False
        elif item.startswith("-"):
            print(f"error: unknown option {item!r} (train takes --dry-run, --no-resume, "
                  "--run-dir DIR and key=value overrides)", file=sys.stderr)
            return 2
        else:
            overrides.append(item)
    try:
        cfg = load_config(args.recipe, overrides)
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
        print(f"# train: {len(train_table)} images, val: {len(val_table)} images "
              "(dry run: nothing trained)")
        return 0
    import logging

    from .engine.loop import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        run_dir = train(cfg, run_dir=args.run_dir, resume=resume,
                        tables=(train_table, val_table))
    except ConfigError as e:
        print("error: " + "\n  ".join(e.problems), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"run folder: {run_dir}")
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
                       choices=["auto", "mtl", "per-video", "lsd", "csv", "folders"])
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
