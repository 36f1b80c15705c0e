"""DAN key names (public checkpoint compatibility), checkpoint loading, and the frozen
ABAW-ordered expression branch."""

import copy

import pytest
import torch
from torch import nn

from affectkit.labels import ABAW_EXPR, AFFECTNET8, FER2013
from affectkit.models.dan import (
    AFFECTNET7,
    DAN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ExpressionBranch,
    load_dan_checkpoint,
)


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics, so a load that skipped them would show."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _biased(model: nn.Module, fc: nn.Linear, bias) -> nn.Module:
    """Zero classifier weights: the logits are exactly ``bias`` whatever the image."""
    with torch.no_grad():
        fc.weight.zero_()
        fc.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return model


def test_dan_state_dict_matches_public_names_and_shapes():
    sd = DAN().state_dict()
    expected = {
        "features.0.weight": (64, 3, 7, 7),  # resnet conv1
        "features.1.running_var": (64,),  # resnet bn1
        "features.4.0.conv1.weight": (64, 64, 3, 3),  # layer1
        "features.7.1.bn2.weight": (512,),  # layer4
        "features.7.0.downsample.0.weight": (512, 256, 1, 1),
        "cat_head0.sa.conv1x1.0.weight": (256, 512, 1, 1),
        "cat_head0.sa.conv1x1.1.running_mean": (256,),
        "cat_head3.sa.conv_3x3.0.weight": (512, 256, 3, 3),
        "cat_head1.sa.conv_1x3.0.weight": (512, 256, 1, 3),
        "cat_head2.sa.conv_3x1.1.bias": (512,),
        "cat_head0.ca.attention.0.weight": (32, 512),
        "cat_head0.ca.attention.1.running_mean": (32,),
        "cat_head3.ca.attention.3.weight": (512, 32),
        "fc.weight": (8, 512),
        "bn.running_mean": (8,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert len(sd) == 275
    assert {k.split(".")[0] for k in sd} == {
        "features", "cat_head0", "cat_head1", "cat_head2", "cat_head3", "fc", "bn"}
    assert DAN().eval()(torch.randn(2, 3, 64, 64)).shape == (2, 8)


def test_public_format_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = _randomise_bn(DAN())
    optimizer_state = {  # the shape of Adam's state dict, kept small
        "state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(3)}},
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 0, "params": [0]}],
    }
    path = tmp_path / "affecnet8_epoch5_acc0.6209.pth"
    torch.save({"iter": 5, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer_state}, path)

    loaded = load_dan_checkpoint(path)
    x = torch.randn(2, 3, 64, 64)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))

    # bare, DataParallel-prefixed, 7-class state dict: count inferred, labels follow
    seven = DAN(num_class=7)
    bare = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in seven.state_dict().items()}, bare)
    assert load_dan_checkpoint(bare).fc.out_features == 7
    assert ExpressionBranch.from_config("dan", checkpoint=bare).labels == AFFECTNET7


def test_bad_checkpoints_fail_naming_the_file(tmp_path):
    other = tmp_path / "resnet_not_dan.pth"
    torch.save({"model_state_dict": nn.Linear(3, 4).state_dict()}, other)
    with pytest.raises(ValueError, match=r"resnet_not_dan\.pth.*missing"):
        load_dan_checkpoint(other)

    sd = DAN().state_dict()
    del sd["cat_head2.ca.attention.0.weight"]
    sd["extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.pth"
    torch.save({"model_state_dict": sd}, broken)
    with pytest.raises(ValueError, match=r"broken\.pth.*cat_head2\.ca.*extra\.weight"):
        load_dan_checkpoint(broken)

    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        load_dan_checkpoint(text)
    with pytest.raises(FileNotFoundError, match="absent"):
        load_dan_checkpoint(tmp_path / "absent.pth")


def _expected_abaw(logits, labels):
    """ABAW-ordered scores by name: softmax over the classes ABAW shares, 'Other' 0."""
    names = [c for c in labels.canonical if c in ABAW_EXPR.canonical]
    probs = torch.softmax(torch.tensor([logits[labels.canonical.index(c)] for c in names]), 0)
    out = torch.zeros(len(ABAW_EXPR))
    for c, p in zip(names, probs):
        out[ABAW_EXPR.canonical.index(c)] = p
    return out


def test_dan_branch_scores_in_abaw_order_by_name():
    bias = [0.0, 5.0, 1.0, 2.0, 3.0, -1.0, 0.5, 9.0]  # Happy high; Contempt higher but dropped
    dan = DAN()
    branch = ExpressionBranch(_biased(dan, dan.fc, bias), AFFECTNET8)
    assert branch.input_size == 224
    scores = branch(torch.randn(2, 3, 40, 40))  # resized to 224 inside
    assert scores.shape == (2, 8) and not scores.requires_grad
    assert torch.allclose(scores.sum(1), torch.ones(2))
    assert (scores.argmax(1) == ABAW_EXPR.index("Happiness")).all()  # column 4
    assert (scores[:, ABAW_EXPR.index("Other")] == 0).all()
    assert torch.allclose(scores[0], _expected_abaw(bias, AFFECTNET8), atol=1e-6)


def test_branch_is_frozen_inside_a_training_parent():
    torch.manual_seed(0)
    branch = ExpressionBranch(_randomise_bn(DAN()), AFFECTNET8, input_size=64)
    parent = nn.ModuleDict({"branch": branch, "head": nn.Linear(8, 2)})
    before = copy.deepcopy(branch.state_dict())
    head_before = parent["head"].weight.clone()
    opt = torch.optim.AdamW(parent.parameters(), lr=0.1, weight_decay=0.05)

    parent.train()
    assert not any(m.training for m in branch.modules())
    assert not any(p.requires_grad for p in branch.parameters())
    for _ in range(2):
        loss = parent["head"](parent["branch"](torch.randn(4, 3, 64, 64))).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    assert all(p.grad is None for p in branch.parameters())
    after = branch.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights AND BN statistics
    assert not torch.equal(head_before, parent["head"].weight)

    # the check has teeth: the same DAN left in train mode does move its statistics
    free = copy.deepcopy(branch.cnn).train()
    with torch.no_grad():
        free(torch.randn(2, 3, 64, 64))
    assert not torch.equal(free.bn.running_mean, before["cnn.bn.running_mean"])


def test_timm_cnn_branch_maps_fer2013_by_name():
    bias = [1.0, -2.0, 0.0, 6.0, 2.0, 0.5, 3.0]  # FER order: angry, disgust, ..., neutral
    branch = ExpressionBranch.from_config("resnet18", labels=FER2013, input_size=32)
    _biased(branch.cnn, branch.cnn.get_classifier(), bias)
    scores = branch(torch.randn(2, 3, 48, 48))
    assert scores.shape == (2, 8)
    assert (scores.argmax(1) == ABAW_EXPR.index("Happiness")).all()
    assert (scores[:, ABAW_EXPR.index("Other")] == 0).all()
    assert torch.allclose(scores[1], _expected_abaw(bias, FER2013), atol=1e-6)
    with pytest.raises(ValueError, match="LabelSet"):
        ExpressionBranch.from_config("resnet18")


def test_branch_converts_imagenet_input_to_the_cnns_statistics():
    seen = {}

    class Probe(nn.Module):
        def forward(self, x):
            seen["x"] = x
            return torch.zeros(len(x), 7)

    raw = torch.rand(1, 3, 8, 8)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    branch = ExpressionBranch(Probe(), FER2013, input_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    branch((raw - mean) / std)
    assert torch.allclose(seen["x"], (raw - 0.5) / 0.5, atol=1e-5)
