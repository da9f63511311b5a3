"""Parameter counts without paying for the weights."""
from __future__ import annotations

import torch
from torch import nn

from ..registry import create_model
from .meta import on_meta


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def registered_param_count(name: str, **kwargs) -> int:
    """Parameter count of a registered model, built on the meta device.

    Meta tensors have shapes but no storage, so even VGG-19's 144M parameters cost nothing to
    count, and ``on_meta`` skips the initialisers.
    """
    with on_meta():
        model = create_model(name, **kwargs)
    return count_params(model)


def _deform_conv_flops(input_shape, weight_shape, *_args, out_shape=None, **_kwargs) -> int:
    # Each output value sums in_channels/groups x kh x kw samples, as a convolution does (the
    # bilinear sampling of the offsets is not a multiply-accumulate of the layer, and is left out
    # as torch leaves out pooling).
    _, cin_per_group, kh, kw = weight_shape
    n = 1
    for d in out_shape:
        n *= d
    return 2 * n * cin_per_group * kh * kw


def flop_counter(model: nn.Module):
    """torch's FlopCounterMode, taught the ops it does not know that a model here uses.

    torchvision's deform_conv2d (DCN) would otherwise count as nothing; its op is only known
    once torchvision.ops is imported (1.5 s), so that happens only for a model that uses it.
    """
    from torch.utils.flop_counter import FlopCounterMode

    custom = {}
    if any("Deform" in type(m).__name__ for m in model.modules()):
        import torchvision.ops  # noqa: F401  (registers torch.ops.torchvision)
        custom[torch.ops.torchvision.deform_conv2d] = _deform_conv_flops
    return FlopCounterMode(display=False, custom_mapping=custom)


def count_macs(model: nn.Module, input_size: tuple[int, ...] | None = None) -> int:
    """Multiply-accumulates of one forward pass of one image (batch 1).

    Counted by torch.utils.flop_counter.FlopCounterMode, which counts convolutions and matrix
    products (2 FLOPs per MAC) and leaves out normalisation, activations and pooling, the
    convention of torchvision's published ``_ops`` and of most papers. A model on the meta device
    is counted without doing the arithmetic.
    """
    from .meta import meta_norms

    if input_size is None:
        input_size = tuple(model.default_cfg.input_size)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), flop_counter(model) as counter, meta_norms(device):
            model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def registered_macs(name: str, input_size: tuple[int, ...] | None = None, **kwargs) -> int:
    """MACs of a registered model at its default resolution (or ``input_size``), on meta."""
    with on_meta():
        model = create_model(name, **kwargs)
    return count_macs(model, input_size)
