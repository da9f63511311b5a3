"""``ZooNet.cpu_layout``: a CPU model runs NHWC whatever layout it is handed, and nobody sees it.

What a caller gets back is as before: logits, NCHW feature maps, NCHW weights; traces,
exports and ``optimize`` see the plain model. (Every family's values and layout throughout:
tests/test_layout.py.)
"""
from __future__ import annotations

import torch
from torch import nn

from cnnzoo import create_model
from cnnzoo.layers.pool import LayerTracer
from cnnzoo.perf import optimize

from conftest import randomise_bn

CL = torch.channels_last


def _first_conv_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen = []
    handle = conv.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0]


def test_an_nchw_input_runs_channels_last_and_none_keeps_it():
    model = create_model("resnet18", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    assert model.cpu_layout == CL
    assert _first_conv_input(model, x).is_contiguous(memory_format=CL)
    assert x.is_contiguous()  # the caller's tensor itself is left alone
    model.cpu_layout = None
    assert not _first_conv_input(model, x).is_contiguous(memory_format=CL)
    assert create_model("lenet5").cpu_layout is None  # one channel: nothing to gain


def test_maps_and_headless_outputs_come_back_nchw():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    features = create_model("resnet18", features_only=True).eval()
    with torch.no_grad():
        maps = features(x)
        features.model.cpu_layout = None
        plain = features(x)
    assert len(maps) == len(plain) > 1
    for got, want in zip(maps, plain):
        assert got.is_contiguous() and got.view(got.shape[0], -1).shape[1] == want[0].numel()
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    # A head without pooling returns the last map, and in the caller's layout too.
    model = create_model("resnet18", num_classes=0).eval()
    model.head.global_pool, model.head.flatten = nn.Identity(), nn.Identity()
    with torch.no_grad():
        out = model(x)
    assert out.dim() == 4 and out.is_contiguous()


def test_traces_and_optimize_see_the_plain_model_and_the_callers_is_untouched():
    torch.manual_seed(0)
    model = randomise_bn(create_model("resnet18", num_classes=5))
    graph = LayerTracer().trace(model)
    assert not any("contiguous" in str(n.target) for n in graph.nodes)
    x = torch.randn(4, 3, 64, 64)
    fast = optimize(model, example=x, channels_last=False, onednn=False, micro_batch=None)
    assert fast.model.cpu_layout is None and model.cpu_layout == CL
    assert not fast.report.channels_last
    assert not _first_conv_input(fast.model, x).is_contiguous(memory_format=CL)
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), rtol=1e-4, atol=1e-5)


def test_off_cpu_and_non_map_inputs_keep_their_layout():
    model = create_model("resnet18", num_classes=5)
    meta = torch.empty(2, 3, 64, 64, device="meta")
    moved, did = model.to_cpu_layout(meta)
    assert moved is meta and not did
    flat = torch.randn(2, 3)
    assert model.to_cpu_layout(flat) == (flat, False)
