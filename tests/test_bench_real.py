"""The real-data benchmark harness (benchmarks/real): folds, names, claim verdicts, and
one end-to-end smoke run on the real CK+ and FER2013 faces."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is not installed with the package
    sys.path.insert(0, str(REPO))

from benchmarks.real import report  # noqa: E402
from benchmarks.real.common import (  # noqa: E402
    decode_labels,
    encode_labels,
    parse_model,
    pick_subjects,
    subject_folds,
)


def test_subject_folds_never_split_a_subject_and_balance_images():
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"S{i:03d}" for i in range(40)], rng.integers(3, 30, 40))
    folds = subject_folds(subjects, 5, seed=0)
    for s in np.unique(subjects):
        assert len(set(folds[subjects == s])) == 1, s
    sizes = np.bincount(folds, minlength=5)
    assert sizes.min() > 0 and sizes.max() - sizes.min() <= 30  # within one subject's images
    assert (subject_folds(subjects, 5, seed=0) == folds).all()  # fixed by its seed
    with pytest.raises(ValueError, match="3 subjects cannot make 5 folds"):
        subject_folds(["a", "b", "c"], 5)


def test_pick_subjects_is_a_seeded_fraction():
    subjects = [f"S{i}" for i in range(20)] * 3
    picked = pick_subjects(subjects, 0.15, seed=7)
    assert len(picked) == 3 and picked == pick_subjects(subjects, 0.15, seed=7)
    assert len(pick_subjects(subjects[:2], 0.1, seed=0)) == 1  # at least one


def test_model_names():
    assert parse_model("cnn") == {"kind": "cnn", "init": "random", "mask_ratio": 0.0}
    assert parse_model("vit-mae")["mask_ratio"] == 0.0
    assert parse_model("cotex-mae")["mask_ratio"] == 0.75  # the paper's submitted ratio
    assert parse_model("cotex-random-r0.9") == {"kind": "cotex", "init": "random",
                                                 "mask_ratio": 0.9}
    assert parse_model("cotex-mae-eqtime") == {"kind": "cotex", "init": "mae",
                                                "mask_ratio": 0.75, "equal_time": True}
    for bad in ("vit", "vit-imagenet", "cotex-mae-0.5", "resnet", "vit-eqtime"):
        with pytest.raises(ValueError, match="unknown model name"):
            parse_model(bad)
    with pytest.raises(ValueError, match="equal time"):
        parse_model("cnn-eqtime")


def test_label_strings_round_trip():
    v = np.array([0, 6, 3, 9, 1])
    assert encode_labels(v) == "06391"
    assert (decode_labels(encode_labels(v)) == v).all()
    with pytest.raises(ValueError):
        encode_labels([10])


def test_verdicts():
    assert report.verdict_from_diffs([0.05, 0.04, 0.06])["verdict"] == "holds"
    assert report.verdict_from_diffs([-0.05, -0.04, -0.06])["verdict"] == "does not hold"
    assert report.verdict_from_diffs([0.05, -0.04, 0.01])["verdict"] == "inconclusive"
    assert report.verdict_from_diffs([0.05])["verdict"] == "inconclusive"  # no spread
    assert report.verdict_from_diffs([])["verdict"] == "not measured"
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 6, 600)
    good = np.where(rng.random(600) < 0.8, truth, rng.integers(0, 6, 600))
    bad = rng.integers(0, 6, 600)
    draws = report.bootstrap_diff(truth, good, bad, 6, n=300)
    margin = report.macro_f1(truth, good, 6) - report.macro_f1(truth, bad, 6)
    assert report.verdict_from_bootstrap(margin, draws, 1)["verdict"] == "holds"
    assert report.verdict_from_bootstrap(-margin, -draws, 1)["verdict"] == "does not hold"


def test_macro_f1_counts_every_class():
    """The report's vectorised F1 (for bootstraps) is the challenge's: a class never
    predicted counts 0, and it matches affectkit.metrics."""
    from affectkit.metrics import expr_scores

    rng = np.random.default_rng(1)
    truth, pred = rng.integers(0, 7, 300), rng.integers(0, 6, 300)  # class 6 never predicted
    ref = expr_scores(truth, pred, [str(i) for i in range(7)])["expr_f1"]
    assert report.macro_f1(truth, pred, 7) == pytest.approx(ref, abs=1e-12)


def test_speed_claim_needs_monotone_and_10_percent():
    names = ["cotex-mae-r0", "cotex-mae-r0.5", "cotex-mae-r0.75", "cotex-mae-r0.9"]

    def runs(ips):
        return [{"extra": {"speed_probe": {n: {"median": v} for n, v in zip(names, ips)}},
                 "models": {}}]

    assert report.speed_claim(runs([10, 20, 30, 40]), names)["verdict"] == "holds"
    assert report.speed_claim(runs([10, 20, 15, 40]), names)["verdict"] == "inconclusive"
    assert report.speed_claim(runs([10, 9, 9.5, 9]), names)["verdict"] == "does not hold"


def test_ckplus_and_cross_domain_smoke_on_real_faces(shared_data, tmp_path):
    """The harness end to end on a few hundred real faces (smoke profile, random init so
    no MAE): CK+ AU folds by subject with one CNN, FER2013 -> CK+ with a ViT and CoTEX at
    two mask ratios; results JSON and the generated report."""
    import torch

    from benchmarks.real.run import main

    args = ["--profile", "smoke", "--out", str(tmp_path / "results"),
            "--work", str(tmp_path / "work"), "--threads", str(torch.get_num_threads())]
    threads = torch.get_num_threads()
    try:
        _smoke(main, args, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _smoke(main, args, tmp_path):
    assert main(["ckplus", "--models", "au/cnn", *args]) == 0
    ck = json.loads((tmp_path / "results" / "ckplus-smoke-s0.json").read_text())
    assert ck["data"]["folds"] == 2 and ck["data"]["au_images"] == 684
    assert sum(f["au_images"] for f in ck["data"]["fold_sizes"]) == 684
    entry = ck["models"]["au/cnn"]
    assert entry["pooled"]["n"] == 684  # every AU-coded image scored once, in its test fold
    assert set(entry["pooled"]["f1_per_au"]) == set(report.ABAW_AUS)
    assert ck["environment"]["git_sha"] and ck["finished"]

    models = "vit-random,cotex-random-r0,cotex-random-r0.9"
    assert main(["cross-domain", "--init", "random", "--models", models, *args]) == 0
    cd = json.loads((tmp_path / "results" / "cross-domain-smoke-s0.json").read_text())
    assert set(cd["models"]) == set(models.split(","))
    for m in cd["models"].values():
        assert 0.0 <= m["ckplus"]["p_lsd"] <= 1.0 and len(m["ckplus"]["pred"]) == 128
    probe = cd["extra"]["speed_probe"]
    assert probe["cotex-random-r0.9"]["median"] > 0
    md = (tmp_path / "results" / "RESULTS.md").read_text()
    assert "## Profile `smoke`" in md and "Cross-domain" in md and "CK+" in md
    assert "A larger mask ratio trains faster" in md

    # equal training time: CoTEX's epochs scaled by its measured speed over the reference
    models = "vit-random,cotex-random-eqtime"
    assert main(["fer2013", "--models", models, *args]) == 0
    fer = json.loads((tmp_path / "results" / "fer2013-smoke-s0.json").read_text())
    eq = fer["models"]["cotex-random-eqtime"]["equal_time"]
    assert eq["reference"] == "vit-random" and eq["speed_ratio"] > 0
    assert eq["epochs"] == max(1, round(eq["speed_ratio"])) == \
        fer["models"]["cotex-random-eqtime"]["train"]["epochs"]


def test_cpu_long_profile_reuses_the_cpu_mae_and_is_judged_on_fer2013_alone():
    from benchmarks.real.profiles import PROFILES, benchmarks_of
    from benchmarks.real.run import main

    long, cpu = PROFILES["cpu-long"], PROFILES["cpu"]
    assert long["mae_from"] == "cpu" and long["mae"] == cpu["mae"]
    assert long["train"] == cpu["train"]  # only the length differs from the cpu profile
    assert benchmarks_of(long) == ("fer2013",)
    assert main(["ckplus", "--profile", "cpu-long"]) == 2  # refused, before any work

    truth = "0123456" * 20
    models = {n: {"private": {"f1": f1, "acc": f1, "truth": truth, "pred": truth[:k] + "0" *
                              (140 - k)}} for n, f1, k in (("vit-mae", 0.5, 100),
                                                           ("vit-random", 0.3, 40))}
    run = {"benchmark": "fer2013", "profile": "cpu-long", "seed": 0, "models": models,
           "settings": long, "data": {}}
    text = "\n".join(report.claims({("fer2013", "cpu-long"): [run]}, "cpu-long"))
    assert "FER2013 PrivateTest macro F1, `vit-mae` − `vit-random` | +20.0 pt" in text
    # judged on what the profile runs: no CK+ or cross-domain rows, no CoTEX (not run)
    assert "CK+" not in text and "mask ratio" not in text and "CoTEX" not in text


def test_truth_counts_and_majority_from_stored_predictions():
    truth = encode_labels(np.array([0, 1, 1, 2, 1]))
    runs = [{"data": {"classes": ["a", "b", "c"]},
             "models": {"m": {"fer_private": {"truth": truth, "pred": truth}}}}]
    counts = report.truth_counts(runs, "fer_private")
    assert counts == {"a": 1, "b": 3, "c": 1}
    acc, f1 = report.majority({"a": 10, "b": 2, "c": 1}, counts)  # the prior says 'a'
    assert acc == 0.2 and f1 == (2 * 0.2 / 1.2) / 3
    assert report.truth_counts([{"data": {}, "models": {}}], "fer_private") is None


def test_rows_at_the_prior_give_way_to_the_profile_that_reruns_them():
    """A cpu row whose two ViTs both stayed at the class prior is judged in cpu-p8 once
    cpu-p8 measures it with models that learned; until then it stays inconclusive."""
    from benchmarks.real.profiles import PROFILES

    truth = "0123456" * 20
    classes = {c: 20 for c in "abcdefg"}  # majority-class accuracy 1/7

    def fer_run(profile, acc_mae, acc_random):
        def preds(acc):
            k = int(acc * 140)
            return truth[:k] + "".join("1" if t == "0" else "0" for t in truth[k:])
        models = {n: {"private": {"f1": a, "acc": a, "truth": truth, "pred": preds(a)}}
                  for n, a in (("vit-mae", acc_mae), ("vit-random", acc_random))}
        return {"benchmark": "fer2013", "profile": profile, "seed": 0, "models": models,
                "settings": PROFILES[profile],
                "data": {"train": {"classes": classes}, "test": {"classes": classes}}}

    row = "FER2013 PrivateTest macro F1, `vit-mae` − `vit-random`"
    cpu = fer_run("cpu", 0.17, 0.15)  # both within 5 pt of the prior (14.3%)
    alone = "\n".join(report.claims({("fer2013", "cpu"): [cpu]}, "cpu"))
    assert row in alone and "neither model learned" in alone and "Judged in" not in alone

    groups = {("fer2013", "cpu"): [cpu], ("fer2013", "cpu-p8"): [fer_run("cpu-p8", 0.6, 0.3)]}
    text = "\n".join(report.claims(groups, "cpu"))
    assert "neither model learned" not in text
    assert "Judged in profile `cpu-p8` instead (1 comparison whose" in text
    assert f"{row}: holds there" in text
    assert f"| {row} |" in "\n".join(report.claims(groups, "cpu-p8"))


def test_results_keep_models_unless_their_own_settings_change(tmp_path):
    """Adding a section for another benchmark to a profile keeps a benchmark's measured
    models; changing the training settings or its own section drops them."""
    from benchmarks.real.common import Results
    from benchmarks.real.profiles import get_profile

    profile = get_profile("cpu-p8")
    fer_only = {k: v for k, v in profile.items() if k not in ("ckplus", "cross-domain")}
    first = Results(tmp_path, "fer2013", "cpu-p8", fer_only, 0)
    first.model("vit-mae", {"private": {"acc": 0.5}})
    assert list(Results(tmp_path, "fer2013", "cpu-p8", profile, 0).data["models"]) == \
        ["vit-mae"]
    longer = get_profile("cpu-p8")
    longer["fer2013"]["epochs"] += 1
    assert Results(tmp_path, "fer2013", "cpu-p8", longer, 0).data["models"] == {}
    other_lr = get_profile("cpu-p8")
    other_lr["train"]["lr"] *= 2
    assert Results(tmp_path, "fer2013", "cpu-p8", other_lr, 0).data["models"] == {}


def test_a_finished_run_folder_is_reused_under_the_same_config_only(tmp_path):
    """best.pt holds the config with data.mean / std fixed at training time; a benchmark
    that asks for the same run (stats unset) reuses it, another init or length does not."""
    import torch

    from affectkit.config import config_to_dict
    from affectkit.engine.build import with_data_stats
    from benchmarks.real.common import _finished, model_config
    from benchmarks.real.profiles import get_profile

    tr = get_profile("cpu-p8")["train"]
    enc = tmp_path / "encoder.pth"
    kw = dict(run_dir=tmp_path / "run", seed=0, data_root=tmp_path, epochs=2)
    cfg, _ = model_config("vit", tr, pretrained=enc, **kw)
    assert cfg.data.mean is None  # resolved when training starts
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"config": config_to_dict(with_data_stats(cfg))}, run / "best.pt")
    (run / "metrics.jsonl").write_text('{"epoch": 0}\n')
    assert not _finished(run, cfg)  # one epoch of two
    (run / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 1}\n')
    assert _finished(run, cfg)
    assert not _finished(run, model_config("vit", tr, pretrained=None, **kw)[0])
    assert not _finished(run, model_config("vit", tr, pretrained=enc, **{**kw, "epochs": 3})[0])


def test_bench_precision_refuses_an_unknown_model_before_measuring(capsys):
    from benchmarks import bench_precision

    with pytest.raises(SystemExit) as e:
        bench_precision.main(["--only", "vit_tiny,resnet18"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--only: unknown model(s) vit_tiny" in err and "vit_tiny_patch16_224" in err
