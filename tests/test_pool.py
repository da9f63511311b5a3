"""perf.pooling: the oneDNN pooling pass gives torch's results bit for bit on finite inputs, steps
aside where it must, and leaves the model torch's layers in every other respect."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import cnnzoo
from cnnzoo.perf import pooling
from cnnzoo.perf.pooling import (OneDnnAvgPool2d, OneDnnMaxPool2d, count_pools,
                                 use_onednn_pooling)
from cnnzoo.perf.tracer import PerfTracer

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
    monkeypatch.setattr(pooling, "onednn_pooling_pays", lambda: True)
    calls = []
    real = pooling._in_pieces

    def counting(x, fn):
        calls.append(tuple(x.shape))
        return real(x, fn)
    monkeypatch.setattr(pooling, "_in_pieces", counting)
    return calls


def _swapped(layer: nn.Module) -> nn.Module:
    """``layer`` after the pass, which must have swapped exactly it."""
    assert use_onednn_pooling(layer) == 1
    return layer


def test_the_pass_swaps_every_plain_pool_in_place_and_keeps_torchs_classes():
    inner = nn.Sequential(nn.Conv2d(4, 4, 3), nn.MaxPool2d(2))
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2), inner,
                        nn.AdaptiveAvgPool2d(1))
    pools = [net[1], net[2], inner[1]]
    hooked = []
    net[1].register_forward_hook(lambda m, a, out: hooked.append(out.shape))
    assert count_pools(net) == 0
    assert use_onednn_pooling(net) == 3
    # The same module objects, now the twins; still torch's classes to isinstance and hooks.
    assert [net[1], net[2], inner[1]] == pools
    assert [type(m) for m in pools] == [OneDnnMaxPool2d, OneDnnAvgPool2d, OneDnnMaxPool2d]
    assert isinstance(net[1], nn.MaxPool2d) and isinstance(net[2], nn.AvgPool2d)
    assert type(net[4]) is nn.AdaptiveAvgPool2d  # not a pool the pass knows
    assert count_pools(net) == 3
    assert use_onednn_pooling(net) == 0  # already swapped: nothing more to do
    assert net[1].kernel_size == 3 and net[1].stride == 2 and net[1].padding == 1
    with torch.no_grad():
        net(torch.randn(1, 3, 24, 24))
    assert hooked == [(1, 4, 11, 11)]


def test_models_stay_plain_until_asked_and_then_compute_the_same_bits(onednn_calls):
    model = cnnzoo.create_model("resnet18", num_classes=10).eval()
    assert count_pools(model) == 0
    assert {type(m) for m in model.modules() if isinstance(m, nn.MaxPool2d)} == {nn.MaxPool2d}
    plain = copy.deepcopy(model)
    assert use_onednn_pooling(model) == sum(type(m) in (nn.MaxPool2d, nn.AvgPool2d)
                                            for m in plain.modules()) >= 1
    assert model.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), plain(x))
    assert onednn_calls  # the oneDNN path ran


@torch.inference_mode()
def test_max_pool_matches_torch_bit_for_bit(onednn_calls):
    x = torch.randn(3, 4, 13, 12)
    for k, s, p, ceil, h, w in CASES:
        xi = x[..., :h, :w].contiguous()
        out = _swapped(nn.MaxPool2d(k, s, p, ceil_mode=ceil))(xi)
        assert torch.equal(out, F.max_pool2d(xi, k, s, p, ceil_mode=ceil)), (k, s, p, ceil, h, w)
    assert len(onednn_calls) == len(CASES)


@torch.inference_mode()
def test_avg_pool_matches_torch(onednn_calls):
    x = torch.randn(3, 4, 13, 12)
    checked = 0
    for (k, s, p, ceil, h, w), cip in itertools.product(CASES, (False, True)):
        xi = x[..., :h, :w].contiguous()
        out = _swapped(nn.AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=cip))(xi)
        ref = F.avg_pool2d(xi, k, s, p, ceil_mode=ceil, count_include_pad=cip)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
        checked += 1
    # ceil_mode with count_include_pad divides differently in oneDNN: those stay on torch.
    assert len(onednn_calls) == sum(1 for c in CASES if not c[3]) * 2 + sum(1 for c in CASES if c[3])
    assert checked == 2 * len(CASES)


@torch.inference_mode()
def test_batch_split_into_pieces_joins_back_in_order(monkeypatch, onednn_calls):
    pieces = []
    real = torch.Tensor.to_mkldnn
    monkeypatch.setattr(pooling, "_PIECE_BYTES", 2 * 8 * 20 * 20 * 4)  # two images per piece
    monkeypatch.setattr(torch.Tensor, "to_mkldnn",
                        lambda t, *a, **k: pieces.append(t.shape[0]) or real(t, *a, **k))
    x = torch.randn(5, 8, 20, 20)
    out = _swapped(nn.MaxPool2d(3, 2, 1))(x)
    assert torch.equal(out, F.max_pool2d(x, 3, 2, 1))
    assert onednn_calls == [(5, 8, 20, 20)]
    assert pieces == [2, 2, 1]
    avg = _swapped(nn.AvgPool2d(2))(x)
    assert torch.equal(avg, F.avg_pool2d(x, 2))


@torch.inference_mode()
def test_nan_windows_are_where_the_pass_may_differ_from_torch(onednn_calls):
    # The documented change: oneDNN's max may skip a NaN that torch's propagates. Every window
    # without a NaN is still torch's bit for bit; one with a NaN gives NaN or the max of the rest.
    torch.manual_seed(0)
    x = torch.randn(2, 4, 12, 12)
    x[0, 1, 3, 4] = float("nan")
    x[1, 2, 0, 0] = float("nan")
    plain = nn.MaxPool2d(3, 2, 1)
    ours = _swapped(copy.deepcopy(plain))
    want, got = plain(x), ours(x)
    assert onednn_calls
    nan = want.isnan()
    assert nan.sum() >= 2  # torch's own pool (the models' default) propagates every NaN
    assert torch.equal(got[~nan], want[~nan])
    skipped = F.max_pool2d(x.nan_to_num(nan=-float("inf")), 3, 2, 1)
    assert (got[nan].isnan() | (got[nan] == skipped[nan])).all()


def test_training_keeps_torchs_kernel_and_gradient(onednn_calls):
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    ours = _swapped(nn.MaxPool2d(3, 2, 1)).train()
    ours(x).sum().backward()
    mine = x.grad.clone()
    x.grad = None
    nn.MaxPool2d(3, 2, 1)(x).sum().backward()
    assert torch.equal(mine, x.grad)
    avg = _swapped(nn.AvgPool2d(3, 2, 1))
    x.grad = None
    avg(x).sum().backward()
    mine = x.grad.clone()
    x.grad = None
    F.avg_pool2d(x, 3, 2, 1).sum().backward()
    assert torch.equal(mine, x.grad)
    # NaN propagates on this path, as in torch: it is torch's kernel.
    y = x.detach().clone()
    y[0, 0, 0, 0] = float("nan")
    assert ours(y.requires_grad_()).isnan().any()
    assert onednn_calls == []


@torch.inference_mode()
def test_layouts_dtypes_and_options_oneDNN_does_not_take_fall_back(onednn_calls):
    x = torch.randn(2, 8, 10, 10)
    cl = x.contiguous(memory_format=torch.channels_last)
    out = _swapped(nn.MaxPool2d(2))(cl)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, F.max_pool2d(x, 2))
    assert torch.equal(_swapped(nn.MaxPool2d(2))(x.double()), F.max_pool2d(x.double(), 2))
    assert torch.equal(_swapped(nn.MaxPool2d(3, dilation=2))(x), F.max_pool2d(x, 3, dilation=2))
    out, idx = _swapped(nn.MaxPool2d(2, return_indices=True))(x)
    assert torch.equal(idx, F.max_pool2d(x, 2, return_indices=True)[1])
    assert torch.equal(_swapped(nn.AvgPool2d(2, divisor_override=3))(x),
                       F.avg_pool2d(x, 2, divisor_override=3))
    assert onednn_calls == []


@torch.inference_mode()
def test_where_onednn_has_no_fast_kernel_torchs_runs(onednn_calls, monkeypatch):
    monkeypatch.setattr(pooling, "onednn_pooling_pays", lambda: False)
    x = torch.randn(2, 4, 13, 12)
    assert torch.equal(_swapped(nn.MaxPool2d(3, 2, 1))(x), F.max_pool2d(x, 3, 2, 1))
    assert torch.equal(_swapped(nn.AvgPool2d(3, 1, 1))(x), F.avg_pool2d(x, 3, 1, 1))
    assert onednn_calls == []


def test_onednn_pooling_pays_exactly_with_avx512(monkeypatch):
    def pays() -> bool:
        pooling.onednn_pooling_pays.cache_clear()
        try:
            return pooling.onednn_pooling_pays()
        finally:
            pooling.onednn_pooling_pays.cache_clear()

    for capability, avx512 in (("AVX512", True), ("AVX2", False), ("DEFAULT", False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert pays() is avx512
    # A torch without the public capability: its private probe, and without that, no.
    monkeypatch.delattr(torch.backends.cpu, "get_cpu_capability")
    for avx512 in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda v=avx512: v, raising=False)
        assert pays() is avx512
    monkeypatch.delattr(torch.cpu, "_is_avx512_supported")
    assert pays() is False


def test_tracers_keep_each_pool_one_call():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.AvgPool2d(2))
    assert use_onednn_pooling(net) == 2
    gm = fx.GraphModule(net, PerfTracer().trace(net))
    calls = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert [n.op for n in gm.graph.nodes] == ["placeholder"] + ["call_module"] * 3 + ["output"]
    assert [type(net.get_submodule(n.target)) for n in calls] == \
        [nn.Conv2d, OneDnnMaxPool2d, OneDnnAvgPool2d]
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(gm(x), net(x))
    # torch.fx's own tracer still traces the model after the pass: it records the plain ops.
    plain = fx.symbolic_trace(net)
    assert [n.target for n in plain.graph.nodes if n.op == "call_function"] == \
        [F.max_pool2d, F.avg_pool2d]
    with torch.no_grad():
        assert torch.equal(plain(x), net(x))


def test_onnx_export_sees_the_plain_op(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from cnnzoo.export.onnx import export_onnx
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2)).eval()
    assert use_onednn_pooling(net) == 2
    path = tmp_path / "pool.onnx"
    export_onnx(net, path, input_size=(3, 16, 16))  # also checks onnxruntime agrees
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"MaxPool", "AveragePool"} <= ops
