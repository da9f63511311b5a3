"""The oneDNN-backed pooling layers give torch's results bit for bit, and step aside when they must."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from cnnzoo.layers import pool
from cnnzoo.layers.pool import AvgPool2d, LayerTracer, MaxPool2d

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                reason="this torch build has no oneDNN")

CASES = [(k, s, p, ceil, h, w)
         for k, s, p, ceil, h, w in itertools.product((2, 3, 5), (1, 2, 3), (0, 1, 2),
                                                       (False, True), (7, 8, 13), (9, 12))
         if p <= k // 2]


@pytest.fixture
def onednn_calls(monkeypatch):
    """Counts the pieces that went through oneDNN, so a test knows which path it checked.

    The oneDNN path is switched on whatever this CPU is, so it is checked on every machine.
    """
    monkeypatch.setattr(pool, "onednn_pooling_pays", lambda: True)
    calls = []
    real = pool._in_pieces

    def counting(x, fn):
        calls.append(x.shape)
        return real(x, fn)
    monkeypatch.setattr(pool, "_in_pieces", counting)
    return calls


@torch.inference_mode()
def test_max_pool_matches_torch_bit_for_bit(onednn_calls):
    x = torch.randn(3, 4, 13, 12)
    for k, s, p, ceil, h, w in CASES:
        xi = x[..., :h, :w].contiguous()
        out = MaxPool2d(k, s, p, ceil_mode=ceil)(xi)
        assert torch.equal(out, F.max_pool2d(xi, k, s, p, ceil_mode=ceil)), (k, s, p, ceil, h, w)
    assert len(onednn_calls) == len(CASES)


@torch.inference_mode()
def test_avg_pool_matches_torch(onednn_calls):
    x = torch.randn(3, 4, 13, 12)
    checked = 0
    for (k, s, p, ceil, h, w), cip in itertools.product(CASES, (False, True)):
        xi = x[..., :h, :w].contiguous()
        out = AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=cip)(xi)
        ref = F.avg_pool2d(xi, k, s, p, ceil_mode=ceil, count_include_pad=cip)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
        checked += 1
    # ceil_mode with count_include_pad divides differently in oneDNN: those stay on torch.
    assert len(onednn_calls) == sum(1 for c in CASES if not c[3]) * 2 + sum(1 for c in CASES if c[3])
    assert checked == 2 * len(CASES)


@torch.inference_mode()
def test_batch_split_into_pieces_joins_back_in_order(monkeypatch, onednn_calls):
    monkeypatch.setattr(pool, "_PIECE_BYTES", 2 * 8 * 20 * 20 * 4)  # two images per piece
    x = torch.randn(5, 8, 20, 20)
    out = MaxPool2d(3, 2, 1)(x)
    assert torch.equal(out, F.max_pool2d(x, 3, 2, 1))
    assert onednn_calls == [(5, 8, 20, 20)]
    avg = AvgPool2d(2)(x)
    assert torch.equal(avg, F.avg_pool2d(x, 2))


def test_training_keeps_torchs_kernel_and_gradient(onednn_calls):
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    MaxPool2d(3, 2, 1)(x).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    nn.MaxPool2d(3, 2, 1)(x).sum().backward()
    assert torch.equal(ours, x.grad)
    assert onednn_calls == []


@torch.inference_mode()
def test_layouts_dtypes_and_options_oneDNN_does_not_take_fall_back(onednn_calls):
    x = torch.randn(2, 8, 10, 10)
    cl = x.contiguous(memory_format=torch.channels_last)
    out = MaxPool2d(2)(cl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, F.max_pool2d(x, 2))
    assert torch.equal(MaxPool2d(2)(x.double()), F.max_pool2d(x.double(), 2))
    assert torch.equal(MaxPool2d(3, dilation=2)(x), F.max_pool2d(x, 3, dilation=2))
    out, idx = MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(idx, F.max_pool2d(x, 2, return_indices=True)[1])
    assert torch.equal(AvgPool2d(2, divisor_override=3)(x), F.avg_pool2d(x, 2, divisor_override=3))
    assert onednn_calls == []


@torch.inference_mode()
def test_where_onednn_has_no_fast_kernel_torchs_runs(onednn_calls, monkeypatch):
    monkeypatch.setattr(pool, "onednn_pooling_pays", lambda: False)
    x = torch.randn(2, 4, 13, 12)
    assert torch.equal(MaxPool2d(3, 2, 1)(x), F.max_pool2d(x, 3, 2, 1))
    assert torch.equal(AvgPool2d(3, 1, 1)(x), F.avg_pool2d(x, 3, 1, 1))
    assert onednn_calls == []


def test_onednn_pooling_pays_exactly_with_avx512(monkeypatch):
    for avx512 in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda v=avx512: v)
        pool.onednn_pooling_pays.cache_clear()
        try:
            assert pool.onednn_pooling_pays() is avx512
        finally:
            pool.onednn_pooling_pays.cache_clear()


def test_tracers_keep_the_layers_whole():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), MaxPool2d(2), AvgPool2d(2))
    gm = fx.GraphModule(net, LayerTracer().trace(net))
    assert [n.op for n in gm.graph.nodes] == ["placeholder"] + ["call_module"] * 3 + ["output"]
    x = torch.randn(1, 3, 12, 12)
    assert torch.equal(gm(x), net(x))


def test_onnx_export_sees_the_plain_op(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from cnnzoo.export.onnx import export_onnx
    net = nn.Sequential(nn.Conv2d(3, 4, 3), MaxPool2d(3, 2, 1), AvgPool2d(2)).eval()
    path = tmp_path / "pool.onnx"
    export_onnx(net, path, input_size=(3, 16, 16))  # also checks onnxruntime agrees
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"MaxPool", "AveragePool"} <= ops
