"""Cross-domain expression, in the spirit of ABAW4's learning-from-synthetic-data track:
train on FER2013 (in-the-wild web faces) restricted to the 6 LSD classes (anger, disgust,
fear, happiness, sadness, surprise; mapped by name, neutral dropped), select the epoch on
PublicTest (same 6 classes), and score P_LSD (macro F1 over the 6 classes) on CK+'s
posed lab faces of those classes (927 images; contempt has no LSD class).

Models: one ViT (recipe ``vit-mtl``; its 8-way ABAW head scored on the 6 classes, the
never-trained Neutral and Other columns left out of the argmax) against masked CoTEX
(recipe ``cotex-lsd``, 6 classes) at mask ratios 0, 0.5, 0.75 and 0.9, all from the same
initialisation (the FER2013 MAE encoder; ``--init random`` for random init) and with the
same batch, schedule and augmentation.

Speed: each run's training img/s (the loop's own figure: data loading, forward, backward
and optimiser step, without validation) and, because runs one after another on a shared
machine see different neighbours, a controlled probe: every model's training step on one
resident batch of real faces, timed in interleaved rounds (median), as
``benchmarks/bench_masking.py`` does for one view.
"""

from __future__ import annotations

import logging
import statistics
import time
from contextlib import nullcontext

import torch
from torch.utils.data import default_collate

from affectkit.data.augment import train_transform
from affectkit.data.dataset import FaceDataset
from affectkit.engine.build import build_model, build_task, model_labels
from affectkit.labels import LSD

from .common import (
    Context,
    NotMeasured,
    class_counts,
    device,
    expression_eval,
    is_cnn,
    limit,
    model_config,
    open_ckplus,
    open_fer2013,
    parse_model,
    predict,
    relabel,
    train_and_load,
)

log = logging.getLogger("benchmarks.real.cross_domain")


def model_names(p: dict, init: str) -> list[str]:
    """The profile's reference models (a CNN from random init: is the task learnable at
    this budget?), the single ViT and CoTEX at each mask ratio."""
    return [*p.get("reference", []), f"vit-{init}"] + [f"cotex-{init}-r{r:g}"
                                                      for r in p["ratios"]]


def speed_probe(configs: dict, table, batch: int, rounds: int, steps: int) -> dict:
    """Training steps per second of each config's model on one resident batch of real
    faces (forward, the task's loss, backward, AdamW step), interleaved rounds."""
    dev = device()
    amp = torch.bfloat16 if dev.type == "cuda" else None
    n = min(batch, len(table))
    batches = {}

    def data_for(d):
        key = (d.img_size, d.resize, d.jitter, d.hue)
        if key not in batches:
            ds = FaceDataset(table.subset(list(range(n))),
                             train_transform(d.img_size, d.resize, d.jitter, d.hue))
            b = default_collate([ds[i] for i in range(n)])
            batches[key] = {k: v.to(dev) if isinstance(v, torch.Tensor) else v
                            for k, v in b.items()}
        return batches[key]

    setups = {}
    for name, cfg in configs.items():
        data = data_for(cfg.data)
        torch.manual_seed(0)
        model = build_model(cfg).to(dev).train()
        if is_cnn(model):
            model = model.to(memory_format=torch.channels_last)
        labels = model_labels(cfg)
        batch_ = dict(data)
        batch_["expression"] = torch.as_tensor(
            table.expr_labels.convert(table.expression[:n], labels), device=dev)
        setups[name] = (model, build_task(cfg, table), torch.optim.AdamW(model.parameters(), 1e-4),
                        batch_)  # the model masks by its own mask_ratio

    def step(name):
        model, task, opt, b = setups[name]
        with torch.autocast(dev.type, amp) if amp else nullcontext():
            loss = task(model(b["image"]), b)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for name in setups:
        step(name)  # warm-up
    speeds = {name: [] for name in setups}
    for _ in range(rounds):
        for name in setups:
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                step(name)
            sync()
            speeds[name].append(steps * n / (time.perf_counter() - t0))
    setups.clear()
    return {name: {"img_per_s": v, "median": statistics.median(v)}
            for name, v in speeds.items()} | {"_batch": n, "_rounds": rounds,
                                               "_steps": steps}


