"""Deformable convolution, v1 (Dai et al. 2017, 'Deformable Convolutional Networks', arXiv
1703.06211) and v2 (Zhu, Hu, Lin, Dai 2018, 'Deformable ConvNets v2', arXiv 1811.11168).

The sampling itself is ``torchvision.ops.deform_conv2d``; this module adds the learned offsets
(v1, Eq. 2 of DCNv1) and modulation scalars (v2, Eq. 3 of DCNv2), predicted from the input by a
plain conv of the same kernel, stride and dilation.
"""
from __future__ import annotations

import math

import torch
from torch import fx, nn

from .helpers import in_layout_of, same_padding


def _deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask):
    # Imported here: torchvision.ops loads torch._dynamo, about 1.5 s that `import cnnzoo`
    # would otherwise pay for every command.
    from torchvision.ops import deform_conv2d

    return deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding,
                         dilation=dilation, mask=mask)


# One call in an fx graph: torchvision checks its arguments' shapes in Python, which symbolic
# tracing cannot follow.
fx.wrap("_deform_conv2d")
# One call too: it asks the input for its layout, which symbolic tracing cannot.
fx.wrap("in_layout_of")


class DeformConv2d(nn.Module):
    """A k x k conv whose sampling grid moves per position (``modulated=True``: DCNv2).

    ``weight``/``bias`` have ``nn.Conv2d``'s shapes, so a plain conv's weights load unchanged.
    ``conv_offset`` starts at zero (both papers): offsets 0 and, for v2, masks ``sigmoid(0) =
    0.5`` (DCNv2 Section 3.1), so a fresh v1 layer is the plain conv and a fresh v2 one is half of it.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, dilation: int = 1, groups: int = 1,
                 bias: bool = False, modulated: bool = True, offset_groups: int = 1):
        super().__init__()
        if in_chs % groups or out_chs % groups:
            raise ValueError(f"channels {in_chs}->{out_chs} not divisible by groups={groups}")
        self.in_channels, self.out_channels = in_chs, out_chs
        self.kernel_size = (kernel_size, kernel_size)
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.padding = same_padding(kernel_size, stride, dilation) if padding is None else padding
        self.modulated = modulated
        self.offset_groups = offset_groups
        self.weight = nn.Parameter(torch.empty(out_chs, in_chs // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_chs)) if bias else None
        per_group = (3 if modulated else 2) * kernel_size * kernel_size
        self.conv_offset = nn.Conv2d(in_chs, offset_groups * per_group, kernel_size, stride=stride,
                                     padding=self.padding, dilation=dilation, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.init_weights()

    def init_weights(self) -> None:
        """Zero the offset/mask predictor; families re-run this after their generic init."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.conv_offset(x)
        if not self.modulated:
            return out, None
        # The first 2*k*k*offset_groups channels are (dy, dx) pairs, the rest the modulation logits.
        n = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        return out[:, :n], torch.sigmoid(out[:, n:])

    def deform(self, x: torch.Tensor, offset: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """The convolution at given offsets (and masks): zero offsets and unit masks give nn.Conv2d."""
        return _deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding,
                              self.dilation, mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x)
        # torchvision's kernel writes NCHW whatever it is given.
        return in_layout_of(self.deform(x, offset, mask), x)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, modulated={self.modulated}")
