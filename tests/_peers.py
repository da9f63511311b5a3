"""Peer models for the weights tests: torchvision's and timm's networks with seeded random weights.

Random weights must be able to expose a wrong mapping, so none is left constant (timm zero-inits
the last BN of each residual branch, torchvision zeroes biases): every tensor is drawn afresh,
dense ones scaled by 1/sqrt(fan-in), and BatchNorm's running statistics are set from one batch,
so that activations stay O(1) through 150 layers and each tensor moves the output.

Models are built on the meta device and materialised once: the libraries' own initialisation of
a VGG (twice 138M random numbers) would cost more than the whole comparison.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from cnnzoo import create_model, default_cfg
from cnnzoo.weights import load_pretrained


def _materialise(model: nn.Module, seed: int) -> nn.Module:
    model.to_empty(device="cpu")
    stateful = {f"{n}.{b}" for n, m in model.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) for b, _ in m.named_buffers()}
    other = [n for n, _ in model.named_buffers() if n.removeprefix(".") not in stateful]
    assert not other, f"buffers this helper cannot fill: {other[:3]}"
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:  # variance 1/fan-in; uniform is the cheapest to draw
                bound = (3 / p[0].numel()) ** 0.5
                p.uniform_(-bound, bound, generator=gen)
            elif name.endswith("weight"):  # a norm's scale
                p.uniform_(0.5, 1.5, generator=gen)
            else:
                p.uniform_(-0.2, 0.2, generator=gen)
    return model


# torchvision's Inception v3 auxiliary head needs >= 299 px input in training mode (which the BN
# calibration uses); the main network is what is compared.
PEER_KWARGS = {
    ("torchvision", "googlenet"): dict(init_weights=False),
    ("torchvision", "inception_v3"): dict(init_weights=False, aux_logits=False),
}


def build_peer(source: str, name: str, side: int, seed: int = 0) -> nn.Module:
    kwargs = PEER_KWARGS.get((source, name), {})
    with torch.device("meta"):
        if source == "torchvision":
            import torchvision
            model = torchvision.models.get_model(name, weights=None, **kwargs)
        else:
            import timm
            model = timm.create_model(name, pretrained=False, **kwargs)
    model = _materialise(model, seed)
    calibrate_bn(model, side)
    return model.eval()


def build_ours_from(name: str, weights, **kwargs) -> nn.Module:
    """``create_model(name, pretrained=weights)``, minus the random init the weights replace."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    model.to_empty(device="cpu")
    load_pretrained(model, weights, name=name)
    return model.eval()


def calibrate_bn(model: nn.Module, size: int, seed: int = 1, chans: int = 3,
                 batch: int = 4) -> None:
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly its statistics
    model.train()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model(torch.randn(batch, chans, size, size, generator=gen))
    model.eval()


def input_side(ours: str) -> int:
    """A small square input our model accepts (fixed-size models keep theirs)."""
    cfg = default_cfg(ours)
    return cfg.input_size[-1] if cfg.fixed_size else max(64, cfg.min_size)


def outputs_in_both_layouts(ours: nn.Module, theirs: nn.Module, x: torch.Tensor,
                            atol: float = 1e-5) -> list:
    """(ours, reference, tolerance) on ``x``: NCHW against the peer, NHWC against the truth.

    NCHW, as the caller hands it: torch's kernels on both sides, within ``atol`` of the peer's
    output (the pair that proves the weights map; :func:`exact_peer` says where it must be bit
    for bit). NHWC, both models fed a channels_last input: the same convolutions, rounded in
    another order, and through random weights a deep net amplifies any rounding (timm's own
    efficientnet_b4 gave 0.45 apart, of 499, in its two layouts; torchvision's resnet152
    0.0022 of 28). No one rounding path is right there, so ours is held to the truth: the peer
    run in float64, and ours must be no further from it than twice the peer's own float32
    error in either layout, plus ``atol`` of the largest output; a wrong layer is orders
    further. Where the peer's own layouts differ by over 1% of the largest output
    (efficientnet_b6 and b7: chaos, not arithmetic) rounding cannot be told from an error,
    and only the NCHW pair is returned."""
    with torch.no_grad():
        pairs = [(ours(x), theirs(x), atol)]
        x_cl = x.contiguous(memory_format=torch.channels_last)
        theirs_nhwc = theirs(x_cl)
        spread = (theirs_nhwc - pairs[0][1]).abs().max().item()
        scale = max(1.0, theirs_nhwc.abs().max().item())
        if spread <= 0.01 * scale:
            truth = copy.deepcopy(theirs).double()(x.double()).float()
            peer_error = max((theirs_nhwc - truth).abs().max().item(),
                             (pairs[0][1] - truth).abs().max().item())
            pairs.append((ours(x_cl), truth, atol * scale + 2 * peer_error))
    return pairs
