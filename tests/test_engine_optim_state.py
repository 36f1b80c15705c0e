"""Engine: AdamW groups with layer decay, the warm-up + cosine schedule, atomic
checkpoints and bitwise-exact resume."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from affectkit.engine import state as engine_state
from affectkit.engine.optim import WarmupCosine, build_optimizer, scaled_lr
from affectkit.engine.state import (
    TrainState,
    capture_rng,
    latest_checkpoint,
    load_training_checkpoint,
    restore_rng,
    save_training_checkpoint,
)
from affectkit.labels import AFFECTNET8
from affectkit.models import DAN, EMMA, ExpressionBranch, create_backbone


def tiny_emma(branch: bool = False) -> EMMA:
    torch.manual_seed(0)
    expr = ExpressionBranch(DAN(), AFFECTNET8) if branch else None
    return EMMA(create_backbone("vit_tiny_patch16_224", img_size=32), expr_branch=expr)


def names_of(model, group):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in group["params"]}


@pytest.mark.parametrize("branch", [False, True])
def test_build_optimizer_layer_decay_and_no_decay_groups(branch):
    model = tiny_emma(branch)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05, layer_decay=0.65)
    assert isinstance(opt, torch.optim.AdamW)
    scales = {g["lr_scale"] for g in opt.param_groups}
    assert len(scales) == 14 and max(scales) == 1.0  # embed + 12 blocks + heads
    assert min(scales) == pytest.approx(0.65 ** 13)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])
    no_wd = set().union(*(names_of(model, g) for g in opt.param_groups if g["weight_decay"] == 0))
    wd = set().union(*(names_of(model, g) for g in opt.param_groups if g["weight_decay"] > 0))
    assert {"backbone.model.pos_embed", "backbone.model.cls_token",
            "backbone.model.blocks.0.norm1.weight", "backbone.model.blocks.0.attn.qkv.bias",
            "au_head.bias", "backbone.model.norm.weight"} <= no_wd
    assert {"backbone.model.blocks.0.attn.qkv.weight", "au_head.weight"} <= wd
    assert all(model.get_parameter(n).ndim >= 2 for n in wd)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert no_wd | wd == trainable and not no_wd & wd
    if branch:  # the frozen CNN is not in the optimiser at all
        assert not any(n.startswith("expr_branch.") for n in no_wd | wd)
        assert any(n.startswith("expr_branch.") for n, _ in model.named_parameters())
    # the head learns at full lr, the patch embedding at 0.65 ** 13 of it
    scale_of = {n: g["lr_scale"] for g in opt.param_groups for n in names_of(model, g)}
    assert scale_of["va_head.0.weight"] == 1.0
    assert scale_of["backbone.model.patch_embed.proj.weight"] == pytest.approx(0.65 ** 13)


def test_build_optimizer_without_layer_decay_and_errors():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    opt = build_optimizer(model, lr=0.1, weight_decay=0.05)
    assert {g["lr_scale"] for g in opt.param_groups} == {1.0}
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}
    with pytest.raises(ValueError, match="group_matcher"):
        build_optimizer(model, lr=0.1, weight_decay=0.05, layer_decay=0.65)

    class OneLayer(nn.Sequential):  # a matcher that finds no layers: decay would be off
        def group_matcher(self, coarse=False):
            return {"stem": r"^nothing", "blocks": r"^nothing\.(\d+)"}

    with pytest.raises(ValueError, match="no effect"):
        build_optimizer(OneLayer(nn.Linear(2, 2)), lr=0.1, weight_decay=0.0, layer_decay=0.65)


def test_scaled_lr():
    assert scaled_lr(5e-4, 100, 4, 1) == pytest.approx(5e-4 * 400 / 256)
    assert scaled_lr(1e-3, 32, 1, 8) == pytest.approx(1e-3)
    with pytest.raises(ValueError):
        scaled_lr(1e-3, 0)


def two_group_optimizer():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    return torch.optim.AdamW([{"params": [a], "lr_scale": 1.0},
                              {"params": [b], "lr_scale": 0.25}], lr=1.0)


def test_warmup_cosine_shape():
    opt = two_group_optimizer()
    sched = WarmupCosine(opt, peak_lr=1.0, warmup_steps=10, total_steps=50, min_lr=0.01)
    lrs = [sched.lr_at(s) for s in range(61)]
    assert lrs[0] == 0.0
    assert lrs[:11] == pytest.approx([s / 10 for s in range(11)])  # linear warm-up
    assert lrs[10] == 1.0 and max(lrs) == 1.0
    assert all(x > y for x, y in zip(lrs[10:50], lrs[11:51]))  # strictly down after warm-up
    assert lrs[30] == pytest.approx(0.01 + 0.99 * 0.5)  # half-way: mid-point of the cosine
    assert lrs[50] == pytest.approx(0.01) and lrs[60] == pytest.approx(0.01)
    seen = []
    for _ in range(50):
        seen.append(sched.get_last_lr())
        opt.step()
        sched.step()
    assert seen[10] == [1.0, 0.25] and seen[5] == pytest.approx([0.5, 0.125])
    assert all(g[1] == pytest.approx(0.25 * g[0]) for g in seen)  # layer scale kept
    assert sched.get_last_lr() == pytest.approx([0.01, 0.0025])


def test_warmup_cosine_state_round_trip():
    opt = two_group_optimizer()
    sched = WarmupCosine(opt, 2e-3, warmup_steps=3, total_steps=20, start_lr=1e-5)
    for _ in range(7):
        sched.step()
    state = sched.state_dict()
    assert all(isinstance(v, (int, float)) for v in state.values())
    opt2 = two_group_optimizer()
    sched2 = WarmupCosine(opt2, 1.0, warmup_steps=1, total_steps=2)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()
    for _ in range(15):
        sched.step()
        sched2.step()
        assert sched2.get_last_lr() == sched.get_last_lr()
    with pytest.raises(ValueError):
        WarmupCosine(opt, 1.0, warmup_steps=5, total_steps=4)


def test_capture_restore_rng():
    state = capture_rng()
    first = (random.random(), np.random.rand(3), torch.rand(3))
    restore_rng(state)
    again = (random.random(), np.random.rand(3), torch.rand(3))
    assert first[0] == again[0] and np.array_equal(first[1], again[1])
    assert torch.equal(first[2], again[2])


# --- exact resume -------------------------------------------------------------------------

N_SAMPLES, BATCH, ACCUM, EPOCHS = 48, 8, 2, 4  # 6 batches = 3 optimizer steps per epoch
TOTAL = EPOCHS * N_SAMPLES // BATCH // ACCUM


def make_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Dropout(0.3), nn.Linear(16, 3))
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.05)
    sched = WarmupCosine(opt, 1e-2, warmup_steps=3, total_steps=TOTAL, min_lr=1e-4)
    return model, opt, sched


DATA_GEN = torch.Generator().manual_seed(123)
X, Y = torch.randn(N_SAMPLES, 6, generator=DATA_GEN), torch.randint(0, 3, (N_SAMPLES,),
                                                                     generator=DATA_GEN)


def train(model, opt, sched, state, *, epoch_seeded_order, stop_at=None, ckpt=None):
    """A miniature of the real loop: shuffled batches, dropout, gradient accumulation;
    saves ``ckpt`` after optimizer step ``stop_at`` and returns."""
    model.train()
    while state.epoch < EPOCHS:
        if epoch_seeded_order:  # DistributedSampler-style: the order is a function of epoch
            order = torch.randperm(N_SAMPLES, generator=torch.Generator().manual_seed(state.epoch))
        else:  # from the global RNG: only an epoch-boundary checkpoint can resume this
            order = torch.randperm(N_SAMPLES)
        for b in range(state.micro_step, N_SAMPLES // BATCH):
            idx = order[b * BATCH:(b + 1) * BATCH]
            loss = nn.functional.cross_entropy(model(X[idx]), Y[idx]) / ACCUM
            loss.backward()
            state.micro_step = b + 1
            if state.micro_step % ACCUM == 0:
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
                state.step += 1
                if state.step == stop_at:
                    if state.micro_step == N_SAMPLES // BATCH:
                        state.epoch, state.micro_step = state.epoch + 1, 0
                    save_training_checkpoint(ckpt, model, opt, sched, state=state,
                                             config={"lr": 1e-2, "model": "mlp"})
                    return state
        state.epoch, state.micro_step = state.epoch + 1, 0
    return state


@pytest.mark.parametrize("epoch_seeded_order, stop_at", [(False, 6), (True, 4)])
def test_exact_resume(tmp_path, epoch_seeded_order, stop_at):
    model, opt, sched = make_run()
    torch.manual_seed(7)
    train(model, opt, sched, TrainState(), epoch_seeded_order=epoch_seeded_order)
    reference = [p.detach().clone() for p in model.parameters()]

    ckpt = tmp_path / "last.pt"
    model, opt, sched = make_run()
    torch.manual_seed(7)
    train(model, opt, sched, TrainState(), epoch_seeded_order=epoch_seeded_order,
          stop_at=stop_at, ckpt=ckpt)
    assert latest_checkpoint(tmp_path) == ckpt and latest_checkpoint(tmp_path / "x") is None
    torch.manual_seed(999)  # whatever happened since, the checkpoint's RNG wins

    model2, opt2, sched2 = make_run()
    state = load_training_checkpoint(ckpt, model2, opt2, sched2)
    assert state.step == stop_at and sched2.last_step == stop_at
    assert (state.micro_step == 0) == (not epoch_seeded_order)  # boundary vs mid-epoch
    assert torch.load(ckpt, weights_only=True)["config"] == {"lr": 1e-2, "model": "mlp"}
    train(model2, opt2, sched2, state, epoch_seeded_order=epoch_seeded_order)
    assert state.step == TOTAL
    for p, ref in zip(model2.parameters(), reference):
        assert torch.equal(p, ref)

    # the same resume without restoring the RNG diverges: the test does see the RNG
    model3, opt3, sched3 = make_run()
    state = load_training_checkpoint(ckpt, model3, opt3, sched3, restore_rng_state=False)
    train(model3, opt3, sched3, state, epoch_seeded_order=epoch_seeded_order)
    assert not all(torch.equal(p, r) for p, r in zip(model3.parameters(), reference))


def test_resume_unwraps_compiled_and_restores_scaler(tmp_path):
    model, opt, sched = make_run()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)

    class Wrapped(nn.Module):  # stands in for torch.compile's OptimizedModule
        def __init__(self, m):
            super().__init__()
            self._orig_mod = m

    path = save_training_checkpoint(tmp_path / "c.pt", Wrapped(model), opt, sched, scaler,
                                    TrainState(epoch=3, best_score=0.5, best_epoch=2))
    assert "0.weight" in torch.load(path, weights_only=True)["model"]
    model2, opt2, sched2 = make_run()
    scaler2 = torch.amp.GradScaler("cpu", init_scale=2.0)
    state = load_training_checkpoint(path, model2, opt2, sched2, scaler2)
    assert state == TrainState(epoch=3, best_score=0.5, best_epoch=2)
    assert scaler2.get_scale() == 1024.0
    with pytest.raises(TypeError, match=r"config\['out'\]"):
        save_training_checkpoint(tmp_path / "d.pt", model, opt, config={"out": tmp_path})


# --- atomicity and refusal ------------------------------------------------------------------

class Evil:
    def __reduce__(self):
        return (print, ("unpickling ran code",))


def test_crash_during_save_keeps_previous_file(tmp_path, monkeypatch):
    model, opt, sched = make_run()
    path = save_training_checkpoint(tmp_path / "last.pt", model, opt, sched,
                                    state=TrainState(epoch=1))
    before = path.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_training_checkpoint(path, model, opt, sched, state=TrainState(epoch=2))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left
    assert load_training_checkpoint(path, *make_run()).epoch == 1


def test_bad_files_raise_value_error_naming_them(tmp_path):
    model, opt, sched = make_run()
    good = save_training_checkpoint(tmp_path / "good.pt", model, opt, sched)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.pt"):
        load_training_checkpoint(truncated, model)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pt"):
        load_training_checkpoint(empty, model)

    weights = tmp_path / "weights.pt"
    torch.save({"model": model.state_dict()}, weights)
    with pytest.raises(ValueError, match=r"weights.pt is not an affectkit training checkpoint"):
        load_training_checkpoint(weights, model)

    evil = tmp_path / "evil.pt"
    torch.save({"format": engine_state.FORMAT, "model": model.state_dict(), "x": Evil()}, evil)
    with pytest.raises(ValueError, match=r"evil.pt.*weights_only"):
        load_training_checkpoint(evil, model)

    other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="good.pt does not fit"):
        load_training_checkpoint(good, other)


# --- mixed precision on the CPU ---------------------------------------------------------------

@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_cpu_only_where_the_cpu_has_it(monkeypatch, caplog, native):
    """``run.amp: bf16`` autocasts on a CPU with native bf16 (AMX / AVX512-BF16) and falls
    back to fp32, saying why, on one without (emulated bf16 is many times slower);
    ``auto`` stays fp32 on any CPU (exact, reproducible numbers)."""
    from affectkit.config import Config, RunConfig
    from affectkit.engine import loop

    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    bf16 = Config(run=RunConfig(amp="bf16"))
    assert loop.amp_dtype_for(bf16, cpu) == (torch.bfloat16 if native else None)
    assert ("no native bf16" in caplog.text) is not native
    assert loop.amp_dtype_for(Config(), cpu) is None
    assert loop.amp_dtype_for(Config(run=RunConfig(amp="fp16")), cpu) is None
    assert loop.amp_dtype_for(bf16, torch.device("cuda")) is torch.bfloat16


def test_infer_under_bf16_autocast_returns_float32_arrays():
    """Predictions made under bf16 autocast come back as float32 numpy arrays (numpy has no
    bf16), close to the fp32 ones."""
    from affectkit.engine.evaluation import infer

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"image": torch.randn(3, 16, 16, generator=g), "index": i}

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4))

    def collect(outputs, batch):
        return {"logits": outputs}

    exact = infer(model, Images(), collect, batch_size=4)
    mixed = infer(model, Images(), collect, batch_size=4, amp_dtype=torch.bfloat16)
    assert mixed["logits"].dtype == np.float32
    np.testing.assert_allclose(mixed["logits"], exact["logits"], atol=0.05)
    assert mixed["index"].tolist() == list(range(10))
