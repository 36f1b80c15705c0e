"""How long each benchmark of a profile will take here: measures, in one process and in
a minute or two, the steady-state training speed of every model the profile trains (the
library's model and loss on a resident batch of real faces, interleaved rounds, median),
the per-image cost of the training input pipeline (decode + augmentation, serial with
``num_workers=0``) and of evaluation, then multiplies by the profile's images x epochs.

    python -m benchmarks.real.estimate --profile cpu

It trains nothing to the end and writes nothing but what it prints (``--json`` also
writes the figures). Shared-machine noise moves the estimate as much as it moves the runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.real.estimate",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=("smoke", "cpu", "gpu"), default="cpu")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities")
    logging.basicConfig(level=logging.WARNING)
    import torch

    from affectkit.config import load_config
    from affectkit.data.augment import eval_transform, train_batch_augment, train_transform
    from affectkit.data.dataset import FaceDataset, LoadResize
    from affectkit.engine.build import build_model
    from affectkit.engine.pretrain import build_mae_model, mae_batch_augment, mae_train_transform
    from affectkit.labels import ABAW_AU, CKPLUS, LSD

    from .common import (
        DEFAULT_DATA,
        device,
        environment,
        limit,
        model_config,
        open_ckplus,
        open_fer2013,
        parse_model,
        relabel,
    )
    from .cross_domain import model_names, speed_probe
    from .profiles import get_profile

    if args.threads:
        torch.set_num_threads(args.threads)
    prof = get_profile(args.profile)
    tr = prof["train"]
    data = args.data or DEFAULT_DATA
    fer = open_fer2013(data)
    expr_all, au_all = open_ckplus(data)
    env = environment()
    print(f"{env['device_name']}, {env['cores']} cores, {env['torch_threads']} torch threads; "
          f"profile {args.profile}")
    tmp = Path("/tmp/bench-real-estimate")

    # ---- model steps: every distinct model config of the profile
    configs = {}
    for name in prof["fer2013"]["models"]:
        s = parse_model(name)
        configs[f"fer/{name}"] = model_config(
            s["kind"], tr, run_dir=tmp, seed=0, epochs=1, data_root=data,
            mask_ratio=s["mask_ratio"], num_classes=7, expr_labels="fer2013")[0]
    pc = prof["ckplus"]
    for name in pc["au_models"]:
        s = parse_model(name)
        configs[f"ck-au/{name}"] = model_config(
            s["kind"], tr, run_dir=tmp, seed=0, epochs=1, data_root=data, batch=pc["batch"],
            extra=("loss.au_pos_weight=true",))[0]
    for name in pc["expr_models"]:
        s = parse_model(name)
        configs[f"ck-expr/{name}"] = model_config(
            s["kind"], tr, run_dir=tmp, seed=0, epochs=1, data_root=data, batch=pc["batch"],
            mask_ratio=s["mask_ratio"], num_classes=len(CKPLUS), expr_labels="ckplus")[0]
    pcd = prof["cross-domain"]
    for name in model_names(pcd, "mae"):
        s = parse_model(name)
        configs[f"cross/{name}"] = model_config(
            s["kind"], tr, run_dir=tmp, seed=0, epochs=1, data_root=data,
            mask_ratio=s["mask_ratio"], num_classes=len(LSD), expr_labels="lsd")[0]
    # identical configs measure once
    uniq: dict[str, str] = {}
    for k, c in configs.items():
        key = json.dumps([c.model.kind, c.model.backbone, c.model.mask_ratio,
                          c.model.num_classes, c.optim.batch_size, c.data.img_size])
        uniq.setdefault(key, k)
    train_fer = limit(fer["Training"], 512, 0)
    t0 = time.perf_counter()
    speeds = {}
    for batch in sorted({c.optim.batch_size for c in configs.values()}):
        group = {k: configs[k] for k in uniq.values() if configs[k].optim.batch_size == batch}
        tbl = train_fer if batch == tr["batch"] else relabel(expr_all, CKPLUS)
        probe = speed_probe(group, tbl, batch, args.rounds, args.steps)
        speeds.update({k: v["median"] for k, v in probe.items() if not k.startswith("_")})
    for k, c in configs.items():
        key = json.dumps([c.model.kind, c.model.backbone, c.model.mask_ratio,
                          c.model.num_classes, c.optim.batch_size, c.data.img_size])
        speeds[k] = speeds[uniq[key]]

    # ---- MAE step
    mp = prof["mae"]
    mae_cfg = load_config(mp["recipe"], [
        "data.root=x", "data.layout=images", f"data.img_size={tr['img_size']}",
        f"data.resize={tr['img_size']}", f"model.backbone={tr['vit']}",
        f"optim.batch_size={mp['batch']}", *mp.get("overrides", [])])
    dev = device()
    mae = build_mae_model(mae_cfg).to(dev).train()
    opt = torch.optim.AdamW(mae.parameters(), 1e-4)
    x = torch.randn(mp["batch"], 3, tr["img_size"], tr["img_size"], device=dev)
    amp = torch.bfloat16 if dev.type == "cuda" else None

    def mae_step():
        with torch.autocast(dev.type, amp) if amp else _null():
            loss = mae(x)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    mae_step()
    mae_ips = []
    for _ in range(args.rounds):
        _sync(dev)
        t = time.perf_counter()
        for _ in range(args.steps):
            mae_step()
        _sync(dev)
        mae_ips.append(args.steps * mp["batch"] / (time.perf_counter() - t))
    speeds["mae"] = statistics.median(mae_ips)
    mae = opt = None  # free before the eval measurements

    # ---- input pipeline (serial) and evaluation, per image
    def per_image(ds, n=256):
        n = min(n, len(ds))
        t = time.perf_counter()
        for i in range(n):
            ds[i]
        return (time.perf_counter() - t) / n

    def per_image_batched(aug, n_batches=4):
        """Decode per sample + collate + ``aug`` on the whole batch (data.augment=batch)."""
        ds = FaceDataset(train_fer, LoadResize(None))
        aug = aug.to(dev)
        bs = tr["batch"]
        t = time.perf_counter()
        for b in range(n_batches):
            x = ds.collate([ds[i] for i in range(b * bs, (b + 1) * bs)])["image"]
            aug(x.to(dev))
        _sync(dev)
        return (time.perf_counter() - t) / (n_batches * bs)

    if tr.get("augment") == "batch":
        d_train = per_image_batched(train_batch_augment(tr["img_size"], tr["resize"],
                                                        tr["jitter"], 0.0))
        d_mae = per_image_batched(mae_batch_augment(tr["img_size"]))
    else:
        d_train = per_image(FaceDataset(train_fer, train_transform(
            tr["img_size"], tr["resize"], tr["jitter"], 0.0)))
        d_mae = per_image(FaceDataset(train_fer, mae_train_transform(tr["img_size"])))
    d_eval = per_image(FaceDataset(train_fer, eval_transform(tr["img_size"])))
    evals = {}
    for k in ("fer/vit-random", "fer/cotex-mae", "fer/cnn"):
        if k not in configs:
            continue
        m = build_model(configs[k]).to(dev).eval()
        size = configs[k].data.img_size
        xb = torch.randn(tr["eval_batch"], 3, size, size, device=dev)
        with torch.no_grad(), torch.autocast(dev.type, amp) if amp else _null():
            m(xb)
            _sync(dev)
            t = time.perf_counter()
            m(xb)
            _sync(dev)
        evals[k] = 1 / ((time.perf_counter() - t) / tr["eval_batch"] + d_eval)
    eval_ips = statistics.median(evals.values()) if evals else 500.0
    cotex_eval = evals.get("fer/cotex-mae", eval_ips)
    measure_s = time.perf_counter() - t0

    def train_s(key, images, epochs, data_cost=d_train):
        """Model steps + serial input pipeline, and what a run does besides: building
        the model, and per epoch last.pt / best.pt writes and the validation loader
        (measured on the 2-core VM: ~4 s per run, ~0.5 s per epoch per ViT-Tiny view)."""
        ips = 1 / (1 / speeds[key] + (data_cost if tr["num_workers"] == 0 else 0))
        views = 2 if "cotex" in key else 1
        return images * epochs / ips + 4 + 0.5 * views * epochs

    def ev_s(key, images):
        return images / (cotex_eval if "cotex" in key else eval_ips)

    n_fer = {"train": len(fer["Training"]), "val": len(fer["PublicTest"]),
             "test": len(fer["PrivateTest"])}
    pf = prof["fer2013"]
    n_tr = min(n_fer["train"], pf["train_limit"] or 10**9)
    n_va = min(n_fer["val"], pf["val_limit"] or 10**9)
    n_te = min(n_fer["test"], pf["test_limit"] or 10**9)
    n_mae = min(int(n_fer["train"] * 0.98), mp.get("train_limit") or 10**9)
    mae_s = n_mae * mp["epochs"] / (1 / (1 / speeds["mae"] + d_mae))
    rows = {"mae (shared pretraining, once per profile and seed)": mae_s}
    fer_s = {}
    for name in pf["models"]:
        k = f"fer/{name}"
        fer_s[name] = (train_s(k, n_tr, pf["epochs"]) + ev_s(k, n_va) * pf["epochs"]
                       + ev_s(k, n_va + n_te))
    rows["fer2013 (without MAE)"] = sum(fer_s.values())
    au_n = len(au_all.with_au_labels(ABAW_AU))
    ex_n = len(expr_all)
    k_folds = pc["folds"]
    ck_s = {}
    for name in pc["au_models"]:
        k = f"ck-au/{name}"
        per = (train_s(k, au_n * (k_folds - 1) / k_folds * 0.85, pc["au_epochs"])
               + ev_s(k, au_n / k_folds * 0.15 * (pc["au_epochs"] + 1) + au_n / k_folds))
        ck_s[f"au/{name}"] = per * k_folds
    for name in pc["expr_models"]:
        k = f"ck-expr/{name}"
        per = (train_s(k, ex_n * (k_folds - 1) / k_folds * 0.85, pc["expr_epochs"])
               + ev_s(k, ex_n / k_folds * 0.15 * (pc["expr_epochs"] + 1) + ex_n / k_folds))
        ck_s[f"expr/{name}"] = per * k_folds
    rows["ckplus (without MAE)"] = sum(ck_s.values())
    n6 = len(relabel(fer["Training"], LSD, drop_unlabelled=True))
    n6v = len(relabel(fer["PublicTest"], LSD, drop_unlabelled=True))
    n6t = len(relabel(fer["PrivateTest"], LSD, drop_unlabelled=True))
    n_ck = len(relabel(expr_all, LSD, drop_unlabelled=True))
    n6 = min(n6, pcd["train_limit"] or 10**9)
    cd_s = {}
    for name in model_names(pcd, "mae"):
        k = f"cross/{name}"
        cd_s[name] = (train_s(k, n6, pcd["epochs"]) + ev_s(k, n6v) * (pcd["epochs"] + 1)
                      + ev_s(k, n6t + n_ck))
    probe_s = sum(len(cd_s) * pcd["probe_rounds"] * pcd["probe_steps"] * tr["batch"]
                  / speeds[f"cross/{n}"] for n in cd_s) / max(len(cd_s), 1) + 30
    rows["cross-domain (without MAE)"] = sum(cd_s.values()) + probe_s

    print(f"\nmeasured in {measure_s:.0f} s; steady-state training img/s (model step only):")
    for k in configs:
        print(f"  {k:28s} {speeds[k]:8.1f}")
    print(f"  {'mae':28s} {speeds['mae']:8.1f}")
    print(f"input pipeline per image ({tr.get('augment', 'auto')} augmentation): train "
          f"{1e3 * d_train:.2f} ms, MAE {1e3 * d_mae:.2f} ms, "
          f"eval {1e3 * d_eval:.2f} ms; eval img/s {eval_ips:,.0f} (cotex {cotex_eval:,.0f})")
    print("\nestimated wall time (minutes):")
    for k, v in rows.items():
        print(f"  {k:45s} {v / 60:6.1f}")
    for k, v in {**{f'fer2013 {n}': s for n, s in fer_s.items()},
                 **{f'ckplus {n}': s for n, s in ck_s.items()},
                 **{f'cross-domain {n}': s for n, s in cd_s.items()}}.items():
        print(f"    {k:43s} {v / 60:6.1f}")
    first = {b: rows[f"{b} (without MAE)"] / 60 for b in ("fer2013", "ckplus", "cross-domain")}
    print("\nper benchmark, run first in a fresh work folder (MAE included) / after "
          "`run mae`:")
    for b, m in first.items():
        print(f"  {b:14s} {m + mae_s / 60:6.1f} / {m:6.1f}")
    if args.json:
        from affectkit.io import atomic_write_json

        atomic_write_json(args.json, {"environment": env, "profile": args.profile,
                                      "img_per_s": speeds, "rows_s": rows,
                                      "per_image_s": {"train": d_train, "mae": d_mae,
                                                      "eval": d_eval}})
    return 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    sys.exit(main())
