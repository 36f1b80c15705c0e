"""Sizes of the real-data benchmarks: ``smoke`` (checks the harness in minutes), ``cpu``
(2 cores, each benchmark under 45 min), ``cpu-long`` (FER2013's two ViTs trained 4x as
long as on ``cpu``) and ``gpu`` (the paper's model and input sizes).

Every model of one benchmark and profile trains with the same optimiser, schedule,
batch, input size and augmentation; only what a comparison is about changes (the
initialisation, one or two views, the mask ratio). The paper ties larger mask ratios to
larger batches (Table 6); here the batch is held fixed so that the mask ratio is the only
difference (the paper's own "mask 75%, batch 64" row is the matching comparison).

Why these sizes:

- FER2013 and CK+ are 48x48 grayscale faces. timm's ViT-Tiny exists only with 16 px
  patches and affectkit's ``create_backbone`` cannot change the patch size, so the cpu
  profile upsamples the faces to 64 px: a 4x4 grid of 16 px patches (each 12x12 pixels
  of the original face), 16 tokens + CLS. 96 px (6x6 = 36 tokens) would be the same
  patch granularity as patch 8 at 48 px, but costs ~2.5x as much and does not fit 45 min.
- gpu: ViT-B/16 at 224 (the 48 px faces upsampled, as the paper upsamples its 112 px
  crops to 224), ResNet-50 as the CNN (the paper's baseline; random init here, because
  the benchmark hosts have no network for ImageNet weights), MAE with the MAE paper's
  8-block 512-d decoder.
- No profile uses layer-wise lr decay: it would be right for the MAE-initialised models
  and wrong for the randomly initialised ones, and one setting for all keeps the
  comparison about the initialisation alone.
"""

from __future__ import annotations

import copy

# The shared training settings of one profile (optimiser, input, loader); each benchmark
# adds its epochs and image limits. ``lr`` is the learning rate at the effective batch
# ``batch x accum`` (the configs get ``optim.base_lr = lr * 256 / (batch x accum)``).
_CPU_TRAIN = {
    "vit": "vit_tiny_patch16_224",
    "cnn": "resnet18",
    "img_size": 64,
    "resize": 70,  # random 64 px crop of the face upsampled to 70 px
    "cnn_img_size": 48,  # the CNN at the faces' own 48 px (random 48 px crop of 52 px)
    "cnn_resize": 52,
    "jitter": 0.2,  # brightness / contrast (the faces are grayscale: saturation is a no-op)
    # crop, flip and jitter batched (BatchAugment): on 2 cores with no DataLoader worker
    # 6.9x cheaper per image than per-sample transforms at 48 -> 64 px (1.56 -> 0.23 ms)
    "augment": "batch",
    "batch": 64,
    "accum": 1,  # gradient accumulation: effective batch = batch x accum
    "lr": 1e-3,
    "weight_decay": 0.05,
    "clip_grad": 1.0,
    "drop_path": 0.0,
    "warmup_epochs": 0.25,
    "num_workers": 0,  # 2 cores: a worker competes with the model (performance-notes.md)
    "amp": "off",
    "log_every": 200,  # last.pt every 200 steps (resume after a kill)
    "eval_batch": 256,
}

_GPU_TRAIN = {
    **_CPU_TRAIN,
    "vit": "vit_base_patch16_224",
    "cnn": "resnet50",
    "img_size": 224,
    "resize": 232,  # the paper's 232 -> random crop 224
    "cnn_img_size": 224,
    "cnn_resize": 232,
    "batch": 128,  # x 2 accumulated = 256; two unmasked ViT-B views at 256 need ~80 GB
    "accum": 2,
    "lr": 5e-4,  # the paper's base lr 5e-4 at effective batch 256
    "drop_path": 0.1,
    "warmup_epochs": 2,
    "num_workers": 10,
    "augment": "batch",  # on the GPU: the CPU cannot feed a ViT-B at 224
    "amp": "auto",  # bf16 on CUDA
    "log_every": 100,
    "eval_batch": 512,
}

