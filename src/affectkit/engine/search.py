"""Strategy search (progressive learning's third step): a grid of normal training runs over
target task, task combination, loss weights, fusion / temporal variants and window
lengths, ranked by P = AU F1 + EXPR F1 + mean CCC and by each task.

A spec is a small YAML file::

    recipe: progressive-demo            # the recipe (or config file) every point starts from
    overrides: [data.root=affectkit-temporal]   # applied to every point
    out: runs/progressive-demo/search   # points in <out>/points/<name>/, tables in <out>/
    grid:                               # every combination of these values ...
      progressive.temporal: [none, transformer]
      progressive.window: [1, 16]
    points:                             # ... crossed with each of these (optional)
      - {model.heads: [au, va], run.select_by: au_f1}
      - {}

Each point is an ordinary run folder: a killed search run again continues the point it
was in from its ``last.pt`` and reuses every finished point (``point.json`` records its
config; a point whose config changed is trained afresh in a new folder, because its name
is derived from its settings). Every config is built and validated before anything
trains. Results: ``results.csv`` and ``results.md`` (ranked), and ``best-<task>.yaml``,
the recipe of the best point per target task (``au``, ``expr``, ``va``, and ``p`` for
all three), as a YAML diff on the spec's recipe.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from ..config import ConfigError, config_to_dict, load_config, yaml_error
from ..io import atomic_write_json, atomic_write_text
from .loop import read_metrics, train

SPEC_KEYS = ("recipe", "overrides", "out", "grid", "points")
# what each target task is ranked by, best first
TARGETS = {"p": "p", "au": "au_f1", "expr": "expr_f1", "va": "va"}
POINT = "point.json"


@dataclass
class Point:
    name: str
    settings: dict  # dotted key -> value, the point's own
    overrides: list[str]  # every override it trains with (spec's + settings + out_dir)
    run_dir: Path


def _fmt(value) -> str:
    """An override value as YAML (lists inline): parsed back to the same value."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix(
        "\n...").strip()


def point_name(settings: dict) -> str:
    """A stable folder name from the settings: readable, then a hash of all of them."""
    if not settings:
        return "base"
    parts = [f"{k.split('.')[-1]}={_fmt(v)}" for k, v in sorted(settings.items())]
    readable = re.sub(r"[^A-Za-z0-9=.,_-]+", "", ",".join(parts))[:80]
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:6]
    return f"{readable}-{digest}"


def read_spec(path: str | os.PathLike) -> dict:
    """The spec file, checked: known keys, a grid of lists, points of mappings."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the search spec ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: a search spec is a mapping with {', '.join(SPEC_KEYS)}")
    problems = [f"{path}: unknown key {k!r} (known: {', '.join(SPEC_KEYS)})"
                for k in spec if k not in SPEC_KEYS]
    if "recipe" not in spec:
        problems.append(f"{path}: 'recipe' is required (the recipe every point starts from)")
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        problems.append(f"{path}: 'grid' maps dotted keys to lists of values")
    else:
        problems += [f"{path}: grid.{k}: a non-empty list of values, got {v!r}"
                     for k, v in grid.items() if not isinstance(v, list) or not v]
    points = spec.get("points") or []
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        problems.append(f"{path}: 'points' is a list of mappings (dotted key: value)")
    if not isinstance(spec.get("overrides") or [], list):
        problems.append(f"{path}: 'overrides' is a list of key=value strings")
    if problems:
        raise ConfigError(problems)
    spec.setdefault("out", str(Path("runs") / f"search-{path.stem}"))
    return spec


def expand(spec: dict) -> list[dict]:
    """Every point's settings: the grid's product crossed with each explicit point."""
    grid = spec.get("grid") or {}
    keys = list(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*grid.values())]
    explicit = spec.get("points") or [{}]
    out, seen = [], set()
    for extra in explicit:
        for combo in combos:
            settings = {**combo, **extra}
            key = json.dumps(settings, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(settings)
    return out


def plan(spec: dict) -> list[Point]:
    """The points with their configs built and validated (every problem before any run)."""
    out_root = Path(spec["out"])
    points, problems = [], []
    for settings in expand(spec):
        name = point_name(settings)
        run_dir = out_root / "points" / name
        overrides = [*spec.get("overrides", []), *(f"{k}={_fmt(v)}" for k, v in settings.items()),
                     f"run.out_dir={run_dir}"]
        try:
            load_config(spec["recipe"], overrides)
        except ConfigError as e:
            problems += [f"point {name}: {p}" for p in e.problems]
            continue
        points.append(Point(name, settings, overrides, run_dir))
    if problems:
        raise ConfigError(problems)
    return points


def best_row(run_dir: Path, select_by: str) -> dict | None:
    """The validation scores of the epoch best.pt holds (the first best by ``select_by``)."""
    rows = [r for r in read_metrics(run_dir) if r.get("val")] if (
        run_dir / "metrics.jsonl").is_file() else []
    best = None
    for r in rows:
        if best is None or r["val"].get(select_by, -math.inf) > best["val"].get(select_by,
                                                                              -math.inf):
            best = r
    return best


def _finished(point: Point, cfg) -> dict | None:
    """The point's record when it trained to the end under this very config."""
    path = point.run_dir / POINT
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if record.get("config") != config_to_dict(cfg) or not record.get("finished"):
        return None
    return record


