"""Config: recipes, inheritance, overrides, strict keys and types, ranges, dump round trip."""

import dataclasses

import pytest
import yaml

from affectkit import __version__
from affectkit.config import (
    MISSING,
    Config,
    ConfigError,
    check_paths,
    config_to_dict,
    dump_config,
    list_recipes,
    load_config,
)

RECIPES = ("emma-mtl", "vit-mtl", "cnn-mtl", "cotex-lsd", "cotex-expr", "demo", "demo-cnn",
           "mae-face", "mae-face-tiny", "default-model", "progressive-stage1-au",
           "progressive-stage1-expr", "progressive-stage1-va", "progressive-joint",
           "progressive-demo", "progressive-demo-stage1")


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def errors_of(fn, *args, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*args, **kw)
    return str(e.value)


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_loads_and_validates(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config) and cfg.recipe == name


def test_list_recipes_has_all_with_descriptions():
    recipes = list_recipes()
    assert set(recipes) == set(RECIPES)
    assert all(desc and not desc.startswith("#") for desc in recipes.values())
    assert "CoTEX" in recipes["cotex-lsd"]


def test_defaults_are_the_emma_paper_recipe():
    cfg = Config()
    o, d, m = cfg.optim, cfg.data, cfg.model
    assert (o.optimizer, o.base_lr, o.weight_decay, o.batch_size, o.accum_steps) == (
        "adamw", 5e-4, 0.05, 100, 4)
    assert (o.clip_grad, o.layer_decay, o.warmup_epochs, o.epochs) == (0.05, 0.65, 5, 30)
    assert (m.drop_path, m.backbone, m.expr_branch, m.stop_gradient) == (
        0.1, "vit_base_patch16_224", "dan", True)
    assert (d.resize, d.img_size) == (232, 224) and d.jitter > 0


def test_paper_recipes():
    emma = load_config("emma-mtl")
    assert emma.model.kind == "emma" and emma.model.pretrained == MISSING
    assert emma.data.layout == "mtl"
    cotex = load_config("cotex-lsd")
    assert (cotex.model.kind, cotex.model.mask_ratio, cotex.model.num_classes) == ("cotex", 0.75, 6)
    assert (cotex.optim.weight_decay, cotex.optim.batch_size, cotex.optim.epochs) == (0.15, 1024, 6)
    assert (cotex.data.resize, cotex.data.jitter, cotex.data.hue) == (228, 0.4, 0.1)  # 4.2
    assert cotex.loss.js_weight == 1.0 and cotex.data.layout == "lsd"
    cnn = load_config("cnn-mtl")
    assert cnn.optim.layer_decay is None and cnn.model.expr_branch is None
    demo = load_config("demo")
    assert demo.model.backbone == "vit_tiny_patch16_224" and demo.model.pretrained is None
    assert (demo.data.img_size, demo.optim.batch_size, demo.optim.epochs) == (64, 16, 2)
    assert demo.run.amp == "off" and demo.data.root == "affectkit-sample"


def test_base_inheritance_multi_level():
    # demo -> vit-mtl -> emma-mtl: keeps emma-mtl's layout, vit-mtl's kind, its own sizes
    demo = load_config("demo")
    assert demo.data.layout == "mtl" and demo.model.kind == "vit-mtl"
    expr = load_config("cotex-expr")  # cotex-expr -> cotex-lsd -> emma-mtl
    assert expr.model.num_classes == 8 and expr.model.mask_ratio == 0.75
    assert expr.optim.weight_decay == 0.15 and expr.data.layout == "per-video"


def test_user_recipe_with_relative_base_and_cycle(tmp_path):
    write(tmp_path / "parent.yaml", "base: cotex-lsd\noptim:\n  epochs: 9\n")
    child = write(tmp_path / "child.yaml", "# mine\nbase: parent.yaml\nmodel:\n  mask_ratio: 0.5\n")
    cfg = load_config(child)
    assert (cfg.optim.epochs, cfg.model.mask_ratio, cfg.optim.batch_size) == (9, 0.5, 1024)
    assert cfg.recipe == child
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    assert "cycle" in errors_of(load_config, str(tmp_path / "a.yaml"))


def test_unknown_recipe_suggests():
    msg = errors_of(load_config, "emma-mlt")
    assert "emma-mtl" in msg


def test_overrides_are_typed():
    cfg = load_config("emma-mtl", ["optim.base_lr=1e-3", "model.stop_gradient=false",
                                   "data.images=null", "model.pool=avg", "data.root=/x",
                                   "optim.batch_size=8", "run.amp=off", "optim.betas=[0.9, 0.95]"])
    assert cfg.optim.base_lr == 1e-3 and type(cfg.optim.base_lr) is float
    assert cfg.model.stop_gradient is False
    assert cfg.data.images is None and cfg.data.root == "/x"
    assert cfg.optim.batch_size == 8 and type(cfg.optim.batch_size) is int
    assert cfg.run.amp == "off" and cfg.optim.betas == (0.9, 0.95)
    # int accepted for float
    assert type(load_config("demo", ["optim.base_lr=1"]).optim.base_lr) is float


def test_typo_in_yaml_names_key_file_line_and_suggestion(tmp_path):
    path = write(tmp_path / "typo.yaml", "# typo\nbase: emma-mtl\noptim: {base_lrr: 1}\n")
    msg = errors_of(load_config, path)
    assert "'optim.base_lrr'" in msg and "did you mean 'optim.base_lr'" in msg
    assert f"{path}:3" in msg


