"""Memory layout: a model runs its maps in the layout of its input, all the way through.

NCHW in, NCHW throughout: the computation is then torchvision's and timm's bit for bit
(tests/test_weights_import.py). channels_last in, channels_last throughout, which is oneDNN's
and cuDNN's fast path; no layer may drop back to NCHW (and cost a reorder at every layer after
it), and the values are the NCHW run's up to fp32 rounding. No model picks a layout of its own:
the weights and state dict stay NCHW either way, and the layout is the caller's choice (or a
perf pass's: ``optimize``, ``for_training``).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnzoo import create_model
from cnnzoo.perf.tracer import layout_of

from conftest import randomise_bn, small_input, smallest_per_family

FAMILIES = smallest_per_family()
CL = torch.channels_last


def _conv_inputs(model: nn.Module, run) -> list[torch.Tensor]:
    """Every conv's input during ``run()``, in the order the convs ran."""
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


def _wide(seen: list[torch.Tensor]) -> list[torch.Tensor]:
    """The conv inputs whose layout means something: more than one pixel, more than two
    channels (CBAM's [mean; max] map is two channels that torch.cat builds NCHW either way)."""
    return [t for t in seen if t.dim() == 4 and t.shape[1] > 2 and t.shape[2] * t.shape[3] > 1]


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> bool:
    # Relative to the largest value: a random-init Inception's logits reach 1e12, and the two
    # layouts sum in different orders (torchvision's own resnet50 differs by 1.7e-5 of its
    # largest logit between them).
    return bool((a - b).abs().max() <= rel * b.abs().max() + 1e-6)


@pytest.mark.parametrize("name", FAMILIES.values(), ids=FAMILIES.keys())
def test_every_family_keeps_its_inputs_layout_and_its_values(name):
    torch.manual_seed(0)
    model = randomise_bn(create_model(name))
    x = small_input(name)
    out = {}
    with torch.no_grad():
        nchw = _wide(_conv_inputs(model, lambda: out.update(nchw=model(x))))
        cl = _wide(_conv_inputs(model, lambda: out.update(
            cl=model(x.contiguous(memory_format=CL)))))
    assert nchw and all(t.is_contiguous() for t in nchw)
    # A one-channel image (LeNet's) is NCHW and channels_last at once; torch then runs the
    # convs NCHW, and the maps after them stay so.
    if x.shape[1] > 1:
        assert all(t.is_contiguous(memory_format=CL) for t in cl), \
            [i for i, t in enumerate(cl) if not t.is_contiguous(memory_format=CL)]
    assert _close(out["cl"], out["nchw"]), f"{name}: channels_last and NCHW outputs differ"
    assert all(p.is_contiguous() for p in model.parameters())  # the state dict is untouched


def test_training_in_channels_last_gives_the_nchw_gradients():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=7).train()
    x = torch.randn(4, 3, 64, 64)
    target = torch.tensor([0, 3, 6, 2])
    grads = {}
    for fmt in (torch.contiguous_format, CL):
        model.zero_grad(set_to_none=True)
        seen = _conv_inputs(model, lambda: nn.functional.cross_entropy(
            model(x.contiguous(memory_format=fmt)), target).backward())
        assert all(t.is_contiguous(memory_format=fmt) for t in _wide(seen))
        grads[fmt] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n, g in grads[torch.contiguous_format].items():
        assert grads[CL][n].is_contiguous(), n  # what an optimiser and a checkpoint see
        assert _close(grads[CL][n], g, rel=1e-3), n


def test_layout_of_names_the_layout_and_calls_an_ambiguous_map_nchw():
    x = torch.randn(2, 8, 5, 5)
    assert layout_of(x) == torch.contiguous_format
    assert layout_of(x.contiguous(memory_format=CL)) == CL
    for both in (torch.randn(2, 1, 5, 5), torch.randn(2, 8, 1, 1)):  # either layout at once
        assert layout_of(both.contiguous(memory_format=CL)) == torch.contiguous_format
    assert layout_of(torch.randn(4, 3)) == torch.contiguous_format