def _row(point: Point, cfg, record: dict) -> dict:
    val = record.get("best", {}).get("val", {})
    row = {"point": point.name, **{k: _fmt(v) for k, v in point.settings.items()},
           "select_by": cfg.run.select_by, "best_epoch": record.get("best", {}).get("epoch"),
           "epochs": cfg.optim.epochs, "train_s": record.get("train_s")}
    for k in ("p", "au_f1", "expr_f1", "va", "p_smoothed", "au_f1_smoothed",
              "expr_f1_smoothed", "va_smoothed"):
        row[k] = val.get(k, float("nan"))
    heads = cfg.model.heads
    if heads is not None and set(heads) != {"au", "expr", "va"}:
        row["p"] = row["p_smoothed"] = float("nan")  # P needs all three tasks
    return row


def run_search(spec_path: str | os.PathLike, *, dry_run: bool = False,
               note: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)
               ) -> dict:
    """Run (or continue) every point of the spec; write the ranked tables and the best
    recipe per target task. Returns ``{"results", "paths", "points"}``."""
    spec = read_spec(spec_path)
    points = plan(spec)
    out_root = Path(spec["out"])
    note(f"search {spec_path}: {len(points)} points of recipe {spec['recipe']!r} -> {out_root}")
    if dry_run:
        for i, p in enumerate(points, 1):
            note(f"  [{i}/{len(points)}] {p.name}: {' '.join(p.overrides)}")
        return {"results": None, "paths": {}, "points": points}
    rows, spent, trained = [], 0.0, 0
    t_search = time.perf_counter()
    for i, point in enumerate(points, 1):
        cfg = load_config(spec["recipe"], point.overrides)
        record = _finished(point, cfg)
        if record is not None:
            note(f"[{i}/{len(points)}] {point.name}: finished earlier, reused")
        else:
            left = len(points) - i + 1
            eta = f", ETA {_clock(spent / trained * left)}" if trained else ""
            resumed = (point.run_dir / "last.pt").is_file()
            note(f"[{i}/{len(points)}] {point.name}: {'resuming' if resumed else 'training'}"
                 f" ({_clock(time.perf_counter() - t_search)} elapsed{eta})")
            t0 = time.perf_counter()
            train(cfg, point.run_dir, resume=True)
            took = time.perf_counter() - t0
            spent, trained = spent + took, trained + 1
            best = best_row(point.run_dir, cfg.run.select_by)
            record = {"name": point.name, "settings": point.settings,
                      "overrides": point.overrides, "config": config_to_dict(cfg),
                      "finished": True, "train_s": round(took, 1),
                      "best": {"epoch": best["epoch"], "val": best["val"]} if best else {}}
            atomic_write_json(point.run_dir / POINT, record)
        rows.append(_row(point, cfg, record))
    table = pd.DataFrame(rows)
    paths = write_results(table, spec, points, out_root)
    note(f"search done in {_clock(time.perf_counter() - t_search)}: {paths['md']}")
    return {"results": table, "paths": paths, "points": points}


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def write_results(table: pd.DataFrame, spec: dict, points: list[Point], out_root: Path
                  ) -> dict:
    """``results.csv`` (P-ranked), ``results.md`` (a ranking per target) and the best
    recipe per target task."""
    out_root.mkdir(parents=True, exist_ok=True)
    ranked = table.sort_values("p", ascending=False, na_position="last", kind="stable")
    paths = {"csv": out_root / "results.csv", "md": out_root / "results.md"}
    atomic_write_text(paths["csv"], ranked.to_csv(index=False))
    settings_cols = [c for c in table.columns if c not in (
        "point", "select_by", "best_epoch", "epochs", "train_s", "p", "au_f1", "expr_f1", "va",
        "p_smoothed", "au_f1_smoothed", "expr_f1_smoothed", "va_smoothed")]
    lines = [f"# Strategy search: {spec['recipe']}", "",
             f"{len(table)} points; validation scores of each point's best epoch (by its "
             "`run.select_by`); P = AU F1 + EXPR F1 + mean CCC, only for points with all "
             "three tasks; `*_smoothed`: outputs smoothed over time with widths tuned on the "
             "same validation (optimistic).", ""]
    by_point = {p.name: p for p in points}
    for target, col in TARGETS.items():
        have = table[table[col].notna()].sort_values(col, ascending=False, kind="stable")
        if have.empty:
            continue
        title = "P (all three tasks)" if target == "p" else f"{target.upper()} ({col})"
        lines += [f"## Ranked by {title}", ""]
        cols = ["point", *[c for c in settings_cols if c != "run.select_by"], "select_by", col,
                *[c for c in ("p", "au_f1", "expr_f1", "va") if c != col],
                f"{col}_smoothed", "best_epoch", "train_s"]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for _, r in have.iterrows():
            lines.append("| " + " | ".join(_cell(r.get(c), c) for c in cols) + " |")
        lines.append("")
        best = by_point[have.iloc[0]["point"]]
        recipe = _recipe_for(spec, best, target, col, float(have.iloc[0][col]))
        paths[f"best-{target}"] = atomic_write_text(out_root / f"best-{target}.yaml", recipe)
    atomic_write_text(paths["md"], "\n".join(lines))
    return paths


def _cell(v, col: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if col == "train_s":
        return f"{v:.0f}"
    if col == "best_epoch":
        return str(int(v))
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _recipe_for(spec: dict, point: Point, target: str, col: str, value: float) -> str:
    """The best point as a recipe: ``base:`` the spec's recipe, its settings as a diff."""
    diff: dict = {}
    for item in [*spec.get("overrides", []), *(f"{k}={_fmt(v)}" for k, v in
                                                point.settings.items())]:
        key, _, text = item.partition("=")
        node = diff
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
    diff.setdefault("run", {})["out_dir"] = str(Path(spec["out"]) / f"best-{target}")
    head = (f"# Best point of the strategy search for target {target!r} ({col} = {value:.4f} "
            f"on validation): {point.name}\n# Train it: affectkit train <this file>\n")
    return head + yaml.safe_dump({"base": spec["recipe"], **diff}, sort_keys=False)
