"""Shipped models: trained here with the library's own recipes, inside the wheel.

Each model is a folder of this package: ``model.safetensors`` (fp16 weights, the run's
config in its metadata, so ``engine.inference.load_run`` reads it like any checkpoint),
``card.json`` (training data, command, held-out scores, limits, licence notes) and, for
AU models, ``au_thresholds.json`` (tuned on the model's validation subjects). Nothing is
ever downloaded. ``affectkit models`` lists them, ``affectkit models --card NAME`` renders
a card, ``affectkit.load_model(NAME)`` loads one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ZOO = Path(__file__).parent
DEFAULT = "vgg48-fer-ck"  # what --model default / load_model() pick
WEIGHTS, CARD, THRESHOLDS = "model.safetensors", "card.json", "au_thresholds.json"


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def model_names() -> list[str]:
    """The shipped models, default first."""
    names = sorted(p.name for p in ZOO.iterdir() if (p / WEIGHTS).is_file())
    return sorted(names, key=lambda n: n != DEFAULT)


def model_dir(name: str = "default") -> Path:
    """The folder of shipped model ``name`` (``"default"``: the default model)."""
    real = DEFAULT if name == "default" else name
    folder = ZOO / real
    if not (folder / WEIGHTS).is_file():
        known = ", ".join(model_names()) or "none"
        raise UnknownModel(f"no shipped model {name!r} (shipped: {known}; or pass a run "
                           "folder or checkpoint file)")
    return folder


def weights(name: str = "default") -> Path:
    """The weight file of shipped model ``name``: what ``load_run`` and the CLI read."""
    return model_dir(name) / WEIGHTS


def is_shipped(name: str | os.PathLike) -> bool:
    """``name`` names a shipped model (and not a path that exists)."""
    name = str(name)
    if name == "default":
        return True
    return "/" not in name and os.sep not in name and (ZOO / name / WEIGHTS).is_file()


def read_card(name: str = "default") -> dict:
    path = model_dir(name) / CARD
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {e.lineno}, column {e.colno}: not valid JSON "
                         f"({e.msg}); reinstall affectkit") from None
    card["default"] = card.get("name") == DEFAULT
    return card


def _table(rows: list[list], header: list[str]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def render_card(card: dict) -> str:
    """The model card as Markdown: what it predicts, from what data, how well, its limits."""
    lines = [f"# {card['name']}" + (" (default)" if card.get("default") else ""), "",
             card.get("summary", ""), ""]
    lines += ["## What it predicts", "",
              f"- expressions: {', '.join(card['expression_classes'])}"
              + (f" (never predicted: {', '.join(card['absent_classes'])})"
                 if card.get("absent_classes") else ""),
              f"- action units: {', '.join(card['aus']) if card.get('aus') else 'none'}",
              f"- valence/arousal: {'yes' if card.get('va') else 'no (no VA head)'}",
              f"- input: {card.get('input', '')}", ""]
    lines += ["## Training", "", f"- recipe: `{card.get('recipe')}`",
              f"- command: `{card.get('command')}`"]
    lines += [f"- data: {d}" for d in card.get("training_data", [])]
    for k in ("git_sha", "epochs", "best_epoch", "wall_time_s", "train_img_per_s", "device"):
        if card.get(k) is not None:
            lines.append(f"- {k.replace('_', ' ')}: {card[k]}")
    lines.append("")
    scores = card.get("scores") or {}
    if scores:
        lines += ["## Held-out scores", ""]
        lines += _table([[k, v.get("what", ""), v.get("value", "")]
                         for k, v in scores.items() if isinstance(v, dict) and "value" in v],
                        ["score", "on", "value"])
        lines.append("")
    for title, key in (("Per expression class", "per_class"), ("Per action unit", "per_au")):
        table = card.get(key)
        if table:
            cols = list(next(iter(table.values())).keys())
            lines += [f"## {title}", ""]
            lines += _table([[name, *(row.get(c, "") for c in cols)]
                             for name, row in table.items()], ["", *cols])
            lines.append("")
    if card.get("limits"):
        lines += ["## Known limits", ""] + [f"- {x}" for x in card["limits"]] + [""]
    if card.get("licence"):
        lines += ["## Licence", "", card["licence"], ""]
    return "\n".join(lines)


def package_run(run: str | os.PathLike, name: str, card: dict, *,
                checkpoint: str = "best.pt", zoo: str | os.PathLike = ZOO) -> Path:
    """Copy a run's ``checkpoint`` into ``zoo/name`` as a shipped model: fp16 weights with
    the run's config (3x smaller than a checkpoint with optimiser state, and no precision
    that matters for inference lost: ``load_run`` computes in fp32), its tuned AU
    thresholds (``evaluate --au-thresholds tune``) and ``card``. Written atomically."""
    from ..config import config_to_dict
    from ..engine.inference import THRESHOLDS as RUN_THRESHOLDS
    from ..engine.inference import read_run
    from ..io import atomic_write_json
    from ..models.checkpoint import save_checkpoint

    files = read_run(Path(run) / checkpoint if Path(run).is_dir() else run)
    folder = Path(zoo) / name
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in files.state.items()}
    meta = {"config": json.dumps(config_to_dict(files.cfg)), "epoch": str(files.epoch or ""),
            "source": files.checkpoint.name}
    save_checkpoint(folder / WEIGHTS, state, **meta)
    thresholds = files.run_dir / RUN_THRESHOLDS
    if thresholds.is_file():
        saved = json.loads(thresholds.read_text(encoding="utf-8"))
        if saved.get("checkpoint_file") not in (None, files.checkpoint.name):
            raise ValueError(f"{thresholds} was tuned for {saved['checkpoint_file']}, not "
                             f"{files.checkpoint.name}: tune them again")
        saved["checkpoint_file"] = WEIGHTS
        atomic_write_json(folder / THRESHOLDS, saved)
    atomic_write_json(folder / CARD, {"name": name, **card})
    return folder
