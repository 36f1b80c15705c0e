"""Checkpoint files: reading any of the formats met in the field into a timm model, and
writing affectkit's own.

Formats read: the official MAE dict ``{"model": encoder + decoder}``, DeiT/MAE training
dumps (``model`` beside ``optimizer``, ``epoch``, ``args``), ``state_dict`` /
``model_state_dict`` wrappers, DDP's ``module.`` prefix, affectkit checkpoints of a whole
wrapper model (``backbone.model.*``), ``.safetensors`` and bare state dicts. Pickles are
read with ``weights_only=True``: a checkpoint is data and must not run code. Loading
fails loudly when the file does not hold the weights it claims to, because a ViT that
silently keeps its random init still trains, just badly.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
from collections import Counter
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..io import atomic_write

_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
_DDP_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def _sniff(path: Path) -> str:
    """What the first bytes say: a torch zip, a legacy pickle, or something else."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return f"neither a torch zip nor a pickle (starts with {head!r})"


def _torch_load(path: Path):
    kind = _sniff(path)
    if kind not in ("zip", "pickle"):
        raise ValueError(f"{path} is not a PyTorch checkpoint: {kind}")
    # MAE/DeiT training dumps keep their argparse options under "args": plain data
    safe = getattr(torch.serialization, "safe_globals", None)
    ctx = safe([argparse.Namespace]) if safe else contextlib.nullcontext()
    try:
        with ctx:
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = str(exc)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
        if found or "Weights only load failed" in msg:
            what = f"a pickled {found.group(1)}" if found else "pickled Python objects"
            raise ValueError(
                f"{path} holds {what}, which weights_only loading refuses (unpickling it "
                "could run code). If you trust the file, re-save just its tensors "
                "(torch.save(model.state_dict(), ...) or safetensors) where it was made"
            ) from exc
        first = msg.strip().splitlines()[0] if msg.strip() else ""
        raise ValueError(f"{path} is a corrupt or truncated checkpoint "
                         f"({type(exc).__name__}: {first})") from exc


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise ValueError(f"{path} is not a readable safetensors file ({exc})") from exc


def _strip_ddp(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for p in _DDP_PREFIXES:
            k = k.removeprefix(p)
        out[k] = v
    return out


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped (``model`` / ``state_dict`` /
    ``model_state_dict``) and without DDP's ``module.`` prefix.

    ``.safetensors`` by extension, anything else through ``torch.load(weights_only=True)``.
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and
    what it holds when it is not a checkpoint (text, truncated, pickled objects).
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise FileNotFoundError(f"checkpoint {path} {what}")
    obj = _load_safetensors(path) if path.suffix == ".safetensors" else _torch_load(path)
    while isinstance(obj, dict):  # nested wrappers: {"state_dict": {"model": ...}} is rare
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path} holds no state dict: found {type(obj).__name__}"
                         + (" (empty)" if isinstance(obj, dict) else ""))
    other = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if other:
        raise ValueError(
            f"{path} holds no state dict: {len(other)} of its {len(obj)} entries are not "
            f"tensors, e.g. {other[:10]}; expected tensors, bare or under one of "
            f"{list(_WRAPPER_KEYS)}")
    return _strip_ddp(obj)


def resample_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int],
                       num_prefix: int) -> torch.Tensor:
    """(1, P + H*W, D) -> (1, P + grid[0]*grid[1], D): the patch part resized bicubically on
    its square 2D grid (as MAE and DeiT fine-tune at a new size), the P prefix rows kept.

    timm's ``resample_abs_pos_embed`` does the resizing; this checks first that the file's
    grid is square (timm would assume it) and antialiases only when shrinking, so growing
    the grid is plain bicubic as in MAE's own ``interpolate_pos_embed``."""
    n = pos_embed.shape[1] - num_prefix
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"pos_embed has {n} patch positions after {num_prefix} prefix "
                         "tokens: not a square grid")
    if (side, side) == tuple(grid):
        return pos_embed
    return resample_abs_pos_embed(pos_embed, list(grid), old_size=[side, side],
                                  num_prefix_tokens=num_prefix,
                                  antialias=grid[0] * grid[1] < n)


