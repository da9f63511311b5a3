"""perf.training.for_training and perf.gates: the conv twins a training loop asks for.

PooledConv2d (SE and CBAM gates as GEMMs), DepthwiseConv2d (large depthwise kernels' weight
gradient on channels_last copies) and Conv2d (a dense conv's weight gradient on NCHW copies where
oneDNN's NHWC one is slow): each is swapped in for a plain ``nn.Conv2d`` by the pass, keeps what a
user holds of it, and takes its path only where it pays and is safe."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import cnnzoo
from cnnzoo.layers import ConvNormAct
from cnnzoo.layers.cbam import ChannelAttention
from cnnzoo.layers.squeeze_excite import SqueezeExcite
from cnnzoo.perf import training
from cnnzoo.perf.gates import PooledConv2d, gate_convs, gemm_gates
from cnnzoo.perf.onednn import FusedConv2d
from cnnzoo.perf.optimize import optimize
from cnnzoo.perf.tracer import PerfTracer
from cnnzoo.perf.training import (Conv2d, DepthwiseConv2d, count_twins, for_training,
                                  uses_channels_last)

CL = torch.channels_last
PLAIN = "ConvolutionBackward0"


@pytest.fixture
def linear_calls(monkeypatch):
    calls = []
    real = F.linear

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "linear", counting)
    return calls


def _grad_fn_name(y: torch.Tensor) -> str:
    return type(y.grad_fn).__name__


def _twin(conv: nn.Conv2d, cls: type, channels_last: bool = False) -> tuple[nn.Conv2d, nn.Conv2d]:
    """(``conv`` after the pass, a plain copy of it)."""
    plain = copy.deepcopy(conv)
    assert for_training(conv, channels_last=channels_last) is conv
    assert type(conv) is cls
    return conv, plain


# -- the pass as a whole ----------------------------------------------------------------------

def test_models_are_plain_until_the_pass_then_each_conv_gets_its_twin():
    model = cnnzoo.create_model("efficientnet_b0")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert {type(m) for m in convs} == {nn.Conv2d} and count_twins(model) == 0
    gates = {id(c) for c in gate_convs(model)}
    assert len(gates) == 32
    for_training(model, channels_last=False)
    assert [m for m in model.modules() if isinstance(m, nn.Conv2d)] == convs  # same objects
    assert count_twins(model) == len(convs)
    assert sum(type(m) is DepthwiseConv2d for m in convs) == 16
    assert all(type(m) is PooledConv2d for m in convs if id(m) in gates)
    # GEMMs only where autograd records: inference keeps the conv.
    assert not any(m.as_matmul for m in convs if id(m) in gates)
    assert for_training(model, channels_last=False) is model and count_twins(model) == len(convs)
    # Per conv, by its shape, wherever it sits.
    assert type(_twin(nn.Conv2d(16, 16, 5, groups=16), DepthwiseConv2d)[0]) is DepthwiseConv2d
    assert type(_twin(nn.Conv2d(16, 32, 3), Conv2d)[0]) is Conv2d
    assert type(_twin(nn.Conv2d(16, 32, 3, groups=4), Conv2d)[0]) is Conv2d


def test_twins_keep_parameters_state_dict_hooks_and_torchs_class():
    block = ConvNormAct(16, 64, 3)
    conv = block.conv
    params = [id(p) for p in block.parameters()]
    state = {k: v.clone() for k, v in block.state_dict().items()}
    seen, pre = [], []
    conv.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    conv.register_forward_pre_hook(lambda m, a: pre.append(a[0].shape))
    for_training(block, channels_last=True)
    assert block.conv is conv and type(conv) is Conv2d and isinstance(conv, nn.Conv2d)
    assert [id(p) for p in block.parameters()] == params
    assert block.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in block.state_dict().items())
    assert conv.weight.is_contiguous(memory_format=CL)  # laid out NHWC, in place
    block(torch.randn(2, 16, 8, 8, requires_grad=True)).sum().backward()
    assert seen == [(2, 64, 8, 8)] and pre == [(2, 16, 8, 8)]
    # And a plain model loads the twin's state dict as it stands, and the twin a plain one.
    plain = ConvNormAct(16, 64, 3)
    plain.load_state_dict(block.state_dict())
    block.load_state_dict(plain.state_dict())


def test_the_layout_follows_the_device_and_the_width():
    assert uses_channels_last(cnnzoo.create_model("resnet18"))
    assert not uses_channels_last(cnnzoo.create_model("lenet5"))
    model = for_training(cnnzoo.create_model("resnet18", num_classes=10))
    assert model.stem.conv.weight.is_contiguous(memory_format=CL)
    lenet = for_training(cnnzoo.create_model("lenet5"))
    assert all(m.weight.is_contiguous() for m in lenet.modules() if isinstance(m, nn.Conv2d))
    forced = for_training(cnnzoo.create_model("resnet18", num_classes=10), channels_last=False)
    assert forced.stem.conv.weight.is_contiguous()


@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_after_the_pass_is_the_plain_models_bit_for_bit(channels_last):
    torch.manual_seed(0)
    model = cnnzoo.create_model("efficientnet_b0", num_classes=10).eval()
    plain = copy.deepcopy(model)
    for_training(model, channels_last=channels_last)
    if channels_last:
        plain.to(memory_format=CL)  # the same layout: the twins run torch's conv in inference
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))
    with torch.inference_mode():
        assert torch.equal(model(x), plain(x))


def test_an_optimiser_built_before_the_pass_keeps_stepping_the_model():
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet18", num_classes=10)
    plain = copy.deepcopy(model)
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, plain)]

    def step(m, opt):
        opt.zero_grad()
        F.cross_entropy(m(x), target).backward()
        opt.step()

    for m, opt in zip((model, plain), opts):
        step(m, opt)  # momentum buffers made before the pass
    before = [p.detach().clone() for p in model.parameters()]
    for_training(model)  # NHWC on this CPU
    plain.to(memory_format=CL)  # the same layout, so only the twins could differ
    assert model.stem.conv.weight.is_contiguous(memory_format=CL)
    assert all(a is b for a, b in zip(opts[0].param_groups[0]["params"], model.parameters()))
    for m, opt in zip((model, plain), opts):
        step(m, opt)
    assert not any(torch.equal(p, q) for p, q in zip(model.parameters(), before)
                   if p.dim() == 4)  # the optimiser moved the weights the model runs on
    for (name, mine), theirs in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_the_model_still_traces_one_call_per_twin():
    model = for_training(cnnzoo.create_model("resnet18", num_classes=10)).eval()
    gm = fx.GraphModule(model, PerfTracer().trace(model))
    twins = [n.target for n in gm.graph.nodes if n.op == "call_module"
             and isinstance(model.get_submodule(n.target), (Conv2d, DepthwiseConv2d))]
    assert len(twins) == len(set(twins)) == count_twins(model) == 20
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


# -- PooledConv2d: the gates' 1x1 convs -------------------------------------------------------

def _gate_pair(bias: bool = True) -> tuple[PooledConv2d, nn.Conv2d]:
    torch.manual_seed(0)
    gate = ChannelAttention(24, rd_channels=6, mlp_bias=bias)
    if bias:
        nn.init.normal_(gate.fc1.bias)
    conv = copy.deepcopy(gate.fc1)
    for_training(gate, channels_last=False)
    assert type(gate.fc1) is type(gate.fc2) is PooledConv2d
    return gate.fc1, conv


@pytest.mark.parametrize("bias", [True, False])
def test_gemm_path_computes_the_convolution_and_its_gradients(bias, linear_calls):
    ours, conv = _gate_pair(bias)
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


def test_plain_inference_keeps_the_convolution_unless_gemm_gates_asks(linear_calls):
    ours, conv = _gate_pair()
    x = torch.randn(3, 24, 1, 1)
    with torch.no_grad():
        assert torch.equal(ours(x), conv(x))  # the peers' op, bit for bit
    assert not linear_calls
    se = SqueezeExcite(24, rd_channels=6)
    fc1 = se.fc1
    assert gemm_gates(se) == 2 and se.fc1 is fc1 and type(fc1) is PooledConv2d
    assert fc1.as_matmul and se.fc2.as_matmul and not PooledConv2d.as_matmul
    with torch.no_grad():
        torch.testing.assert_close(fc1(x), F.conv2d(x, fc1.weight, fc1.bias), rtol=1e-5, atol=1e-6)
    assert len(linear_calls) == 1
    assert not ours.as_matmul  # the flag is the instance's, not the class's


def test_maps_larger_than_one_pixel_take_the_convolution(linear_calls):
    ours, conv = _gate_pair()
    ours.as_matmul = True
    x = torch.randn(2, 24, 3, 3, requires_grad=True)
    torch.testing.assert_close(ours(x), conv(x))
    assert not linear_calls


def test_channels_last_input_gives_the_same_gate(linear_calls):
    ours, conv = _gate_pair()
    x = torch.randn(4, 24, 7, 7).contiguous(memory_format=CL)
    s = x.mean((2, 3), keepdim=True)  # what SE feeds it: strides of a channels_last map
    torch.testing.assert_close(ours(s), conv(s), rtol=1e-5, atol=1e-6)
    assert linear_calls


def test_se_and_cbam_keep_conv_state_dicts_hooks_and_one_traced_call():
    for block in (SqueezeExcite(32, rd_channels=8), ChannelAttention(32, rd_channels=8)):
        seen = []
        block.fc1.register_forward_hook(lambda m, a, out: seen.append(out.shape))
        for_training(block)
        sd = block.state_dict()
        assert sd["fc1.weight"].shape == (8, 32, 1, 1) and sd["fc2.weight"].shape == (32, 8, 1, 1)
        assert isinstance(block.fc1, nn.Conv2d) and type(block.fc1) is PooledConv2d
        block(torch.randn(2, 32, 5, 5, requires_grad=True))
        assert seen == [(2, 8, 1, 1)] * (1 if isinstance(block, SqueezeExcite) else 2)
        graph = PerfTracer().trace(block)
        targets = [n.target for n in graph.nodes if n.op == "call_module"]
        assert targets.count("fc1") == targets.count("fc2") >= 1


def test_optimize_turns_the_gemms_on_in_its_copy_only():
    model = cnnzoo.create_model("efficientnet_b0").eval()
    x = torch.randn(2, 3, 128, 128)
    fast = optimize(model, example=x, channels_last=True, micro_batch=None, onnxruntime=False,
                    steps=1)
    assert not any(isinstance(m, PooledConv2d) for m in model.modules())  # the model stays plain
    theirs = [m for m in fast.modules() if isinstance(m, PooledConv2d)]
    assert len(theirs) == 32 and all(m.as_matmul for m in theirs)
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(fast(x), want, rtol=1e-4, atol=1e-5)
    assert copy.deepcopy(fast.model).stages[1].blocks[0].se.fc1.as_matmul


# -- DepthwiseConv2d --------------------------------------------------------------------------

def _depthwise(k: int = 5, stride: int = 2, bias: bool = False):
    torch.manual_seed(0)
    return _twin(nn.Conv2d(12, 12, k, stride=stride, padding=k // 2, groups=12, bias=bias),
                 DepthwiseConv2d)


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
    assert _grad_fn_name(small(x)) == PLAIN  # 3x3: the NCHW kernel is faster
    assert _grad_fn_name(ours(x.contiguous(memory_format=CL))) == PLAIN  # NHWC already
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _grad_fn_name(ours(x)) == PLAIN
    with torch.no_grad():
        assert ours(x).grad_fn is None
    ours.weight.requires_grad_(False)  # frozen (transfer learning): no weight gradient to move
    assert _grad_fn_name(ours(x)) == PLAIN


def test_only_frozen_inputs_still_give_the_weight_gradient():
    ours, conv = _depthwise(k=5)
    x = torch.randn(2, 12, 11, 11)
    ours(x).sum().backward()
    conv(x).sum().backward()
    torch.testing.assert_close(ours.weight.grad, conv.weight.grad, rtol=1e-5, atol=1e-5)


def test_optimize_folds_and_fuses_a_trained_models_depthwise_twins():
    model = for_training(cnnzoo.create_model("mobilenet_v3_large")).eval()
    x = torch.randn(2, 3, 128, 128)
    fast = optimize(model, example=x, channels_last=True, onednn=True, micro_batch=None,
                    onnxruntime=False, steps=1)
    dw = [m.conv for m in fast.model.modules()
          if isinstance(m, FusedConv2d) and type(m.conv) is DepthwiseConv2d]
    assert len(dw) == sum(type(m) is DepthwiseConv2d for m in model.modules()) > 0
    assert fast.report.folded == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)


# -- Conv2d: the dense twin -------------------------------------------------------------------

@pytest.fixture
def slow_nhwc(monkeypatch):
    """The AVX2-only machine's rule, on whatever CPU the suite runs on."""
    monkeypatch.setattr(training, "_slow_nhwc_weight_grad", lambda: True)