def run(ctx: Context, init: str | None = None) -> None:
    p, tr = ctx.profile["cross-domain"], ctx.profile["train"]
    init = init or p.get("init", "mae")
    fer = open_fer2013(ctx.data_root)
    expr_all, _ = open_ckplus(ctx.data_root)
    train = limit(relabel(fer["Training"], LSD, drop_unlabelled=True), p["train_limit"],
                  ctx.seed)
    val = limit(relabel(fer["PublicTest"], LSD, drop_unlabelled=True), p["val_limit"],
                ctx.seed)
    fer_test = limit(relabel(fer["PrivateTest"], LSD, drop_unlabelled=True), p["test_limit"],
                     ctx.seed)
    ck = limit(relabel(expr_all, LSD, drop_unlabelled=True), p.get("ck_limit"), ctx.seed)
    ctx.results.set("data", {
        "train": {"split": "FER2013 Training, 6 LSD classes", "images": len(train),
                  "classes": class_counts(train)},
        "val": {"split": "FER2013 PublicTest, 6 LSD classes", "images": len(val)},
        "fer_test": {"split": "FER2013 PrivateTest, 6 LSD classes", "images": len(fer_test)},
        "test": {"split": "CK+48, 6 LSD classes (contempt dropped)", "images": len(ck),
                 "classes": class_counts(ck)},
        "classes": list(LSD.classes), "init": init,
    })
    names = [n for n in model_names(p, init) if ctx.wants(n)]
    try:
        weights = ctx.init_weights(init)
    except NotMeasured as e:
        for n in names:
            ctx.results.skip(n, str(e))
        return
    configs, specs = {}, {n: parse_model(n) for n in names}
    for name, spec in specs.items():
        configs[name] = model_config(
            spec["kind"], tr, run_dir=ctx.work / "cross-domain" / name, seed=ctx.seed,
            epochs=p["epochs"], data_root=ctx.data_root / "fer2013",
            pretrained=weights if spec["init"] == init else None,
            mask_ratio=spec["mask_ratio"], num_classes=len(LSD), expr_labels="lsd")
    if p.get("probe_rounds") and configs:
        log.info("cross-domain: speed probe over %d models", len(configs))
        probe = speed_probe({n: c for n, (c, _) in configs.items()}, train, tr["batch"],
                            p["probe_rounds"], p["probe_steps"])
        extra = dict(ctx.results.data.get("extra") or {})
        extra["speed_probe"] = {**(extra.get("speed_probe") or {}), **probe}
        ctx.results.set("extra", extra)
        log.info("cross-domain: probe img/s %s", {n: round(v["median"], 1)
                                                  for n, v in probe.items()
                                                  if not n.startswith("_")})
    for name, (cfg, ov) in configs.items():
        log.info("cross-domain %s: training on %d FER2013 images, %d epochs", name,
                 len(train), p["epochs"])
        model, info = train_and_load(cfg, ov, train, val, ctx.work / "cross-domain" / name)
        t0 = time.perf_counter()
        labels = model_labels(cfg)
        on_ck = expression_eval(predict(model, ck, cfg, tr["eval_batch"]), labels, ck, LSD)
        on_fer = expression_eval(predict(model, fer_test, cfg, tr["eval_batch"]), labels,
                                 fer_test, LSD)
        on_val = expression_eval(predict(model, val, cfg, tr["eval_batch"]), labels, val, LSD)
        on_val.pop("pred")
        on_val.pop("truth")
        ctx.results.model(name, {
            "kind": specs[name]["kind"], "init": specs[name]["init"],
            "mask_ratio": cfg.model.mask_ratio, "backbone": cfg.model.backbone,
            "img_size": cfg.data.img_size, "ckplus": on_ck, "fer_private": on_fer,
            "fer_public": on_val, "train": info,
            "eval_wall_s": round(time.perf_counter() - t0, 1)})
        log.info("cross-domain %s: CK+ P_LSD %.4f (acc %.4f); FER PrivateTest F1 %.4f; "
                 "%.0f train img/s", name, on_ck["p_lsd"], on_ck["acc"], on_fer["f1"],
                 info["train_img_per_s"] or 0)
