"""Every registered model is plain PyTorch: the tools that trace, export or hook torch models work.

Torch's own layer classes, no layout switching, no in-place rewrite of a layer's output, no branch
on grad mode or tracing: so torch.fx traces each model, torchvision's feature extractor takes the
maps ``feature_info`` advertises, torch.export exports it, and a forward hook that keeps a conv's
output still holds what that conv computed when the forward is over.
"""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn
from torchvision.models.feature_extraction import create_feature_extractor

from cnnzoo import create_model, default_cfg, list_models
from cnnzoo.errors import InputSizeError

MODELS = list_models()
# Layers a model builds from torch's own classes, never from a subclass of them.
TORCH_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.Linear, nn.ReLU,
                nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Dropout)


@functools.lru_cache(maxsize=1)
def _model_and_input(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The model in eval mode, seeded, and the smallest input of (64, 96, default) it takes:
    the checks are about the graph, not the size."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    c, h, w = default_cfg(name).input_size
    g = torch.Generator().manual_seed(1)
    for side in (64, 96):
        if side >= min(h, w):
            break
        x = torch.randn(1, c, side, side, generator=g)
        try:
            with torch.no_grad():
                model(x)
        except (InputSizeError, RuntimeError):
            continue
        return model, x
    return model, torch.randn(1, c, h, w, generator=g)


@pytest.mark.parametrize("name", MODELS)
def test_layers_are_torchs_own_classes(name):
    with torch.device("meta"):
        model = create_model(name)
    strangers = sorted({f"{type(m).__module__}.{type(m).__name__}" for m in model.modules()
                        if isinstance(m, TORCH_LAYERS) and type(m).__module__.split(".")[0] != "torch"})
    assert not strangers, strangers
    assert not [n for n, m in model.named_modules() if type(m).__module__.startswith("cnnzoo.perf")]


@pytest.mark.parametrize("name", MODELS)
def test_fx_symbolic_trace_computes_the_same(name):
    model, x = _model_and_input(name)
    gm = fx.symbolic_trace(model)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


@pytest.mark.parametrize("name", MODELS)
def test_feature_extractor_returns_the_advertised_maps(name):
    model, x = _model_and_input(name)
    info = model.feature_info
    extractor = create_feature_extractor(
        model, return_nodes={item["module"]: str(i) for i, item in enumerate(info)})
    with torch.no_grad():
        maps = extractor(x)
    assert [maps[str(i)].shape[1] for i in range(len(info))] == [i["num_chs"] for i in info]


@pytest.mark.parametrize("name", MODELS)
def test_torch_export_exports_it(name):
    model, x = _model_and_input(name)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        out, ref = exported.module()(x), model(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("name", MODELS)
def test_a_hook_that_keeps_a_convs_output_still_holds_what_it_computed(name):
    model, x = _model_and_input(name)
    kept = []
    hooks = [m.register_forward_hook(lambda mod, args, out: kept.append((mod, args[0], out)))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    assert kept
    with torch.no_grad():
        for conv, inp, out in kept:
            # Kept without a copy: anything in place later in the forward would show here.
            again = F.conv2d(inp, conv.weight, conv.bias, conv.stride, conv.padding,
                             conv.dilation, conv.groups)
            assert torch.equal(out, again), conv
