"""Losses: gradcheck in float64, values against independent computations, masking edge cases."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from affectkit import losses as L
from affectkit.metrics import ccc

D = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def au_batch(seed, n=16, k=12, dtype=D):
    g = gen(seed)
    logits = torch.randn(n, k, generator=g, dtype=dtype)
    targets = (torch.rand(n, k, generator=g) < 0.3).to(dtype)
    targets[torch.rand(n, k, generator=g) < 0.2] = -1
    return logits, targets


def expr_batch(seed, n=20, k=8):
    g = gen(seed)
    logits = torch.randn(n, k, generator=g, dtype=D)
    targets = torch.randint(0, k, (n,), generator=g)
    targets[torch.rand(n, generator=g) < 0.3] = -1
    return logits, targets


def va_batch(seed, n=32):
    g = gen(seed)
    target = torch.rand(n, 2, generator=g, dtype=D) * 2 - 1
    pred = (0.5 * target + 0.3 * torch.randn(n, 2, generator=g, dtype=D)).clamp(-1, 1)
    target[torch.rand(n, generator=g) < 0.2, 0] = -5
    return pred, target


def assert_zero_grad_loss(loss_fn, x, *rest):
    """All-invalid batch: finite 0 loss, and x still receives an exactly-zero gradient."""
    x = x.clone().requires_grad_(True)
    loss = loss_fn(x, *rest)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


# ---------------------------------------------------------------- AU


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_bce_matches_valid_subset(seed):
    logits, targets = au_batch(seed)
    ok = targets != -1
    ref = F.binary_cross_entropy_with_logits(logits[ok], targets[ok])
    torch.testing.assert_close(L.masked_bce(logits, targets), ref)
    pw = torch.linspace(0.5, 4.0, 12, dtype=D)
    pw_ok = pw.expand(16, 12)[ok]
    ref = F.binary_cross_entropy_with_logits(logits[ok], targets[ok], pos_weight=pw_ok)
    torch.testing.assert_close(L.masked_bce(logits, targets, pos_weight=pw), ref)


def test_masked_bce_pos_weight_scales_positive_terms():
    logits, _ = au_batch(5)
    ones, zeros = torch.ones_like(logits), torch.zeros_like(logits)
    pw = torch.full((12,), 3.0, dtype=D)
    base = L.masked_bce(logits, ones)
    torch.testing.assert_close(L.masked_bce(logits, ones, pos_weight=pw), 3 * base)
    neg = L.masked_bce(logits, zeros)
    torch.testing.assert_close(L.masked_bce(logits, zeros, pos_weight=pw), neg)


def test_masked_bce_gradcheck():
    logits, targets = au_batch(3, n=6, k=4)
    pw = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=D)
    assert gradcheck(lambda x: L.masked_bce(x, targets, pw), (logits.requires_grad_(),))


def test_masked_bce_all_invalid():
    logits, _ = au_batch(0)
    assert_zero_grad_loss(L.masked_bce, logits, -torch.ones_like(logits))
    assert_zero_grad_loss(L.masked_bce, logits.float(), -torch.ones(16, 12))


def test_au_pos_weight():
    labels = np.array([[1, 0, 0, -1], [0, 0, 1, -1], [0, 0, 1, 1], [-1, 0, 1, 1]])
    w = L.au_pos_weight(labels)
    assert w.dtype == torch.float32
    # AU0: 2 neg / 1 pos; AU1: no positives -> 1; AU2: 1 neg / 3 pos; AU3: no negatives -> 1
    torch.testing.assert_close(w, torch.tensor([2.0, 1.0, 1 / 3, 1.0]))
    torch.testing.assert_close(L.au_pos_weight(torch.from_numpy(labels)), w)
    labels = np.array([[1, 0]] + [[0, 1]] * 99)
    torch.testing.assert_close(L.au_pos_weight(labels, clip=10.0), torch.tensor([10.0, 1 / 99]))
    assert torch.isfinite(L.au_pos_weight(-np.ones((3, 12)))).all()


# ---------------------------------------------------------------- EXPR


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_masked_ce_matches_valid_subset(smoothing):
    logits, targets = expr_batch(1)
    ok = targets != -1
    ref = F.cross_entropy(logits[ok], targets[ok], label_smoothing=smoothing)
    torch.testing.assert_close(L.masked_ce(logits, targets, label_smoothing=smoothing), ref)


def test_masked_ce_gradcheck_and_all_invalid():
    logits, targets = expr_batch(2, n=6, k=5)
    assert gradcheck(lambda x: L.masked_ce(x, targets, 0.1), (logits.requires_grad_(),))
    assert_zero_grad_loss(L.masked_ce, logits.detach(), torch.full((6,), -1))


# ---------------------------------------------------------------- VA


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ccc_loss_matches_metric(seed):
    pred, target = va_batch(seed)
    ok = ~(target == -5).any(dim=1)
    cv = ccc(target[ok, 0].numpy(), pred[ok, 0].numpy())
    ca = ccc(target[ok, 1].numpy(), pred[ok, 1].numpy())
    assert L.ccc_loss(pred, target).item() == pytest.approx(2 - cv - ca, abs=1e-6)
    per_dim = L.batch_ccc(pred[ok], target[ok])
    np.testing.assert_allclose(per_dim.numpy(), [cv, ca], atol=1e-6)


def test_ccc_loss_perfect_and_float32_sentinel():
    target = torch.rand(10, 2) * 2 - 1
    assert L.ccc_loss(target.clone(), target).item() == pytest.approx(0.0, abs=1e-5)
    target = torch.cat([torch.full((1, 2), -5.0), target - target.mean(dim=0)])
    # zero-mean truth and its negation: CCC = -1 per dimension once the sentinel row is dropped
    assert L.ccc_loss(-target, target).item() == pytest.approx(4.0, abs=1e-5)


def test_ccc_loss_gradcheck_and_too_few_rows():
    pred, target = va_batch(4, n=8)
    assert gradcheck(lambda x: L.ccc_loss(x, target), (pred.requires_grad_(),))
    assert_zero_grad_loss(L.ccc_loss, pred.detach(), torch.full((8, 2), -5.0, dtype=D))
    one_valid = torch.full((8, 2), -5.0, dtype=D)
    one_valid[3] = 0.2
    assert_zero_grad_loss(L.ccc_loss, pred.detach(), one_valid)


# ---------------------------------------------------------------- JS


def ref_js(a, b):
    """JS from explicit probabilities, numpy only."""

    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    p, q = softmax(a), softmax(b)
    m = (p + q) / 2
    kl = lambda u, v: np.sum(u * np.log(u / v), axis=-1)  # noqa: E731
    return np.mean((kl(p, m) + kl(q, m)) / 2)


def test_js_divergence_values_and_properties():
    g = gen(0)
    a, b = torch.randn(10, 8, generator=g, dtype=D), torch.randn(10, 8, generator=g, dtype=D)
    js = L.js_divergence(a, b)
    assert js.item() == pytest.approx(ref_js(a.numpy(), b.numpy()), rel=1e-10)
    torch.testing.assert_close(js, L.js_divergence(b, a))
    assert L.js_divergence(a, a).item() == pytest.approx(0.0, abs=1e-12)
    assert L.js_divergence(a, a + 3.0).item() == pytest.approx(0.0, abs=1e-12)  # shift-invariant
    # confident, disjoint predictions: finite and at most ln 2
    big = torch.tensor([[200.0, -200.0]], dtype=torch.float32)
    extreme = L.js_divergence(big, -big)
    assert torch.isfinite(extreme) and extreme.item() == pytest.approx(np.log(2), rel=1e-5)


def test_js_divergence_gradcheck():
    g = gen(1)
    a = torch.randn(4, 5, generator=g, dtype=D, requires_grad=True)
    b = torch.randn(4, 5, generator=g, dtype=D, requires_grad=True)
    assert gradcheck(L.js_divergence, (a, b))
