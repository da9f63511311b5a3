"""PooledConv2d: the one-pixel 1x1 convs of SE and CBAM, as GEMMs where that pays and is safe."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.layers.cbam import ChannelAttention
from cnnzoo.layers.pool import LayerTracer
from cnnzoo.layers.pooled_conv import PooledConv2d
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
