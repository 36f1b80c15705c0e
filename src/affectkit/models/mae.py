"""MAE (He et al. 2022): a ViT encoder over the visible patches, a light decoder that
reconstructs the masked ones, loss on the masked patches only.

The encoder is the timm ViT inside a ``Backbone`` (``MAE.encoder.model``), so what it
learns exports as the official MAE encoder checkpoint (timm key names, no head) that
EMMA, CoTEX and MAE's own fine-tuning code load unchanged. The decoder uses the official
key names too (``decoder_embed``, ``mask_token``, ``decoder_pos_embed``,
``decoder_blocks``, ``decoder_norm``, ``decoder_pred``): ``official_state_dict()`` is a
full checkpoint in the layout of MAE's ``mae_visualize_*.pth``.

Shapes: ``N`` patches per image, ``P`` prefix tokens (CLS), ``K = round(N * (1 - r))``
visible patches at mask ratio ``r``; ``mask`` is (B, N), 1 where a patch was removed.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from .backbone import Backbone, num_kept, prefixed_group_matcher


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """(gh * gw, dim) fixed 2-D sine-cosine position embedding, row-major over the grid,
    numerically MAE's ``get_2d_sincos_pos_embed`` (first half from the column index,
    second half from the row index)."""
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh, dtype=torch.float64),
                                torch.arange(gw, dtype=torch.float64), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))

    def one_d(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([one_d(cols), one_d(rows)], dim=1).float()


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, patch**2 * C), patches row-major, pixels (row, col, channel)
    within a patch: MAE's order, which its ``decoder_pred`` weights assume."""
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image {h}x{w} is not a whole number of {patch} px patches")
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, grid: tuple[int, int],
               channels: int = 3) -> torch.Tensor:
    """Inverse of ``patchify``: (B, gh * gw, patch**2 * C) -> (B, C, gh * patch, gw * patch)."""
    b, n, d = patches.shape
    gh, gw = grid
    if n != gh * gw or d != patch * patch * channels:
        raise ValueError(f"{n} patches of {d} values do not make a {gh}x{gw} grid of "
                         f"{patch} px {channels}-channel patches")
    x = patches.reshape(b, gh, gw, patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, gh * patch, gw * patch)


def normalize_patches(target: torch.Tensor, eps: float = 1e-6
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's norm-pix target: each patch minus its mean over its own pixels, divided by
    sqrt(unbiased variance + eps). Returns (normalised, mean, std) for de-normalising."""
    mean = target.mean(dim=-1, keepdim=True)
    std = (target.var(dim=-1, keepdim=True) + eps).sqrt()
    return (target - mean) / std, mean, std


def masked_patch_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error over the masked patches only: (scalar, per-sample (B,)).

    Every sample hides the same number of patches, so the scalar (MAE's
    ``(loss * mask).sum() / mask.sum()``) is also the mean of the per-sample losses. Each
    sample must hide at least one patch (``MAE`` checks its ratio up front: a check on the
    mask here would wait for the GPU every step).
    """
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, N)
    mask = mask.to(per_patch.dtype)
    hidden = mask.sum(dim=1)
    per_sample = (per_patch * mask).sum(dim=1) / hidden
    return (per_patch * mask).sum() / hidden.sum(), per_sample


