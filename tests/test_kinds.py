"""The model-kind registry: a kind registered from a test file trains, evaluates and
predicts through the normal commands, touching no library file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from affectkit.cli import main
from affectkit.config import ConfigError, load_config
from affectkit.data.submission import read_label_csv
from affectkit.kinds import ModelKind, get_kind, kind_names, register_kind
from affectkit.labels import ABAW_EXPR
from affectkit.losses import masked_ce


class TinyNet(nn.Module):
    """A conv, a pool and a linear layer: expressions only."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, images):
        return {"expr_logits": self.fc(self.conv(images).relu().mean(dim=(2, 3)))}


def toy_task(outputs, batch):
    ce = masked_ce(outputs["expr_logits"], batch["expression"])
    return {"ce": ce, "loss": ce}


class ToyKind(ModelKind):
    name = "toy-expr"
    predicts = frozenset({"expr"})

    def validate(self, cfg, need):
        need(cfg.model.num_classes in (None, 8), "model.num_classes", "must be null or 8")

    def build_model(self, cfg, img_size=None, load_weights=True):
        return TinyNet(len(ABAW_EXPR))

    def build_task(self, cfg, train_table=None):
        return toy_task


register_kind(ToyKind())


def test_registry_knows_builtins_and_refuses_unknown_kinds():
    assert {"emma", "vit-mtl", "cnn-mtl", "cotex", "mae", "toy-expr"} <= set(kind_names())
    assert get_kind("cotex").predicts == frozenset({"expr"})
    assert get_kind("mae").pretraining and get_kind("emma").multitask
    with pytest.raises(ValueError, match="unknown model kind 'nope'.*cotex"):
        get_kind("nope")
    with pytest.raises(ConfigError, match="model.kind"):
        load_config("demo", ["model.kind=nope"])
    with pytest.raises(ValueError, match="already registered"):
        register_kind(type("Other", (ToyKind,), {})())
    with pytest.raises(ValueError, match="predicts must be a non-empty subset"):
        register_kind(type("Bad", (ToyKind,), {"name": "bad", "predicts": frozenset({"age"})})())
    # the branch check holds for every kind but EMMA
    with pytest.raises(ConfigError, match="model.expr_branch.*only kind 'emma'"):
        load_config("demo", ["model.kind=toy-expr", "model.expr_branch=dan"])
    # the kind's own checks run in config validation
    with pytest.raises(ConfigError, match="model.num_classes"):
        load_config("demo", ["model.kind=toy-expr", "model.num_classes=3"])


def test_toy_kind_trains_evaluates_and_predicts_through_the_cli(sample, tmp_path, capsys,
                                                               monkeypatch):
    recipe = tmp_path / "toy.yaml"
    recipe.write_text("base: demo\nmodel:\n  kind: toy-expr\n  pretrained: null\n"
                      "optim:\n  epochs: 1\n  warmup_epochs: 0\n  batch_size: 8\n"
                      "data:\n  img_size: 32\n  resize: 34\n")
    out = tmp_path / "runs"
    assert main(["train", str(recipe), f"data.root={sample['root']}",
                 f"run.out_dir={out}"]) == 0
    run = out
    assert (run / "last.pt").is_file() and (run / "config.yaml").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--out", str(tmp_path / "ev")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0 <= scores["expr_f1"] <= 1 and "p_mtl" not in scores
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(run), "--data", str(sample["test"]), "--out", str(pred)]) == 0
    table = read_label_csv(pred, ABAW_EXPR)
    assert len(table) > 0 and ((table.expression >= 0) & (table.expression < 8)).all()
    # a multi-task-only option is refused for an expression-only kind
    assert main(["evaluate", str(run), "--au-thresholds", "tune"]) == 2

    # a kind with its own submission format: predict writes through the kind's writer
    def own_format(self, out, table, hard, labels, *, videos, label_format="name"):
        rows = [f"{i} -> {labels.classes[e]}" for i, e in zip(table.images,
                                                             hard["expression"])]
        Path(out).write_text("\n".join(rows) + "\n")
        return [Path(out)]

    monkeypatch.setattr(ToyKind, "write_submission", own_format, raising=False)
    own = tmp_path / "own.txt"
    assert main(["predict", str(run), "--data", str(sample["test"]), "--out", str(own)]) == 0
    assert " -> " in own.read_text().splitlines()[0]
