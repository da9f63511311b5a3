"""perf/preact.py: BatchNorm -> ReLU -> 1x1 conv folds into a clamp and a conv, exactly."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cnnzoo import create_model
from cnnzoo.perf.fold import fold_batchnorm
from cnnzoo.perf.preact import ClampPerChannel, fold_preactivation


def _random_bn(channels: int, signs: torch.Tensor) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data = torch.rand(channels).add_(0.1) * signs
    bn.bias.data.normal_()
    return bn.eval()


class _Concat(nn.Module):
    """DenseNet's bottleneck in miniature: the BN reads a concatenation made for it alone."""

    def __init__(self, bn: nn.BatchNorm2d, conv: nn.Conv2d):
        super().__init__()
        self.bn, self.act, self.conv = bn, nn.ReLU(inplace=True), conv

    def forward(self, a, b):
        return self.conv(self.act(self.bn(torch.cat([a, b], 1))))


def test_every_sign_of_scale_folds_exactly():
    torch.manual_seed(0)
    # Positive, negative and zero scales: each takes its own branch of the identity.
    signs = torch.tensor([1.0, -1.0, 0.0, 1.0, -1.0, 1.0])
    model = nn.Sequential(_random_bn(6, signs), nn.ReLU(), nn.Conv2d(6, 5, 1, stride=2)).eval()
    x = torch.randn(3, 6, 9, 9) * 3
    ref = model(x)
    kept = x.clone()
    chains = fold_preactivation(model)
    assert chains == [("0", "1", "2", False)]
    assert isinstance(model[0], ClampPerChannel) and isinstance(model[1], nn.Identity)
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(x, kept)  # the input is the caller's: clamped out of place


def test_a_fresh_concatenation_is_clamped_in_place():
    torch.manual_seed(0)
    model = _Concat(_random_bn(6, torch.ones(6)), nn.Conv2d(6, 4, 1, bias=False)).eval()
    a, b = torch.randn(2, 4, 5, 5), torch.randn(2, 2, 5, 5)
    ref = model(a, b)
    kept = a.clone()
    (chain,) = fold_preactivation(model)
    assert chain[-1] is True and model.bn.inplace
    torch.testing.assert_close(model(a, b), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(a, kept)  # the concatenation was a new tensor; its parts are untouched


@pytest.mark.parametrize("conv", [nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1, padding=1),
                                  nn.Conv2d(4, 4, 1, groups=2)],
                         ids=["3x3", "padded-1x1", "grouped"])
def test_convs_that_would_see_padding_or_mix_groups_are_left_alone(conv):
    model = nn.Sequential(_random_bn(4, torch.ones(4)), nn.ReLU(), conv).eval()
    assert fold_preactivation(model) == []
    assert isinstance(model[0], nn.BatchNorm2d)


def test_a_relu_read_twice_is_left_alone():
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn, self.act = _random_bn(4, torch.ones(4)), nn.ReLU()
            self.conv = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.act(self.bn(x))
            return self.conv(y) + y

    assert fold_preactivation(TwoReaders().eval()) == []


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval"):
        fold_preactivation(nn.Sequential(nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 2, 1)))


def _random_stats(model: nn.Module) -> None:
    # Fresh BNs are identities: folding them would prove nothing.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)


def test_densenet_folds_every_bottleneck_and_transition():
    torch.manual_seed(0)
    model = create_model("densenet121", num_classes=10).eval()
    _random_stats(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        folded = copy.deepcopy(model)
        fold_batchnorm(folded)
        chains = fold_preactivation(folded)
        # 58 dense layers (6 + 12 + 24 + 16), each clamping the concatenation it made itself in
        # place, and 3 transitions, whose input is a dense block's output (a feature map a
        # caller may keep): clamped into a new tensor.
        assert len(chains) == 61
        assert sorted(c for *_, c in chains) == [False] * 3 + [True] * 58
        assert all(not fresh for _, _, conv, fresh in chains if "transition" in conv)
        torch.testing.assert_close(folded(x), ref, rtol=1e-4, atol=1e-4)


def test_feature_maps_of_a_folded_densenet_are_untouched():
    torch.manual_seed(0)
    model = create_model("densenet121", features_only=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        folded = copy.deepcopy(model)
        fold_batchnorm(folded)
        assert fold_preactivation(folded)
        for a, b in zip(folded(x), ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_bn_after_each_deformable_conv_folds_into_the_1x1_conv_after_it():
    # torchvision's deform_conv2d cannot be traced by fx; the perf tracer keeps it one call,
    # so the bottleneck around it is searched whole rather than child by child.
    from cnnzoo.layers.deform_conv import DeformConv2d

    torch.manual_seed(0)
    model = create_model("dcn_resnet50", num_classes=10).eval()
    _random_stats(model)
    deform = [n for n, m in model.named_modules() if isinstance(m, DeformConv2d)]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        folded = copy.deepcopy(model)
        pairs = fold_batchnorm(folded)
        chains = fold_preactivation(folded)
        assert deform and not {conv for conv, _ in pairs} & set(deform)
        # What folding left: exactly the BNs the deformable convs feed.
        assert sorted(bn.removesuffix(".bn") for bn, *_ in chains) == \
            sorted(n.removesuffix(".conv") for n in deform)
        torch.testing.assert_close(folded(x), ref, rtol=1e-4, atol=1e-4)
