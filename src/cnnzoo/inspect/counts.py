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


def deform_conv2d_flops(x_shape, w_shape, offset_shape, mask_shape, bias_shape, *conv_args,
                        out_shape) -> int:
    """FLOPs (2 per MAC) of ``torchvision::deform_conv2d``, as torch's counter counts a conv.

    Counted: the convolution over the sampled values, ``N x Ho x Wo x Cout x Cin/groups x kh x
    kw`` MACs as for ``nn.Conv2d``, plus the bilinear sampling, 4 MACs (a weighted sum of four
    neighbours) per sampled value ``N x Cin x Ho x Wo x kh x kw``, and 1 more for DCNv2's
    modulation mask. Not counted: the interpolation weights computed from the fractional
    offsets (no multiply-accumulates on the data), and the bias, which torch's conv count leaves
    out as well. The conv that predicts the offsets is an ``nn.Conv2d`` and counted as one.
    """
    n, _, ho, wo = out_shape
    cout, cin_per_group, kh, kw = w_shape
    use_mask = bool(conv_args[-1]) if conv_args else mask_shape is not None
    conv = n * ho * wo * cout * cin_per_group * kh * kw
    sampling = n * x_shape[1] * ho * wo * kh * kw * (4 + int(use_mask))
    return 2 * (conv + sampling)


def flop_counter(model: nn.Module | None = None):
    """torch's FlopCounterMode, taught deformable convolutions (``deform_conv2d_flops``).

    torchvision's operator exists only once torchvision is imported (about 2 s), so it is
    imported only for a model that holds a deformable conv, or when no model is given.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from ..layers.deform_conv import DeformConv2d

    mapping = {}
    if model is None or any(isinstance(m, DeformConv2d) for m in model.modules()):
        import torchvision  # noqa: F401  (registers torch.ops.torchvision)
        mapping[torch.ops.torchvision.deform_conv2d] = deform_conv2d_flops
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_macs(model: nn.Module, input_size: tuple[int, ...] | None = None) -> int:
    """Multiply-accumulates of one forward pass of one image (batch 1).

    Counted by torch.utils.flop_counter.FlopCounterMode, which counts convolutions and matrix
    products (2 FLOPs per MAC) and leaves out normalisation, activations and pooling, the
    convention of torchvision's published ``_ops`` and of most papers; deformable convolutions
    as ``deform_conv2d_flops`` says. A model on the meta device is counted without doing the
    arithmetic.
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