def _dense(cin=16, cout=64, k=3, stride=1, dilation=1, bias=True, groups=1, channels_last=False):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=dilation * (k // 2), dilation=dilation,
                     bias=bias, groups=groups)
    return _twin(conv, Conv2d, channels_last)


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
    ours, conv = _dense(channels_last=True)  # the pass lays the weight out NHWC
    assert ours.weight.is_contiguous(memory_format=CL)
    conv = conv.to(memory_format=CL)
    x = torch.randn(2, 16, 12, 12).contiguous(memory_format=CL)
    ours(x).sum().backward()
    conv(x).sum().backward()
    assert ours.weight.grad.is_contiguous(memory_format=CL)
    _close_to_largest(ours.weight.grad, conv.weight.grad)


def test_dense_twin_gives_second_order_gradients(slow_nhwc):
    # A gradient penalty differentiates the input gradient again (create_graph=True).
    ours, conv = _dense()
    x = torch.randn(2, 16, 10, 10).contiguous(memory_format=CL).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    assert "WeightGradIn" in _grad_fn_name(ours(x))
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
    assert _grad_fn_name(ours(x.contiguous())) == PLAIN  # NCHW already
    for other in (_dense(k=1)[0],          # 1x1: NHWC's own kernel was the faster one
                  _dense(cout=32)[0],      # few output channels: the copies cost more
                  _dense(groups=2)[0]):    # grouped: not measured
        assert _grad_fn_name(other(x)) == PLAIN
    few = torch.randn(2, 8, 9, 9).contiguous(memory_format=CL)
    assert _grad_fn_name(_dense(cin=8)[0](few)) == PLAIN  # a stem's few input channels
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _grad_fn_name(ours(x)) == PLAIN
    with torch.no_grad():
        assert ours(x).grad_fn is None
    monkeypatch.setattr(training, "_slow_nhwc_weight_grad", lambda: False)
    assert _grad_fn_name(ours(x)) == PLAIN  # AVX-512: oneDNN's NHWC kernel is fast there
    monkeypatch.setattr(training, "_slow_nhwc_weight_grad", lambda: True)
    ours.weight.requires_grad_(False)  # frozen (transfer learning): no weight gradient
    assert _grad_fn_name(ours(x)) == PLAIN


