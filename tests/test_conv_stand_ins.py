"""The Conv2d stand-ins: PooledConv2d (SE and CBAM gates as GEMMs), DepthwiseConv2d (large
depthwise kernels' weight gradient on channels_last copies) and Conv2d (a dense conv's weight
gradient on NCHW copies where oneDNN's NHWC one is slow), each where it pays and is safe."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.layers.cbam import ChannelAttention
from cnnzoo.layers.pool import LayerTracer
from cnnzoo.layers import ConvNormAct
from cnnzoo.layers import conv2d as conv2d_module
from cnnzoo.layers.conv2d import Conv2d, DepthwiseConv2d, PooledConv2d
from cnnzoo.perf.onednn import FusedConv2d
from cnnzoo.layers.squeeze_excite import SqueezeExcite
from cnnzoo.perf.optimize import optimize


@pytest.fixture
def linear_calls(monkeypatch):
    calls = []
    real = F.linear

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "linear", counting)
    return calls


def _pair(bias: bool = True):
    torch.manual_seed(0)
    ours = PooledConv2d(24, 6, bias=bias)
    conv = nn.Conv2d(24, 6, 1, bias=bias)
    conv.load_state_dict(ours.state_dict())
    return ours, conv


@pytest.mark.parametrize("bias", [True, False])
def test_gemm_path_computes_the_convolution_and_its_gradients(bias, linear_calls):
    ours, conv = _pair(bias)
    x = torch.randn(5, 24, 1, 1, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    got, want = ours(x), conv(x2)
    assert linear_calls, "autograd recording: the GEMM path"
    assert got.shape == want.shape == (5, 6, 1, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(want)
    got.backward(g)
    want.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.weight.grad, conv.weight.grad, rtol=1e-5, atol=1e-6)
    if bias:
        torch.testing.assert_close(ours.bias.grad, conv.bias.grad, rtol=1e-5, atol=1e-6)


def test_plain_inference_keeps_the_convolution_unless_asked(linear_calls):
    ours, conv = _pair()
    x = torch.randn(3, 24, 1, 1)
    with torch.no_grad():
        assert torch.equal(ours(x), conv(x))  # the peers' op, bit for bit
        assert not linear_calls
        ours.as_matmul = True
        torch.testing.assert_close(ours(x), conv(x), rtol=1e-5, atol=1e-6)
    assert len(linear_calls) == 1


def test_maps_larger_than_one_pixel_take_the_convolution(linear_calls):
    ours, conv = _pair()
    ours.as_matmul = True
    x = torch.randn(2, 24, 3, 3, requires_grad=True)
    torch.testing.assert_close(ours(x), conv(x))
    assert not linear_calls


def test_channels_last_input_gives_the_same_gate(linear_calls):
    ours, conv = _pair()
    x = torch.randn(4, 24, 7, 7).contiguous(memory_format=torch.channels_last)
    s = x.mean((2, 3), keepdim=True)  # what SE feeds it: strides of a channels_last map
    torch.testing.assert_close(ours(s), conv(s), rtol=1e-5, atol=1e-6)
    assert linear_calls


def test_se_and_cbam_keep_conv_state_dicts_hooks_and_one_traced_call():
    for block in (SqueezeExcite(32, rd_channels=8), ChannelAttention(32, rd_channels=8)):
        sd = block.state_dict()
        assert sd["fc1.weight"].shape == (8, 32, 1, 1) and sd["fc2.weight"].shape == (32, 8, 1, 1)
        assert isinstance(block.fc1, nn.Conv2d)
        seen = []
        block.fc1.register_forward_hook(lambda m, a, out: seen.append(out.shape))
        block(torch.randn(2, 32, 5, 5, requires_grad=True))
        assert seen == [(2, 8, 1, 1)] * (1 if isinstance(block, SqueezeExcite) else 2)
        graph = LayerTracer().trace(block)
        assert {n.target for n in graph.nodes if n.op == "call_module"} >= {"fc1", "fc2"}


def test_optimize_turns_the_gemms_on_in_its_copy_only():
    model = cnnzoo.create_model("efficientnet_b0").eval()
    x = torch.randn(2, 3, 224, 224)
    fast = optimize(model, example=x, channels_last=True, micro_batch=None, onnxruntime=False,
                    steps=1)
    mine = [m for m in model.modules() if isinstance(m, PooledConv2d)]
    theirs = [m for m in fast.modules() if isinstance(m, PooledConv2d)]
    assert len(mine) == len(theirs) == 32
    assert not any(m.as_matmul for m in mine) and all(m.as_matmul for m in theirs)
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(fast(x), want, rtol=1e-4, atol=1e-5)
    assert copy.deepcopy(fast.model).stages[1].blocks[0].se.fc1.as_matmul


def _depthwise(k: int = 5, stride: int = 2, bias: bool = False):
    torch.manual_seed(0)
    ours = DepthwiseConv2d(12, 12, k, stride=stride, padding=k // 2, groups=12, bias=bias)
    conv = nn.Conv2d(12, 12, k, stride=stride, padding=k // 2, groups=12, bias=bias)
    conv.load_state_dict(ours.state_dict())
    return ours, conv


def _grad_fn_name(y: torch.Tensor) -> str:
    return type(y.grad_fn).__name__


@pytest.mark.parametrize("k, stride, bias", [(5, 2, False), (7, 1, True), (5, 1, True)])
def test_depthwise_weight_gradient_through_channels_last_equals_the_convs(k, stride, bias):
    ours, conv = _depthwise(k, stride, bias)
    x = torch.randn(3, 12, 17, 17, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    got, want = ours(x), conv(x2)
    assert "WeightGradIn" in _grad_fn_name(got)
    assert torch.equal(got, want)  # the forward is torch's own conv
    g = torch.randn_like(want)
    got.backward(g)
    want.backward(g)
    assert torch.equal(x.grad, x2.grad)  # and so is the input gradient
    # Each weight gradient sums 3 x 17 x 17 products, in another order on the channels_last
    # copies: rounding is a few ulps of the largest sum, not of each element (on an AVX2 EPYC a
    # gradient differed by 1.1e-4 where the largest was 103: 14 ulps of it).
    for mine, torchs in ((ours.weight.grad, conv.weight.grad),
                         *(((ours.bias.grad, conv.bias.grad),) if bias else ())):
        torch.testing.assert_close(mine, torchs, rtol=1e-5, atol=1e-5 * torchs.abs().max().item())
    assert ours.weight.grad.is_contiguous()


def test_depthwise_takes_torchs_conv_wherever_its_path_does_not_pay_or_apply():
    x = torch.randn(2, 12, 9, 9, requires_grad=True)
    ours, _ = _depthwise(k=5)
    assert "WeightGradIn" in _grad_fn_name(ours(x))
    small, _ = _depthwise(k=3)
    assert _grad_fn_name(small(x)) == "ConvolutionBackward0"  # 3x3: the NCHW kernel is faster
    assert _grad_fn_name(ours(x.contiguous(memory_format=torch.channels_last))) == \
        "ConvolutionBackward0"  # already channels_last: torch's kernel runs there anyway
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _grad_fn_name(ours(x)) == "ConvolutionBackward0"
    with torch.no_grad():
        assert ours(x).grad_fn is None
    ours.weight.requires_grad_(False)  # frozen (transfer learning): no weight gradient to move
    assert _grad_fn_name(ours(x)) == "ConvolutionBackward0"


def test_only_frozen_inputs_still_give_the_weight_gradient():
    ours, conv = _depthwise(k=5)
    x = torch.randn(2, 12, 11, 11)
    ours(x).sum().backward()
    conv(x).sum().backward()
    torch.testing.assert_close(ours.weight.grad, conv.weight.grad, rtol=1e-5, atol=1e-5)


def test_conv_norm_act_builds_the_depthwise_stand_in_for_depthwise_convs_only():
    assert type(ConvNormAct(16, 16, 5, groups=16).conv) is DepthwiseConv2d
    assert type(ConvNormAct(16, 32, 3).conv) is Conv2d
    assert type(ConvNormAct(16, 32, 3, groups=4).conv) is Conv2d
    model = cnnzoo.create_model("efficientnet_b0")
    assert sum(type(m) is DepthwiseConv2d for m in model.modules()) == 16


def test_optimize_folds_and_fuses_the_depthwise_stand_ins():
    model = cnnzoo.create_model("mobilenet_v3_large").eval()
    x = torch.randn(2, 3, 224, 224)
    fast = optimize(model, example=x, channels_last=True, onednn=True, micro_batch=None,
                    onnxruntime=False, steps=1)
    dw = [m.conv for m in fast.model.modules()
          if isinstance(m, FusedConv2d) and type(m.conv) is DepthwiseConv2d]
    assert len(dw) == sum(type(m) is DepthwiseConv2d for m in model.modules()) > 0
    assert fast.report.folded == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)


CL = torch.channels_last


@pytest.fixture
def slow_nhwc(monkeypatch):
    """The AVX2-only machine's rule, on whatever CPU the suite runs on."""
    monkeypatch.setattr(conv2d_module, "_slow_nhwc_weight_grad", lambda: True)