def test_typo_in_override_and_unknown_section():
    msg = errors_of(load_config, "demo", ["optim.base_lrr=1"])
    assert "'optim.base_lrr'" in msg and "'optim.base_lr'" in msg and "override" in msg
    assert "'optim'" in errors_of(load_config, "demo", ["optm.base_lr=1"])
    # a key in the wrong section points to where it lives
    assert "'model.drop_path'" in errors_of(load_config, "demo", ["optim.drop_path=0.1"])
    assert "key=value" in errors_of(load_config, "demo", ["optim.base_lr"])


@pytest.mark.parametrize("override, expect", [
    ("optim.batch_size=abc", "expected int"),
    ("optim.batch_size=2.5", "expected int"),
    ("optim.base_lr=true", "expected float"),
    ("optim.epochs=true", "expected int"),
    ("model.pool=mean", "one of 'cls', 'avg'"),
    ("run.amp=fp8", "one of"),
    ("model.backbone=null", "expected str"),
    ("model.stop_gradient=1", "expected bool"),
    ("optim.betas=[0.9]", "a list of 2 floats"),
    ("optim=3", "expected a mapping"),
])
def test_wrong_types_fail(override, expect):
    msg = errors_of(load_config, "demo", [override])
    assert override.split("=")[0] in msg and expect in msg


@pytest.mark.parametrize("override", [
    "optim.base_lr=0", "optim.base_lr=-1e-4", "model.mask_ratio=1.0", "model.mask_ratio=-0.1",
    "optim.batch_size=0", "optim.accum_steps=0", "optim.layer_decay=0", "optim.layer_decay=1.5",
    "optim.warmup_epochs=3", "data.resize=32", "optim.clip_grad=0", "loss.label_smoothing=1",
    "data.expr_labels=abaw_au", "model.expr_branch=dan", "model.num_classes=6",
])
def test_ranges_and_consistency(override):
    # demo: 2 epochs, img_size 64, kind vit-mtl (no CNN branch)
    msg = errors_of(load_config, "demo", [override])
    assert override.split("=")[0] in msg


def test_boundaries_accepted_and_all_problems_reported():
    cfg = load_config("demo", ["optim.layer_decay=1", "model.mask_ratio=0",
                               "optim.warmup_epochs=2", "data.expr_labels=fer2013"])
    assert cfg.optim.layer_decay == 1.0
    msg = errors_of(load_config, "demo", ["optim.batch_size=0", "optim.accum_steps=0"])
    assert "optim.batch_size" in msg and "optim.accum_steps" in msg
    assert "cotex needs" in errors_of(load_config, "cotex-lsd", ["model.num_classes=null"])


def test_dump_load_round_trip(tmp_path):
    cfg = load_config("cotex-lsd", ["optim.base_lr=1e-3", "data.root=/data/lsd",
                                    "optim.betas=[0.9, 0.95]", "data.images=null"])
    path = dump_config(cfg, tmp_path / "run" / "config.yaml")
    saved = yaml.safe_load(path.read_text())
    assert "git_sha" in saved and saved["affectkit_version"] == __version__
    assert saved["recipe"] == "cotex-lsd"
    assert load_config(str(path)) == cfg
    assert config_to_dict(cfg)["optim"]["betas"] == [0.9, 0.95]
    # a saved config still rejects a typo added by hand
    path.write_text(path.read_text() + "extra_key: 1\n")
    assert "'extra_key'" in errors_of(load_config, str(path))


def test_configs_are_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.base_lr = 1.0  # type: ignore[misc]
    assert dataclasses.replace(cfg.optim, base_lr=1.0).base_lr == 1.0


def test_check_paths(tmp_path):
    cfg = load_config("emma-mtl")  # root and pretrained still required (???)
    msg = errors_of(check_paths, cfg)
    assert "data.root" in msg and "model.pretrained" in msg and "not set" in msg
    missing = tmp_path / "nope.pth"
    cfg = load_config("emma-mtl", [f"data.root={tmp_path}", f"model.pretrained={missing}",
                                   "model.expr_branch_checkpoint=/no/dan.pth"])
    msg = errors_of(check_paths, cfg)
    assert f"model.pretrained: no such file or directory: {missing}" in msg
    assert "model.expr_branch_checkpoint" in msg and "/no/dan.pth" in msg
    assert "data.root" not in msg
    missing.write_bytes(b"")
    check_paths(load_config("cnn-mtl", [f"data.root={tmp_path}"]))  # timm: weights not a path
    check_paths(load_config("demo", [f"data.root={tmp_path}"]))


def test_layout_choices_match_the_data_layer():
    import typing

    from affectkit.config import DataConfig
    from affectkit.data.discover import LAYOUTS

    choices = typing.get_args(typing.get_type_hints(DataConfig)["layout"])
    assert set(choices) == {"auto", *LAYOUTS}


def test_select_by_and_progressive_settings_are_checked():
    msg = errors_of(load_config, "vit-mtl", ["run.select_by=au_f"])
    assert "run.select_by" in msg and "au_f1" in msg
    msg = errors_of(load_config, "progressive-joint", ["progressive.attention_heads=5",
                                                    "progressive.smoothing_widths=[1, 4]",
                                                    "optim.layer_decay=0.65"])
    for key in ("progressive.attention_heads", "progressive.smoothing_widths",
                "optim.layer_decay"):
        assert key in msg
    msg = errors_of(check_paths, load_config("progressive-joint"))
    assert "progressive.task_models: required" in msg
    msg = errors_of(check_paths, load_config("progressive-joint",
                                          ["progressive.task_models=[/no/such/run]"]))
    assert "progressive.task_models.0: no such file" in msg
