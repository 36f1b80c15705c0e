"""Augmentation: BatchAugment (batched, per-sample random) against BatchResize and by hand."""

import pytest
import torch

from affectkit.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugment,
    BatchResize,
    eval_transform,
    train_transform,
)

NO_JITTER = {"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0}
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def uint8_batch(b=4, h=112, w=112, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # smooth content plus noise, so crops and flips are visible
    base = torch.linspace(0, 200, w).view(1, 1, 1, w).expand(b, 3, h, w)
    noise = torch.randint(0, 55, (b, 3, h, w), generator=g)
    return (base + noise).to(torch.uint8)


def test_batch_augment_shape_dtype_default():
    torch.manual_seed(0)
    x = uint8_batch()
    out = BatchAugment()(x)
    assert out.shape == (4, 3, 224, 224) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    lo = ((0 - MEAN) / STD).amin()
    hi = ((1 - MEAN) / STD).amax()
    assert out.min() >= lo - 1e-4 and out.max() <= hi + 1e-4


def test_batch_augment_normalises_constant_image():
    x = torch.full((2, 3, 50, 70), 51, dtype=torch.uint8)
    out = BatchAugment(size=32, flip=0.5, **NO_JITTER)(x)
    expected = ((torch.full((1, 3, 1, 1), 0.2) - MEAN) / STD).expand(2, 3, 32, 32)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_batch_augment_identity_reproduces_batch_resize():
    torch.manual_seed(0)
    x = uint8_batch()
    aug = BatchAugment(size=224, scale=(1, 1), ratio=(1, 1), flip=0, **NO_JITTER)
    ref = BatchResize(224)(x)
    torch.testing.assert_close(aug(x), ref, atol=1e-4, rtol=0)
    # same size in and out: exactly the normalised input
    same = BatchAugment(size=112, scale=(1, 1), ratio=(1, 1), flip=0, **NO_JITTER)(x)
    torch.testing.assert_close(same, (x.float() / 255 - MEAN) / STD, atol=1e-4, rtol=0)


def test_batch_augment_float_input_taken_as_0_1():
    x = uint8_batch()
    aug = BatchAugment(size=112, scale=(1, 1), ratio=(1, 1), flip=0, **NO_JITTER)
    torch.testing.assert_close(aug(x.float() / 255), aug(x), atol=1e-5, rtol=0)


def test_batch_augment_flip_mirrors():
    x = uint8_batch()
    flip = BatchAugment(size=112, scale=(1, 1), ratio=(1, 1), flip=1, **NO_JITTER)(x)
    torch.testing.assert_close(flip, BatchResize(112)(x.flip(-1)), atol=1e-4, rtol=0)
    up = BatchAugment(size=224, scale=(1, 1), ratio=(1, 1), flip=1, **NO_JITTER)(x)
    torch.testing.assert_close(up, BatchResize(224)(x).flip(-1), atol=1e-4, rtol=0)


def test_batch_augment_per_sample_crops():
    torch.manual_seed(1)
    one = uint8_batch(b=1)
    x = one.repeat(4, 1, 1, 1)
    out = BatchAugment(size=56, scale=(0.25, 0.25), ratio=(1, 1), flip=0, **NO_JITTER)(x)
    diffs = [(out[0] - out[i]).abs().max().item() for i in range(1, 4)]
    assert all(d > 0.05 for d in diffs), diffs
    # each crop is a 56 px window of the 112 px image: the left-right ramp keeps its slope
    assert (out[:, 0].mean(1).diff(dim=-1).mean(-1) > 0).all()


def test_batch_augment_per_sample_jitter():
    torch.manual_seed(2)
    x = uint8_batch(b=1).repeat(3, 1, 1, 1)
    aug = BatchAugment(size=112, scale=(1, 1), ratio=(1, 1), flip=0, brightness=0.4,
                       contrast=0, saturation=0, hue=0)
    out = aug(x)
    means = out.mean((1, 2, 3))
    assert len(set(means.tolist())) == 3


def test_batch_augment_jitter_keeps_gray_gray():
    torch.manual_seed(3)
    x = torch.full((3, 3, 16, 16), 100, dtype=torch.uint8)
    aug = BatchAugment(size=16, scale=(1, 1), ratio=(1, 1), flip=0, brightness=0,
                       contrast=0.4, saturation=0.4, hue=0.1)
    out = aug(x) * STD + MEAN  # back to [0, 1]
    torch.testing.assert_close(out, torch.full_like(out, 100 / 255), atol=1e-4, rtol=0)


def test_batch_augment_runs_on_uint8_and_keeps_input():
    x = uint8_batch(b=2)
    before = x.clone()
    out = BatchAugment(size=64)(x)
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
    assert torch.equal(x, before)


@pytest.mark.parametrize("shape", [(3, 112, 112), (3, 48, 48), (3, 100, 150)])
def test_train_and_eval_transform_shapes(shape):
    torch.manual_seed(0)
    img = torch.randint(0, 256, shape, dtype=torch.uint8)
    out = train_transform()(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    ev = eval_transform(160)(img)
    assert ev.shape == (3, 160, 160) and ev.dtype == torch.float32


def test_eval_transform_matches_batch_resize():
    x = uint8_batch(b=1)
    torch.testing.assert_close(eval_transform(224)(x[0]), BatchResize(224)(x)[0], atol=2e-2,
                               rtol=0)


def test_train_transform_without_jitter_is_crop_of_resize():
    img = torch.full((3, 112, 112), 128, dtype=torch.uint8)
    out = train_transform(jitter=0, hue=0)(img)
    torch.testing.assert_close(out, ((torch.full((1, 3, 1, 1), 128 / 255) - MEAN) / STD)[0]
                               .expand(3, 224, 224), atol=1e-5, rtol=0)


def test_train_batch_augment_is_the_resize_then_crop_recipe():
    """With no jitter and crop = resize, each output is the resized face or its mirror
    (bilinear upscale, as the per-sample eval resize); with resize > size the crop side
    is size / resize of the face, as resize-then-random-crop gives."""
    from affectkit.data.augment import train_batch_augment

    torch.manual_seed(0)
    x = uint8_batch(b=6, h=32, w=32)
    out = train_batch_augment(48, 48, jitter=0.0, hue=0.0)(x)
    ref = eval_transform(48)(x)
    one_level = 1 / 255 / min(IMAGENET_STD)  # the per-sample resize rounds to uint8
    for i in range(len(x)):
        err = min((out[i] - ref[i]).abs().max(), (out[i] - ref[i].flip(-1)).abs().max())
        assert err < 1.01 * one_level, (i, float(err))
    aug = train_batch_augment(224, 232)
    assert aug.scale == ((224 / 232) ** 2,) * 2 and aug.ratio == (1.0, 1.0)
    assert (aug.brightness, aug.contrast, aug.saturation, aug.hue) == (0.4, 0.4, 0.4, 0.1)
