"""perf/nnpack.py: which fused convs NNPACK takes, that it computes what oneDNN did in either
layout, and that ``choose`` moves a conv only where the clock says NNPACK ran faster."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cnnzoo import create_model, optimize
from cnnzoo.perf import nnpack
from cnnzoo.perf.onednn import FusedConv2d, available as onednn_available, fuse_for_cpu

pytestmark = pytest.mark.skipif(not (nnpack.available() and onednn_available()),
                                reason="this PyTorch build has no NNPACK or no oneDNN")

# Winograd's transforms round differently from the direct sum: ~1e-5 of the output's scale.
TOL = dict(rtol=1e-4, atol=1e-4)


def _fused(model: nn.Module, x: torch.Tensor) -> nn.Module:
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        fuse_for_cpu(model, x)
    return model


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),          # 0: eligible, with its ReLU
        nn.Conv2d(16, 16, 3, padding=1, bias=False),        # 2: eligible, no bias, no act
        nn.Conv2d(16, 16, 3, stride=2, padding=1),          # 3: strided
        nn.Conv2d(16, 16, 3, padding=2, dilation=2),        # 4: dilated
        nn.Conv2d(16, 16, 3, padding=1, groups=4),          # 5: grouped
        nn.Conv2d(16, 16, 1), nn.ReLU(),                    # 6: 1x1
        nn.Conv2d(16, 16, 3, padding=1), nn.Hardswish())    # 8: eligible, act after it


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x) + x)


def test_only_3x3_stride_1_ungrouped_convs_with_no_residual_add_are_eligible():
    x = torch.randn(2, 3, 12, 12)
    fused = _fused(_net(), x)
    assert [i for i, m in enumerate(fused) if nnpack.eligible(m)] == [0, 2, 8]
    # Inside a container: the model's own forward is never rewritten.
    residual = _fused(nn.Sequential(_Residual()), torch.randn(1, 4, 6, 6))[0]
    assert isinstance(residual.conv, FusedConv2d) and residual.conv.binary
    assert not nnpack.eligible(residual.conv)
    assert not nnpack.eligible(nn.Conv2d(3, 3, 3))  # not fused: nothing to replace
    with pytest.raises(ValueError, match="3x3"):
        nnpack.NnpackConv2d(fused[3])


@pytest.mark.parametrize("channels_last", [False, True])
def test_nnpack_computes_what_the_fused_conv_did_and_keeps_the_input_layout(channels_last):
    x = torch.randn(2, 3, 12, 12)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model = _net().eval()
    fused = _fused(model, x)
    with torch.no_grad():
        ref = model(x)
        for i in (0, 2, 8):
            mid = fused[:i](x) if i else x
            out = nnpack.NnpackConv2d(fused[i])(mid)
            torch.testing.assert_close(out, fused[i](mid), **TOL)
            # oneDNN may hand on NHWC from an NCHW input: NNPACK keeps what it was given.
            nhwc = not mid.is_contiguous()
            assert out.is_contiguous(memory_format=torch.channels_last if nhwc
                                     else torch.contiguous_format)
            assert nhwc is (channels_last or i > 0)
        assert nnpack.place(fused, ["0", "2", "8"]) == 3
        assert [fused[i].unary[0] for i in (0, 2, 8)] == ["relu", "none", "hardswish"]
        torch.testing.assert_close(fused(x), ref, **TOL)


@pytest.mark.parametrize("act", [nn.ReLU6(), nn.SiLU(), nn.Sigmoid(), nn.Tanh(),
                                 nn.LeakyReLU(0.2), nn.GELU("tanh")], ids=repr)
def test_every_activation_onednn_fuses_runs_after_nnpack(act):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), act).eval()
    x = torch.randn(2, 4, 10, 10)
    fused = _fused(model, x)
    assert nnpack.place(fused, ["0"]) == 1
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), **TOL)


def test_off_the_fast_path_it_runs_the_plain_convolution():
    x = torch.randn(2, 3, 12, 12)
    fused = _fused(_net(), x)
    conv = nnpack.NnpackConv2d(fused[0])
    with torch.no_grad():
        conv.double()
        out = conv(x.double())
        expect = torch.relu(nn.functional.conv2d(x.double(), fused[0].conv.weight,
                                                 fused[0].conv.bias, padding=1))
    assert conv.unary[0] == "relu"
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expect)


def test_place_keeps_state_dict_names_and_passes_over_what_is_not_there():
    x = torch.randn(2, 3, 12, 12)
    fused = _fused(_net(), x)
    keys = list(fused.state_dict())
    assert nnpack.place(fused, ["0", "3", "no.such.conv"]) == 1  # 3 is strided: not moved
    assert list(fused.state_dict()) == keys
    again = copy.deepcopy(fused)
    assert nnpack.count(again) == 1
    with torch.no_grad():
        torch.testing.assert_close(again(x), fused(x))


@pytest.mark.parametrize("nnpack_cost, expect", [(1.0, True), (3.0, False)])
def test_choose_moves_a_conv_only_where_its_nnpack_step_was_shorter(monkeypatch, nnpack_cost,
                                                                     expect):
    last = {"kind": None}
    for cls, kind in ((FusedConv2d, "onednn"), (nnpack.NnpackConv2d, "nnpack")):
        forward = cls.forward

        def spy(self, *args, forward=forward, kind=kind):
            last["kind"] = kind
            return forward(self, *args)
        monkeypatch.setattr(cls, "forward", spy)
    now = [0.0]

    def clock() -> float:
        now[0] += nnpack_cost if last["kind"] == "nnpack" else 2.0
        return now[0]
    x = torch.randn(2, 3, 12, 12)
    fused = _fused(_net(), x)
    assert nnpack.choose(fused, x, steps=3, clock=clock) == [n for n in ["0", "2", "8"]
                                                             if expect]
    assert nnpack.choose(fused, x, measure=False) == ["0", "2", "8"]


def test_optimize_moves_vgg_convs_to_nnpack_when_asked_and_keeps_outputs():
    torch.manual_seed(0)
    model = create_model("vgg11", num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    on = optimize(model, example=x, channels_last=True, onednn=True, nnpack=True,
                  micro_batch=None)
    off = optimize(model, example=x, channels_last=True, onednn=True, nnpack=False,
                   micro_batch=None)
    # vgg11's eight convs: the first and the 3x3 stride-1 rest are all eligible.
    assert on.report.nnpack == 8 and "8 3x3 convs on NNPACK" in on.report.describe()
    assert off.report.nnpack == 0 and off.report.onednn == 8
    torch.testing.assert_close(on(x), ref, **TOL)
    with pytest.raises(ValueError, match="nnpack"):
        optimize(model, example=x, nnpack="sometimes")


def test_where_channels_last_won_plain_the_fused_model_in_nchw_races_too(monkeypatch):
    """NNPACK reads NCHW: with convs cheapest there, the NCHW fused candidate must win."""
    from cnnzoo.perf.training import Conv2d
    last = {"kind": None, "nhwc": False}
    for cls, kind in ((nn.Conv2d, "plain"), (Conv2d, "plain"), (FusedConv2d, "onednn"),
                      (nnpack.NnpackConv2d, "nnpack")):
        forward = cls.forward

        def spy(self, x, *args, forward=forward, kind=kind):
            last.update(kind=kind, nhwc=not x.is_contiguous())
            return forward(self, x, *args)
        monkeypatch.setattr(cls, "forward", spy)
    costs = {("plain", False): 3.0, ("plain", True): 2.0, ("onednn", False): 2.0,
             ("onednn", True): 2.0, ("nnpack", False): 0.5, ("nnpack", True): 1.0}
    now = [0.0]

    def clock() -> float:
        now[0] += costs.get((last["kind"], last["nhwc"]), 1.0)
        return now[0]
    torch.manual_seed(0)
    model = create_model("vgg11", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    fast = optimize(model, example=x, micro_batch=None, clock=clock)
    assert {"eager_channels_last_onednn", "eager_nchw_onednn"} <= set(fast.report.timings_ms)
    assert fast.report.channels_last is False and fast.report.nnpack == 8
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), **TOL)