def _dense(cin=16, cout=64, k=3, stride=1, dilation=1, bias=True, groups=1):
    torch.manual_seed(0)
    kw = dict(stride=stride, padding=dilation * (k // 2), dilation=dilation, bias=bias,
              groups=groups)
    ours, conv = Conv2d(cin, cout, k, **kw), nn.Conv2d(cin, cout, k, **kw)
    conv.load_state_dict(ours.state_dict())
    return ours, conv


def _close_to_largest(mine, torchs):
    # A weight gradient sums N x H x W products; NCHW and NHWC kernels add them in another order.
    torch.testing.assert_close(mine, torchs, rtol=1e-5, atol=1e-5 * torchs.abs().max().item())


@pytest.mark.parametrize("k, stride, dilation, bias", [(3, 1, 1, True), (3, 2, 1, False),
                                                       (3, 1, 2, True), (5, 1, 1, False)])
def test_dense_weight_gradient_through_nchw_equals_the_convs(slow_nhwc, k, stride, dilation,
                                                             bias):
    ours, conv = _dense(k=k, stride=stride, dilation=dilation, bias=bias)
    x = torch.randn(3, 16, 19, 19).contiguous(memory_format=CL).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    got, want = ours(x), conv(x2)
    assert "WeightGradIn" in _grad_fn_name(got)
    assert torch.equal(got, want)  # the forward is torch's own NHWC conv
    assert got.is_contiguous(memory_format=CL)
    g = torch.randn_like(want)
    got.backward(g)
    want.backward(g)
    assert torch.equal(x.grad, x2.grad)  # and so is the input gradient
    _close_to_largest(ours.weight.grad, conv.weight.grad)
    if bias:
        _close_to_largest(ours.bias.grad, conv.bias.grad)
    # The parameter's layout, so an optimiser's buffers keep it.
    assert ours.weight.grad.is_contiguous()


def test_dense_weight_gradient_keeps_a_channels_last_weights_layout(slow_nhwc):
    ours, conv = _dense()
    ours, conv = ours.to(memory_format=CL), conv.to(memory_format=CL)
    x = torch.randn(2, 16, 12, 12).contiguous(memory_format=CL)
    ours(x).sum().backward()
    conv(x).sum().backward()
    assert ours.weight.grad.is_contiguous(memory_format=CL)
    _close_to_largest(ours.weight.grad, conv.weight.grad)


def test_dense_stand_in_gives_second_order_gradients(slow_nhwc):
    # A gradient penalty differentiates the input gradient again (create_graph=True).
    ours, conv = _dense()
    x = torch.randn(2, 16, 10, 10).contiguous(memory_format=CL).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    for m, inp in ((ours, x), (conv, x2)):
        (gx,) = torch.autograd.grad(m(inp).pow(2).sum(), inp, create_graph=True)
        gx.pow(2).sum().backward()
    _close_to_largest(x.grad, x2.grad)
    _close_to_largest(ours.weight.grad, conv.weight.grad)


def test_dense_takes_torchs_conv_wherever_its_path_does_not_pay_or_apply(slow_nhwc,
                                                                          monkeypatch):
    x = torch.randn(2, 16, 9, 9).contiguous(memory_format=CL)
    ours, _ = _dense()
    assert "WeightGradIn" in _grad_fn_name(ours(x))
    plain = "ConvolutionBackward0"
    assert _grad_fn_name(ours(x.contiguous())) == plain  # NCHW already
    for other in (_dense(k=1)[0],          # 1x1: NHWC's own kernel was the faster one
                  _dense(cout=32)[0],      # few output channels: the copies cost more
                  _dense(groups=2)[0]):    # grouped: not measured
        assert _grad_fn_name(other(x)) == plain
    few = torch.randn(2, 8, 9, 9).contiguous(memory_format=CL)
    assert _grad_fn_name(_dense(cin=8)[0](few)) == plain  # a stem's few input channels
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _grad_fn_name(ours(x)) == plain
    with torch.no_grad():
        assert ours(x).grad_fn is None
    monkeypatch.setattr(conv2d_module, "_slow_nhwc_weight_grad", lambda: False)
    assert _grad_fn_name(ours(x)) == plain  # AVX-512: oneDNN's NHWC kernel is fast there
    monkeypatch.setattr(conv2d_module, "_slow_nhwc_weight_grad", lambda: True)
    ours.weight.requires_grad_(False)  # frozen (transfer learning): no weight gradient
    assert _grad_fn_name(ours(x)) == plain


@pytest.mark.parametrize("name", ["vgg11", "drn_c_26"])
def test_a_training_step_gives_torchs_gradients_through_the_dense_stand_ins(slow_nhwc,
                                                                             monkeypatch,
                                                                             name):
    # Through a whole family (VGG's plain 3x3s; DRN's strided and dilated ones), the model in
    # its default NHWC layout: every parameter's gradient as with torch's conv alone.
    torch.manual_seed(0)
    model = cnnzoo.create_model(name, num_classes=10)
    twin = copy.deepcopy(model)
    x = torch.randn(2, 3, 64, 64)
    target = torch.tensor([1, 7])
    assert sum(type(m) is Conv2d for m in model.modules()) > 5
    seen = []
    monkeypatch.setattr(conv2d_module, "_WeightGradIn", _Spy(conv2d_module._WeightGradIn, seen))
    torch.manual_seed(1)  # the same dropout masks in both
    F.cross_entropy(model(x), target).backward()
    assert seen, "the stand-in's path ran"
    monkeypatch.setattr(conv2d_module, "_slow_nhwc_weight_grad", lambda: False)
    torch.manual_seed(1)
    F.cross_entropy(twin(x), target).backward()
    for (pname, mine), theirs in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4,
                                   atol=1e-5 * theirs.grad.abs().max().item() + 1e-8,
                                   msg=lambda m: f"{pname}: {m}")


class _Spy:
    def __init__(self, fn, seen):
        self.fn, self.seen = fn, seen

    def apply(self, *args):
        self.seen.append(args[-1])
        return self.fn.apply(*args)


def test_the_perf_passes_fold_and_fuse_the_dense_stand_ins():
    model = cnnzoo.create_model("resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    # NNPACK off: 'auto' would move the 3x3s it times faster out of the oneDNN calls counted.
    fast = optimize(model, example=x, channels_last=True, onednn=True, nnpack=False,
                    micro_batch=None, onnxruntime=False, steps=1)
    dense = [m.conv for m in fast.model.modules()
             if isinstance(m, FusedConv2d) and type(m.conv) is Conv2d]
    assert len(dense) == sum(type(m) is Conv2d for m in model.modules()) > 10
    assert fast.report.folded == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, Conv2d) for m in fast.model.modules())
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
    graph = LayerTracer().trace(model)
    assert any(n.op == "call_module" and type(model.get_submodule(n.target)) is Conv2d
               for n in graph.nodes)  # kept whole, like torch's conv
