"""A fresh model starts as its reference starts: tensor by tensor against the peer's own fresh
initialisation (torchvision/timm) where the peer initialises as the reference does, else against
the formula of the authors' code or the paper.

Statistics are checked on tensors of >= 500 values (std within 15%); constants exactly.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnzoo import create_model
from cnnzoo.layers.cbam import ChannelAttention, SpatialAttention
from cnnzoo.layers.non_local import NonLocal
from cnnzoo.weights.mapping import peers_of, rename_keys

BIG = 500  # fewer draws give no stable standard deviation


def _is_const(t: torch.Tensor) -> bool:
    return bool((t == t.flatten()[0]).all())


def _assert_starts_like(ours: nn.Module, peer: nn.Module, name: str, source: str) -> None:
    own = {k: v for k, v in ours.state_dict().items() if not k.endswith("num_batches_tracked")}
    theirs = rename_keys(peer.state_dict(), peers_of(name)[source].layout, own)
    paired = [k for k in own if k in theirs]
    assert len(paired) == len(own), [k for k in own if k not in theirs][:5]
    for k in paired:
        a, b = own[k].double(), theirs[k].double()
        if _is_const(a) or _is_const(b):
            assert _is_const(a) and _is_const(b) and a.flatten()[0] == b.flatten()[0], k
        elif a.numel() >= BIG:
            assert a.std().item() == pytest.approx(b.std().item(), rel=0.15), k
            assert abs(a.mean().item() - b.mean().item()) < 0.1 * b.std().item(), k


@pytest.mark.parametrize("name,timm_name", [("mobilenet_v3_large", "mobilenetv3_large_100"),
                                            ("mobilenet_v3_small", "mobilenetv3_small_100")])
def test_mobilenet_v3_starts_as_timm_its_post_pool_layer_as_a_1x1_conv(name, timm_name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ours = create_model(name)
    fc1 = ours.head.fc1
    assert fc1.weight.std().item() == pytest.approx(math.sqrt(2.0 / fc1.out_features), rel=0.15)
    assert not fc1.bias.any()
    _assert_starts_like(ours, timm.create_model(timm_name), name, "timm")


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_inception_v3_starts_as_torchvision_and_timm(source):
    torch.manual_seed(0)
    ours = create_model("inception_v3", aux_logits=True)
    if source == "torchvision":
        import torchvision
        peer = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    else:
        peer = pytest.importorskip("timm").create_model("inception_v3", aux_logits=True)
    _assert_starts_like(ours, peer, "inception_v3", source)
    aux = ours.aux_heads["mixed_6e"]
    assert aux.fc.weight.std().item() == pytest.approx(0.001, rel=0.15)
    # The peers' stddev=0.01 sits on the conv-BN wrapper, out of their loop's reach: 0.1 it is.
    assert aux.convs[1].conv.weight.std().item() == pytest.approx(0.1, rel=0.15)
    assert ours.head.fc.weight.std().item() == pytest.approx(0.1, rel=0.15)


def test_googlenet_starts_as_torchvision():
    import torchvision
    torch.manual_seed(0)
    ours = create_model("googlenet", aux_logits=True)
    peer = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    _assert_starts_like(ours, peer, "googlenet", "torchvision")
    fc = ours.head.fc  # torch's default bias, U(+-1/sqrt(fan_in)), as torchvision leaves it
    assert fc.bias.abs().max().item() <= 1 / math.sqrt(fc.in_features)
    assert fc.bias.std().item() == pytest.approx(1 / math.sqrt(3 * fc.in_features), rel=0.15)


def _fans(m: nn.Module) -> tuple[int, int]:
    receptive = m.weight[0, 0].numel()
    return m.weight.shape[1] * receptive, m.weight.shape[0] * receptive


@pytest.mark.parametrize("name,he_convs", [("inception_v4", True), ("inception_resnet_v2", False)])
def test_inception_v4_and_resnet_v2_start_as_the_authors_tf_slim_code(name, he_convs):
    # slim/nets: inception_v4_arg_scope = inception_utils.inception_arg_scope, whose convs get
    # variance_scaling_initializer() (normal std sqrt(1.3 * 2 / fan_in), redrawn beyond 2 std);
    # inception_resnet_v2_arg_scope sets no initializer, so convs keep slim's Xavier uniform, as
    # slim.fully_connected does in both. Biases zero.
    torch.manual_seed(0)
    model = create_model(name)
    seen = 0
    for m in model.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        if m.bias is not None:
            assert not m.bias.any(), m
        fan_in, fan_out = _fans(m)
        if isinstance(m, nn.Conv2d) and he_convs:
            sigma = math.sqrt(2.6 / fan_in)
            bound, std = 2 * sigma, 0.8796 * sigma  # the std of a normal cut at +-2 std
        else:
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            std = bound / math.sqrt(3.0)
        assert m.weight.abs().max().item() <= bound * (1 + 1e-6), m
        if m.weight.numel() >= BIG:
            assert m.weight.std().item() == pytest.approx(std, rel=0.15), m
            seen += 1
    assert seen > 100


def test_drn_classifier_starts_as_the_authors_1x1_conv():
    # fyu/drn: every conv, the 1x1-conv classifier included, N(0, sqrt(2 / (k*k*out))).
    torch.manual_seed(0)
    fc = create_model("drn_c_26").head.fc
    assert fc.weight.std().item() == pytest.approx(math.sqrt(2.0 / fc.out_features), rel=0.15)
    assert abs(fc.weight.mean().item()) < 0.05 * math.sqrt(2.0 / fc.out_features)
    assert fc.bias.abs().max().item() <= 1 / math.sqrt(fc.in_features)  # torch's default


def test_cbam_starts_as_the_authors_residualnet():
    # Jongchan/attention-module ResidualNet: SpatialGate BN scale 0, every bias 0; the channel
    # MLP's nn.Linear weights keep torch's default, U(+-1/sqrt(fan_in)).
    torch.manual_seed(0)
    model = create_model("cbam_resnet50")
    spatial = [m for m in model.modules() if isinstance(m, SpatialAttention)]
    channel = [m for m in model.modules() if isinstance(m, ChannelAttention)]
    assert len(spatial) == len(channel) == 16
    for m in spatial:
        assert not m.conv.bn.weight.any() and not m.conv.bn.bias.any()
    for m in channel:
        for fc in (m.fc1, m.fc2):
            assert not fc.bias.any()
            bound = 1 / math.sqrt(fc.weight[0].numel())
            assert fc.weight.abs().max().item() <= bound
            assert fc.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)


def test_non_local_convs_start_with_zero_biases():
    # timm's NonLocalAttn and the authors' video-nonlocal-net (bias ConstantFill 0).
    torch.manual_seed(0)
    blocks = [m for m in create_model("nl_resnet50").modules() if isinstance(m, NonLocal)]
    assert len(blocks) == 5
    for m in blocks:
        for conv in (m.theta, m.phi, m.g, m.out.conv):
            assert not conv.bias.any()


@pytest.mark.parametrize("name", ["bn_inception", "se_inception_v3"])
def test_inception_variants_without_a_reference_keep_he_fan_out(name):
    torch.manual_seed(0)
    for m in create_model(name).modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= BIG:
            _, fan_out = _fans(m)
            assert m.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.15), m