class _Spy:
    def __init__(self, fn, seen):
        self.fn, self.seen = fn, seen

    def apply(self, *args):
        self.seen.append(args[-1])
        return self.fn.apply(*args)


@pytest.mark.parametrize("name", ["resnet18", "drn_c_26"])
def test_a_training_step_after_the_pass_gives_the_plain_models_gradients(slow_nhwc, monkeypatch,
                                                                         name):
    # Through a whole family (ResNet's plain and strided 3x3s; DRN's dilated ones): every
    # parameter's gradient as the plain model computes it in the layout the pass chose. (The
    # layout alone, NCHW against NHWC in torch's own kernels, moved a gradient of drn_c_26 at
    # batch 2 by 12% of its largest element: training-mode BatchNorm over two images amplifies
    # rounding. That is torch's, not the twins'.)
    torch.manual_seed(0)
    model = cnnzoo.create_model(name, num_classes=10)
    plain = copy.deepcopy(model)
    for_training(model)
    assert uses_channels_last(plain) and model.stem.conv.weight.is_contiguous(memory_format=CL)
    plain.to(memory_format=CL)
    assert sum(type(m) is Conv2d for m in model.modules()) > 5
    x = torch.randn(2, 3, 64, 64)
    target = torch.tensor([1, 7])
    seen = []
    monkeypatch.setattr(training, "_WeightGradIn", _Spy(training._WeightGradIn, seen))
    torch.manual_seed(1)  # the same dropout masks in both
    F.cross_entropy(model(x), target).backward()
    assert seen, "the twin's path ran"
    torch.manual_seed(1)
    F.cross_entropy(plain(x), target).backward()
    for (pname, mine), theirs in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4,
                                   atol=1e-5 * theirs.grad.abs().max().item() + 1e-8,
                                   msg=lambda m: f"{pname}: {m}")


def test_the_perf_passes_fold_and_fuse_a_trained_models_dense_twins():
    model = for_training(cnnzoo.create_model("resnet18")).eval()
    x = torch.randn(2, 3, 64, 64)
    # NNPACK off: 'auto' would move the 3x3s it times faster out of the oneDNN calls counted.
    fast = optimize(model, example=x, channels_last=True, onednn=True, nnpack=False,
                    micro_batch=None, onnxruntime=False, steps=1)
    dense = [m.conv for m in fast.model.modules()
             if isinstance(m, FusedConv2d) and type(m.conv) is Conv2d]
    assert len(dense) == sum(type(m) is Conv2d for m in model.modules()) > 10
    assert fast.report.folded == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