# The cpu profile's ViT sees 16 tokens (16 px patches at 64 px): too coarse to learn
# expressions in a CPU budget. Here ViT-Tiny's patch embedding is cut to 8 px at the faces'
# own 48 px: 36 tokens, each 8x8 pixels of the original face (model.patch_size).
_CPU_P8_TRAIN = {**_CPU_TRAIN, "img_size": 48, "resize": 52, "patch": 8}

# ~25 min: 8 epochs of the 28,453 Training faces at 64 px, 4 of 16 patches seen
_CPU_MAE = {"recipe": "mae-face-tiny", "epochs": 8, "warmup_epochs": 1, "batch": 64,
            "lr": 1.5e-3, "train_limit": None, "val_limit": None}

PROFILES: dict[str, dict] = {
    "smoke": {
        # 32 px: 2x2 patches, the harness in a minute (the numbers mean nothing)
        "train": {**_CPU_TRAIN, "batch": 32, "warmup_epochs": 0, "log_every": 1000,
                  "img_size": 32, "resize": 36, "cnn_img_size": 32, "cnn_resize": 36},
        # MAE pretraining: recipe + overrides on top of it
        "mae": {"recipe": "mae-face-tiny", "epochs": 1, "warmup_epochs": 0, "batch": 32,
                "lr": 1e-3, "train_limit": 128, "val_limit": 32},
        "fer2013": {"epochs": 1, "train_limit": 192, "val_limit": 64, "test_limit": 128,
                    "models": ["cnn", "vit-random", "vit-mae", "cotex-mae",
                               "cotex-random-eqtime"],
                    "equal_time_reference": "vit-random", "probe_rounds": 1,
                    "probe_steps": 1},
        "ckplus": {"folds": 2, "val_subject_fraction": 0.15, "au_epochs": 1,
                   "expr_epochs": 1, "batch": 32,
                   "au_models": ["cnn", "vit-random", "vit-mae"],
                   "expr_models": ["cotex-mae"]},
        "cross-domain": {"epochs": 1, "train_limit": 192, "val_limit": 64,
                         "test_limit": 128, "ck_limit": 128, "ratios": [0.0, 0.5, 0.75, 0.9],
                         "probe_rounds": 1, "probe_steps": 1},
    },
    "cpu": {
        # sized with `python -m benchmarks.real.estimate --profile cpu` on the 2-core VM
        # (2026-12-01: ResNet-18 @ 48 px 64 img/s, ViT-Tiny @ 64 px 87 img/s, model step
        # only) so that each benchmark, and the shared MAE stage, stays under 45 min
        "train": _CPU_TRAIN,
        "mae": _CPU_MAE,
        # 16,000 of the 28,709 Training faces (seeded) twice: ~35 min for the 4 models
        "fer2013": {"epochs": 2, "train_limit": 16000, "val_limit": None, "test_limit": None,
                    "models": ["cnn", "vit-random", "vit-mae", "cotex-mae"]},
        # ~31 min: 5 folds x (3 AU models + CoTEX) x 10 epochs of ~470 / ~670 faces
        "ckplus": {"folds": 5, "val_subject_fraction": 0.15, "au_epochs": 10,
                   "expr_epochs": 10, "batch": 32,
                   "au_models": ["cnn", "vit-random", "vit-mae"],
                   "expr_models": ["cotex-mae"]},
        # 10,000 of the 23,744 6-class Training faces (seeded), twice: ~39 min; CoTEX at
        # r = 0 (two unmasked views) is the slowest run, ~11 min; the CNN (~5 min) says
        # whether the task is learnable at this budget at all
        "cross-domain": {"epochs": 2, "train_limit": 10000, "val_limit": None,
                         "test_limit": None, "ck_limit": None, "ratios": [0.0, 0.5, 0.75, 0.9],
                         "probe_rounds": 3, "probe_steps": 2, "reference": ["cnn"]},
    },
    # One question the cpu profile leaves open: at its 2 epochs x 16,000 faces the ViTs
    # stay at the class prior, so face-MAE vs random init is not judged. Here the same
    # two ViTs train 8 epochs on all 28,709 Training faces (7x the images seen; ~30 min on
    # a fast day of the 2-core VM, ~80 on a slow one: over the cpu budget, hence its own
    # profile), from the cpu profile's own MAE run (``mae_from``: same settings, reused).
    "cpu-long": {
        "train": _CPU_TRAIN,
        "mae_from": "cpu",
        "mae": _CPU_MAE,
        "fer2013": {"epochs": 8, "train_limit": None, "val_limit": None, "test_limit": None,
                    "models": ["vit-random", "vit-mae"]},
    },
    # The papers' ViT comparisons at a fair CPU scale (issue 13, section 2): ViT-Tiny with 8
    # px patches at 48 px, an MAE pretrained at the same 36 tokens, all 28,709 Training
    # faces for ``epochs``, and masked CoTEX twice: at the ViT's epochs, and at the ViT's
    # training *time* (``-eqtime``: its epochs scaled by the measured speed ratio, the
    # saving that masking buys spent on more images, as the paper spends it on batch size).
    "cpu-p8": {
        "train": _CPU_P8_TRAIN,
        "mae": _CPU_MAE,
        "fer2013": {"epochs": 5, "train_limit": None, "val_limit": None, "test_limit": None,
                    "models": ["vit-mae", "cotex-mae-eqtime", "vit-random", "cotex-mae"],
                    "equal_time_reference": "vit-mae", "probe_rounds": 3, "probe_steps": 2},
        # the cpu profile's CK+ folds and models, at 36 tokens (~12 min; the CNN is the
        # cpu profile's own, so its results say the same: run with --models au/vit-random,
        # au/vit-mae,expr/cotex-mae to skip it)
        "ckplus": {"folds": 5, "val_subject_fraction": 0.15, "au_epochs": 10,
                   "expr_epochs": 10, "batch": 32,
                   "au_models": ["cnn", "vit-random", "vit-mae"],
                   "expr_models": ["cotex-mae"]},
        # all 23,744 6-class Training faces for 4 epochs (the cpu profile's 2 x 10,000 left
        # every ViT at the class prior; at 36 tokens vit-mae needs ~3 FER2013 epochs to
        # leave it); r = 0 (two unmasked views) is the slowest run
        "cross-domain": {"epochs": 4, "train_limit": None, "val_limit": None,
                         "test_limit": None, "ck_limit": None, "ratios": [0.0, 0.5, 0.75, 0.9],
                         "probe_rounds": 3, "probe_steps": 2},
    },
    "gpu": {
        "train": _GPU_TRAIN,
        # MAE paper settings except the length: 100 epochs of FER2013 Training (2.9M
        # images seen), effective batch 256 at base lr 1.5e-4 (lr = 1.5e-4 x 256 / 256)
        "mae": {"recipe": "mae-face", "epochs": 100, "warmup_epochs": 10, "batch": 256,
                "lr": 1.5e-4, "train_limit": None, "val_limit": None,
                "overrides": ["optim.accum_steps=1", "data.num_workers=10",
                              "run.log_every=100"]},
        "fer2013": {"epochs": 20, "train_limit": None, "val_limit": None, "test_limit": None,
                    "models": ["cnn", "vit-random", "vit-mae", "cotex-mae"]},
        "ckplus": {"folds": 10, "val_subject_fraction": 0.15, "au_epochs": 20,
                   "expr_epochs": 20, "batch": 64,
                   "au_models": ["cnn", "vit-random", "vit-mae"],
                   "expr_models": ["cotex-random", "cotex-mae"]},
        "cross-domain": {"epochs": 15, "train_limit": None, "val_limit": None,
                         "test_limit": None, "ck_limit": None, "ratios": [0.0, 0.5, 0.75, 0.9],
                         "probe_rounds": 5, "probe_steps": 3},
    },
}


BENCHMARKS = ("fer2013", "ckplus", "cross-domain")


def benchmarks_of(profile: dict) -> tuple[str, ...]:
    """The benchmarks a profile defines, in order."""
    return tuple(b for b in BENCHMARKS if b in profile)


def get_profile(name: str) -> dict:
    """A deep copy of profile ``name`` (callers may adjust it)."""
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; one of {sorted(PROFILES)}")
    return copy.deepcopy(PROFILES[name])