class MAE(nn.Module):
    """Masked autoencoder around a timm ViT ``Backbone`` (CLS-pooled, so its final ``norm``
    normalises every token, as MAE's encoder does).

    ``mask_ratio`` is drawn per sample in training from the global RNG (restored on
    resume). In eval mode masks are still drawn, since the validation loss needs them,
    but from a generator seeded with ``eval_seed`` on every call: sample i of every batch
    gets the same mask, so with the validation set's fixed order and batch size the same
    images get the same masks in every epoch and validation losses compare across epochs
    (another batch size or number of processes deals the masks out differently).
    """

    def __init__(self, encoder: Backbone, decoder_dim: int = 512, decoder_depth: int = 8,
                 decoder_heads: int = 16, mask_ratio: float = 0.75,
                 norm_pix_loss: bool = True, eval_seed: int = 0, init: bool = True):
        super().__init__()
        vit = encoder.model
        if not encoder.is_vit:
            raise ValueError(f"MAE needs a ViT encoder, got {type(vit).__name__}")
        if not getattr(vit, "has_class_token", False) or encoder.pool != "cls":
            raise ValueError("MAE's encoder keeps a CLS token and normalises every token with "
                             "its final norm: create the backbone with pool='cls' from a ViT "
                             "that has a class token")
        if decoder_dim % decoder_heads:
            raise ValueError(f"decoder_dim {decoder_dim} is not divisible by decoder_heads "
                             f"{decoder_heads}")
        self.encoder = encoder
        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)
        self.eval_seed = int(eval_seed)
        ps = vit.patch_embed.patch_size
        if ps[0] != ps[1]:
            raise ValueError(f"MAE patchifies square patches, {type(vit).__name__} has {ps}")
        self.patch_size = int(ps[0])
        self.grid = tuple(int(g) for g in vit.patch_embed.grid_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.num_prefix = int(vit.num_prefix_tokens)
        self.in_chans = int(vit.patch_embed.proj.in_channels)
        self._check_ratio(mask_ratio)
        width = int(vit.embed_dim)

        # the encoder's position embedding is fixed sin-cos in MAE (fine-tuning unfreezes it)
        vit.pos_embed.requires_grad_(False)

        self.decoder_embed = nn.Linear(width, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, self.num_prefix + self.num_patches, decoder_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size ** 2 * self.in_chans)
        self._init_weights(init)

    # ------------------------------------------------------------------ init
    def _init_weights(self, encoder_too: bool) -> None:
        """MAE's initialisation: fixed sin-cos position embeddings, xavier-uniform linears
        (and patch projection, seen as a linear), N(0, 0.02) tokens, unit LayerNorms.
        ``encoder_too=False`` leaves the encoder as loaded (continued pretraining)."""
        with torch.no_grad():
            dec = sincos_pos_embed_2d(self.decoder_pos_embed.shape[-1], self.grid)
            self.decoder_pos_embed.zero_()
            self.decoder_pos_embed[0, self.num_prefix:] = dec
            nn.init.normal_(self.mask_token, std=0.02)
        modules = [self.decoder_embed, self.decoder_blocks, self.decoder_norm,
                   self.decoder_pred]
        if encoder_too:
            vit = self.encoder.model
            with torch.no_grad():
                pe = vit.pos_embed
                enc = sincos_pos_embed_2d(pe.shape[-1], self.grid)
                pe.zero_()
                pe[0, pe.shape[1] - self.num_patches:] = enc  # after the prefix, if any
                w = vit.patch_embed.proj.weight
                nn.init.xavier_uniform_(w.view(w.shape[0], -1))
                nn.init.normal_(vit.cls_token, std=0.02)
                if getattr(vit, "reg_token", None) is not None:
                    nn.init.normal_(vit.reg_token, std=0.02)
            modules += [vit.blocks, vit.norm]
        for mod in modules:
            for m in mod.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ pieces
    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        return patchify(images, self.patch_size)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        return unpatchify(patches, self.patch_size, self.grid, self.in_chans)

    def forward_encoder(self, images: torch.Tensor, mask_ratio: float,
                        generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent tokens of the visible patches (B, P + K, D) after the final norm, and
        ``keep_idx`` (B, K). Masking happens before the blocks, in train and eval mode
        alike (``Backbone.visible_tokens``; ``forward_tokens`` masks in training only)."""
        return self.encoder.visible_tokens(images, mask_ratio, generator)

    def forward_decoder(self, latent: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
        """(B, N, patch**2 * C) predicted pixels for every patch: the visible tokens back
        at their positions, ``mask_token`` elsewhere, fixed sin-cos positions added."""
        x = self.decoder_embed(latent)
        b, _, dim = x.shape
        prefix, visible = x[:, :self.num_prefix], x[:, self.num_prefix:]
        full = self.mask_token.to(x.dtype).expand(b, self.num_patches, dim)
        full = full.scatter(1, keep_idx.unsqueeze(-1).expand(-1, -1, dim), visible)
        x = torch.cat([prefix, full], dim=1) + self.decoder_pos_embed.to(x.dtype)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, self.num_prefix:]

    def mask_from_keep(self, keep_idx: torch.Tensor) -> torch.Tensor:
        """(B, N) float: 0 at the visible positions, 1 at the masked ones."""
        mask = torch.ones(keep_idx.shape[0], self.num_patches, device=keep_idx.device)
        return mask.scatter(1, keep_idx, 0.0)

    def target(self, images: torch.Tensor) -> torch.Tensor:
        """What the decoder predicts: the (normalised) input's patches, per-patch
        normalised again with ``norm_pix_loss``."""
        t = self.patchify(images.float())
        return normalize_patches(t)[0] if self.norm_pix_loss else t

    def _check_ratio(self, ratio: float) -> float:
        """``ratio`` if it hides at least one patch and keeps at least one, else an error."""
        if not 0.0 < ratio < 1.0 or num_kept(self.num_patches, ratio) >= self.num_patches:
            raise ValueError(f"MAE mask_ratio must be in (0, 1) and hide at least one of the "
                             f"{self.num_patches} patches, got {ratio}")
        return float(ratio)

    def eval_generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.eval_seed)

    def forward(self, images: torch.Tensor, mask_ratio: float | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``loss`` (scalar), ``loss_per_sample`` (B,), ``pred`` (B, N, patch**2 * C),
        ``mask`` (B, N) and ``keep_idx`` (B, K) for ``images`` normalised with the
        encoder's mean/std. ``mask_ratio`` defaults to the model's."""
        ratio = self._check_ratio(self.mask_ratio if mask_ratio is None else mask_ratio)
        if generator is None and not self.training:
            generator = self.eval_generator(images.device)
        latent, keep_idx = self.forward_encoder(images, ratio, generator)
        pred = self.forward_decoder(latent, keep_idx)
        mask = self.mask_from_keep(keep_idx)
        loss, per_sample = masked_patch_loss(pred, self.target(images), mask)
        return {"loss": loss, "loss_per_sample": per_sample, "pred": pred, "mask": mask,
                "keep_idx": keep_idx}

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input, reconstruction), both (B, C, H, W) in the input's normalised
        space. The reconstruction shows the prediction at the masked patches and pastes
        the visible patches back. With ``norm_pix_loss`` the model predicts each patch's
        pattern, not its mean and contrast: predictions are de-normalised with the
        statistics of the original patch at that position, as the MAE visualisations of
        norm-pix models do, so the picture shows what the loss measured."""
        patches = self.patchify(images.float())
        pred = pred.float()
        if self.norm_pix_loss:
            _, mean, std = normalize_patches(patches)
            pred = pred * std + mean
        m = mask.unsqueeze(-1).to(pred.dtype)
        masked = self.unpatchify(patches * (1 - m))
        recon = self.unpatchify(patches * (1 - m) + pred * m)
        return masked, recon

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder and decoder under the official MAE key names (encoder keys as timm's,
        ``decoder_*``, ``mask_token``): the layout of MAE's full pretraining checkpoints."""
        out = {k: v for k, v in self.encoder.model.state_dict().items()}
        for k, v in self.state_dict().items():
            if not k.startswith("encoder."):
                out[k] = v
        return out

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        """The encoder's layers under ``encoder.``; decoder parameters match no layer, so
        timm puts them in the last group (lr scale 1 under layer decay)."""
        return prefixed_group_matcher("encoder", self.encoder.group_matcher(coarse))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{k}" for k in self.encoder.no_weight_decay()} | {
            "mask_token", "decoder_pos_embed"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.set_grad_checkpointing(enable)

