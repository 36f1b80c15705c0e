"""Input normalisation follows the weights: ``data.mean`` / ``data.std`` resolved when a run
starts (a timm tag's own statistics, else ImageNet's), saved with the run, used by every
transform and by EMMA's frozen branch; runs saved before they existed keep ImageNet's."""

from __future__ import annotations

import torch
import yaml

from affectkit.config import load_config
from affectkit.data.augment import IMAGENET_MEAN, IMAGENET_STD, input_stats, transforms_for
from affectkit.engine.build import weight_stats, with_data_stats
from affectkit.engine.loop import train
from affectkit.labels import AFFECTNET8
from affectkit.models.dan import DAN, ExpressionBranch


def test_weight_stats_follow_the_pretrained_weights():
    tag = load_config("demo", ["data.root=.", "model.backbone=vit_base_patch16_224",
                               "model.pretrained=timm:vit_base_patch16_224.augreg_in21k"])
    assert weight_stats(tag) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    local = load_config("demo", ["data.root=.", "model.pretrained=mae_pretrain_vit_base.pth"])
    assert weight_stats(local) == (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))
    # resuming a run saved without them: ImageNet, what it trained with
    old = with_data_stats(tag, saved={"data": {"root": "."}})
    assert old.data.mean is None and input_stats(old.data)[0] == tuple(IMAGENET_MEAN)
    assert with_data_stats(tag).data.mean == (0.5, 0.5, 0.5)
    given = load_config("demo", ["data.root=.", "data.mean=[0.1,0.2,0.3]",
                                 "data.std=[1,1,1]"])
    assert with_data_stats(given).data.mean == (0.1, 0.2, 0.3)


def test_transforms_normalise_with_the_data_stats():
    cfg = load_config("demo", ["data.root=.", "data.mean=[0.5,0.5,0.5]", "data.std=[0.5,0.5,0.5]",
                               "data.img_size=32", "data.resize=32", "data.jitter=0", "data.hue=0"])
    white = torch.full((3, 32, 32), 255, dtype=torch.uint8)
    train_t, eval_t = transforms_for(cfg.data)
    assert torch.allclose(eval_t(white), torch.ones(3, 32, 32))
    batched, _ = transforms_for(cfg.data, batched=True)
    assert torch.allclose(batched(white[None]), torch.ones(1, 3, 32, 32), atol=1e-5)


def test_a_run_saves_its_resolved_stats(sample, tmp_path):
    cfg = load_config("demo", [f"data.root={sample['root']}", "optim.batch_size=4",
                               "data.img_size=32", "data.resize=34", "optim.epochs=1"])
    assert cfg.data.mean is None
    run = train(cfg, tmp_path / "run", max_steps=1, progress=False)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["mean"] == list(IMAGENET_MEAN)
    # resuming the same command finds the same stats (no config mismatch)
    train(cfg, run, max_steps=2, progress=False)


def test_branch_reads_input_in_the_models_stats():
    torch.manual_seed(0)
    dan = DAN().eval()  # 8 AffectNet classes
    img = torch.rand(2, 3, 112, 112)
    half = ExpressionBranch(dan, AFFECTNET8, 112, input_mean=(0.5,) * 3, input_std=(0.5,) * 3)
    imnet = ExpressionBranch(dan, AFFECTNET8, 112)
    x_half = (img - 0.5) / 0.5
    x_imnet = (img - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(half.logits(x_half), imnet.logits(x_imnet), atol=1e-4, rtol=1e-4)