def resample_patch_proj(weight: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """A patch embedding's conv kernel (D, C, h, w) -> (D, C, *patch_size).

    timm's ``resample_patch_embed`` (FlexiViT's pseudo-inverse resize) keeps each token's
    embedding of a resized patch close to the original's, so weights pretrained at patch 16
    start a patch-8 model from what they learned rather than from noise."""
    if tuple(weight.shape[-2:]) == tuple(patch_size):
        return weight
    return resample_patch_embed(weight, list(patch_size))


def _classifier_names(model: nn.Module) -> tuple[str, ...]:
    cls = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head"
    return (cls,) if isinstance(cls, str) else tuple(cls)


def _under(key: str, names) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)


def is_mae_decoder_key(key: str) -> bool:
    """Keys only MAE pretraining has (its decoder and mask token): their presence marks an
    official MAE checkpoint, whose images are normalised with ImageNet statistics."""
    return key.startswith("decoder_") or key == "mask_token"


def _mae_to_timm(state: dict, model: VisionTransformer) -> tuple[dict, list[str]]:
    own = model.state_dict()
    out, dropped = {}, []
    for k, v in state.items():
        if is_mae_decoder_key(k):
            dropped.append(k)
        elif _under(k, _classifier_names(model)) and (k not in own or own[k].shape != v.shape):
            dropped.append(k)  # a new head is the point of fine-tuning
        elif _under(k, ("norm", "fc_norm")) and k not in own:
            # The final LayerNorm sits on the tokens for CLS pooling (norm) and after the
            # average for global pooling (fc_norm, MAE's fine-tuning). One trained on the
            # other side normalised something else: MAE starts the new one fresh, so do we.
            dropped.append(k)
        else:
            out[k] = v
    proj, own_proj = out.get("patch_embed.proj.weight"), own.get("patch_embed.proj.weight")
    if (proj is not None and own_proj is not None and proj.ndim == own_proj.ndim == 4
            and proj.shape[:2] == own_proj.shape[:2]):  # same width and channels
        out["patch_embed.proj.weight"] = resample_patch_proj(proj, own_proj.shape[-2:])
    pe = out.get("pos_embed")
    if pe is not None and "pos_embed" in own and pe.shape != own["pos_embed"].shape:
        prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        out["pos_embed"] = resample_pos_embed(pe, model.patch_embed.grid_size, prefix)
    return out, dropped


