"""FER2013, 7 expressions: train on Training, select the epoch on PublicTest, report
PrivateTest accuracy and macro F1.

Models (the profile's ``fer2013.models``):

- ``cnn``: a timm CNN from random init (ResNet-18 on cpu, ResNet-50 on gpu), recipe
  ``cnn-mtl``;
- ``vit-random``: one ViT from random init, recipe ``vit-mtl``;
- ``vit-mae``: the same ViT initialised from an MAE pretrained by the library
  (``mae-face-tiny`` / ``mae-face``) on the FER2013 Training images, labels unused;
- ``cotex-mae``: masked CoTEX (recipe ``cotex-lsd``, 7 classes, mask ratio 0.75), both
  views from that MAE encoder;
- ``<model>-eqtime`` (e.g. ``cotex-mae-eqtime``): the same model trained for the training
  *time* of the profile's ``equal_time_reference`` instead of its epochs: the epochs are
  scaled by the two models' speed ratio, measured in this process by an interleaved probe
  on one resident batch (``cross_domain.speed_probe``), and the runs' own img/s are recorded
  beside it.

``cnn``, ``vit-*`` are the library's single-backbone multi-task models: their expression
head has ABAW's 8 classes, FER2013's 7 map onto them by name (only AU and VA heads go
unused: their losses are 0 without labels), and they are scored on the 7 FER classes
(the 'Other' column, never a training target, is left out of the argmax; how often the
unrestricted argmax picked it is recorded). CoTEX has a 7-class head in FER2013's order.
"""

from __future__ import annotations

import logging
import time

from affectkit.engine.build import model_labels
from affectkit.labels import FER2013

from .common import (
    Context,
    NotMeasured,
    class_counts,
    expression_eval,
    limit,
    model_config,
    open_fer2013,
    parse_model,
    predict,
    relabel,
    train_and_load,
)
from .cross_domain import speed_probe

log = logging.getLogger("benchmarks.real.fer2013")

PUBLISHED = [  # FER2013 PrivateTest accuracy (shared/data/README.md)
    ("human", 0.65, "~65%"),
    ("mini-Xception", 0.66, "~66%"),
    ("best single model (VGG variant, Khaireddin & Chen 2021)", 0.733, "73.3%"),
    ("ensembles with extra data", 0.755, "~75-76%"),
]


def run(ctx: Context) -> None:
    p, tr = ctx.profile["fer2013"], ctx.profile["train"]
    fer = open_fer2013(ctx.data_root)
    train = limit(fer["Training"], p["train_limit"], ctx.seed)
    val = limit(fer["PublicTest"], p["val_limit"], ctx.seed)
    test = limit(fer["PrivateTest"], p["test_limit"], ctx.seed)
    ctx.results.set("data", {
        "train": {"split": "Training", "images": len(train), "classes": class_counts(train)},
        "val": {"split": "PublicTest", "images": len(val)},
        "test": {"split": "PrivateTest", "images": len(test), "classes": class_counts(test)},
        "classes": list(FER2013.classes),
    })
    ctx.results.set("extra", {"published_private_acc": PUBLISHED})

    def config(spec: dict, name: str, epochs: int):
        return model_config(
            spec["kind"], tr, run_dir=ctx.work / "fer2013" / name, seed=ctx.seed,
            epochs=epochs, data_root=ctx.data_root / "fer2013",
            pretrained=ctx.init_weights(spec["init"]), mask_ratio=spec["mask_ratio"],
            num_classes=len(FER2013), expr_labels="fer2013")

    for name in p["models"]:
        if not ctx.wants(name):
            continue
        spec = parse_model(name)
        try:
            ctx.init_weights(spec["init"])  # pretrains the MAE on first use
        except NotMeasured as e:
            ctx.results.skip(name, str(e))
            continue
        equal_time = None
        epochs = p["epochs"]
        if spec.get("equal_time"):
            ref = p["equal_time_reference"]
            try:
                equal_time = _equal_time(ctx, train, ref, name, config)
            except NotMeasured as e:
                ctx.results.skip(name, str(e))
                continue
            epochs = equal_time["epochs"]
        cfg, ov = config(spec, name, epochs)
        log.info("fer2013 %s: training %s (%d images, %d epochs)", name, cfg.recipe,
                 len(train), cfg.optim.epochs)
        model, info = train_and_load(cfg, ov, train, val, ctx.work / "fer2013" / name)
        t0 = time.perf_counter()
        labels = model_labels(cfg)
        private = expression_eval(predict(model, test, cfg, tr["eval_batch"]), labels, test,
                                  FER2013)
        public = expression_eval(predict(model, val, cfg, tr["eval_batch"]), labels, val,
                                 FER2013)
        for k in ("pred", "truth"):
            public.pop(k)
        ctx.results.model(name, {
            **spec, "backbone": cfg.model.backbone, "img_size": cfg.data.img_size,
            "private": private, "public": public, "train": info,
            "eval_wall_s": round(time.perf_counter() - t0, 1),
            **({"equal_time": equal_time} if equal_time else {}),
        })
        log.info("fer2013 %s: PrivateTest acc %.4f, macro F1 %.4f (PublicTest F1 %.4f, "
                 "best epoch %d, %.0f train img/s)", name, private["acc"], private["f1"],
                 public["f1"], info["best_epoch"], info["train_img_per_s"] or 0)


def _equal_time(ctx: Context, train, ref: str, name: str, config) -> dict:
    """How many epochs ``name`` trains to spend the time ``ref`` spends on the profile's
    epochs: an interleaved speed probe of both models (same process, same resident batch
    of real faces) gives the img/s ratio; the epochs are the reference's times it,
    rounded (at least 1). Recorded in the results with the probe."""
    p, tr = ctx.profile["fer2013"], ctx.profile["train"]
    base = name[:-len("-eqtime")]
    cfgs = {n: config(parse_model(n), n, p["epochs"])[0] for n in (ref, base)}
    labels = model_labels(cfgs[base])
    probe = speed_probe(cfgs, relabel(train, labels), tr["batch"],
                        p.get("probe_rounds", 3), p.get("probe_steps", 2))
    ratio = probe[base]["median"] / probe[ref]["median"]
    epochs = max(1, round(p["epochs"] * ratio))
    log.info("fer2013 %s: %s trains %.2fx as fast as %s: %d epochs for %s's %d", name, base,
             ratio, ref, epochs, ref, p["epochs"])
    return {"reference": ref, "reference_epochs": p["epochs"], "speed_ratio": round(ratio, 3),
            "epochs": epochs,
            "probe_img_per_s": {n: round(v["median"], 1) for n, v in probe.items()
                                if not n.startswith("_")}}