def mae_to_timm(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """An official MAE checkpoint's tensors -> the keys and shapes of timm ViT ``model``.

    MAE's encoder names are timm's already (``patch_embed.proj``, ``cls_token``,
    ``pos_embed``, ``blocks.N.*``, ``norm``/``fc_norm``); this drops the decoder
    (``decoder_*``, ``mask_token``), a head that does not fit, and a final norm on the
    wrong side of the pooling (see ``load_pretrained``), resamples the patch embedding's
    kernel when the patch size differs (``resample_patch_proj``), and resizes ``pos_embed``
    bicubically when the patch grid differs (new image or patch size).
    """
    return _mae_to_timm(state_dict, model)[0]


def _timm_model(module: nn.Module) -> nn.Module:
    """The timm model a checkpoint loads into: ``module`` itself, or the one a wrapper
    holds as ``.model`` (``Backbone``). Duck-typed so this module need not import
    ``backbone`` (which imports it); timm models carry ``pretrained_cfg`` and are never
    taken for a wrapper."""
    inner = getattr(module, "model", None)
    if isinstance(inner, nn.Module) and not hasattr(module, "pretrained_cfg"):
        return inner
    return module


def _strip_wrapper(state: dict, own) -> tuple[dict, list[str]]:
    """Cut a wrapper's prefix (``model.``, ``backbone.model.``, ``views.0.model.``): the
    prefix under which most keys name one of ``own`` wins; keys outside it are dropped."""
    counts: Counter[str] = Counter()
    for k in state:
        parts = k.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in own:
                counts[".".join(parts[:i])] += 1
                break
    if not counts or counts.most_common(1)[0][0] == "":
        return state, []
    p = counts.most_common(1)[0][0] + "."
    kept = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
    return kept, [k for k in state if not k.startswith(p)]


def load_pretrained(backbone_model: nn.Module, path_or_state, strict_encoder: bool = True
                    ) -> dict[str, list[str]]:
    """Load a checkpoint file (or a state dict) into a timm model (or a ``Backbone``).

    Returns ``missing`` (model keys left at init), ``unexpected`` (file keys the model
    lacks, ignored) and ``dropped`` (decoder, old head, keys outside a wrapper's prefix).
    A ViT takes weights of another patch size or image size: its patch embedding and
    position embedding are resampled to the model's (see ``mae_to_timm``).
    Raises ``ValueError`` naming the source and up to 10 keys when no key matches (the
    file is some other network), when shapes disagree, or, with ``strict_encoder``, when
    anything but the new head / final norm would stay at its random init.
    """
    model = _timm_model(backbone_model)
    if isinstance(path_or_state, (str, os.PathLike)):
        source, state = str(path_or_state), load_state_dict_file(path_or_state)
    else:
        source, state = "the given state dict", _strip_ddp(dict(path_or_state))
    name = type(model).__name__
    own = model.state_dict()
    had_fc_norm = "fc_norm.weight" in state or any(k.endswith(".fc_norm.weight") for k in state)
    state, dropped = _strip_wrapper(state, own)
    if isinstance(model, VisionTransformer):
        state, more = _mae_to_timm(state, model)
    else:
        classifier = _classifier_names(model)
        more = [k for k, v in state.items()
                if _under(k, classifier) and (k not in own or own[k].shape != v.shape)]
        state = {k: v for k, v in state.items() if k not in more}
    dropped += more
    if not any(k in own for k in state):
        raise ValueError(f"no key of {source} matches {name}: it has e.g. {list(state)[:10]}, "
                         f"the model expects e.g. {list(own)[:10]}")
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state.items() if k in own and v.shape != own[k].shape]
    if shapes:
        raise ValueError(f"{source} does not fit {name} ({len(shapes)} shape mismatches): "
                         f"{shapes[:10]}")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    fresh = (*_classifier_names(model), "fc_norm", *(("norm",) if had_fc_norm else ()))
    encoder_missing = [k for k in missing if not _under(k, fresh)]
    if strict_encoder and encoder_missing:
        raise ValueError(f"{source} lacks {len(encoder_missing)} encoder weights of {name}: "
                         f"{encoder_missing[:10]}")
    model.load_state_dict(state, strict=False)
    return {"missing": missing, "unexpected": unexpected, "dropped": dropped}


def save_checkpoint(path: str | os.PathLike, model_state: dict[str, torch.Tensor],
                    **extra) -> Path:
    """Write ``{"model": model_state, **extra}`` atomically (a killed run leaves the old file).

    ``extra`` (epoch, config, metrics...) must be what ``weights_only`` loading accepts:
    tensors, numbers, strings, lists, dicts. A ``.safetensors`` path writes the tensors
    alone, with string-valued ``extra`` as its metadata.
    """
    if "model" in extra:
        raise ValueError("'model' is the key of the weights; name the extra entry otherwise")
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        bad = [k for k, v in extra.items() if not isinstance(v, str)]
        if bad:
            raise ValueError(f"safetensors metadata must be strings, got {bad}")
        tensors = {k: v.detach().cpu().contiguous() for k, v in model_state.items()}
        return atomic_write(path, lambda f: f.write(save(tensors, metadata=extra or None)))
    return atomic_write(path, lambda f: torch.save({"model": model_state, **extra}, f))


def save_mae_checkpoint(path: str | os.PathLike, encoder_state: dict[str, torch.Tensor]) -> Path:
    """The official MAE format ``{"model": encoder_state}``, timm ViT key names
    (``backbone.model.state_dict()``), readable by MAE's own fine-tuning code."""
    if "patch_embed.proj.weight" not in encoder_state:
        hint = ("; pass backbone.model.state_dict(), not the Backbone's"
                if "model.patch_embed.proj.weight" in encoder_state else "")
        raise ValueError(f"not a ViT encoder state: no 'patch_embed.proj.weight'{hint}")
    return save_checkpoint(path, encoder_state)
