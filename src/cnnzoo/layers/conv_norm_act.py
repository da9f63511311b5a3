"""Conv -> norm -> activation, the unit nearly every network after 2015 is made of."""
from __future__ import annotations

from torch import nn

from .activations import ActLike, create_act
from .helpers import same_padding
from .norm import NormLike, get_norm_layer


class ConvNormAct(nn.Sequential):
    """A conv, an optional norm and an optional activation, named ``conv``, ``bn``, ``act``.

    Padding defaults to 'same' for odd kernels (any stride), the convention of every family here
    except the 'valid' convolutions of LeNet, AlexNet and the Inception stems, which pass
    ``padding=0``. The conv has a bias only when there is no norm after it (a bias before BN is
    cancelled by BN's mean). The activation works in place only over a norm's output: a
    conv's own output stays what it computed, for a forward hook that keeps it.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int = 1, padding: int | tuple[int, int] | None = None, dilation: int = 1,
                 groups: int = 1, bias: bool | None = None, norm_layer: NormLike = nn.BatchNorm2d,
                 act_layer: ActLike = "relu", inplace: bool = True, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1):
        if padding is None:
            if isinstance(kernel_size, tuple):
                padding = tuple(same_padding(k, stride, dilation) for k in kernel_size)
            else:
                padding = same_padding(kernel_size, stride, dilation)
        norm_layer = get_norm_layer(norm_layer)
        if bias is None:
            bias = norm_layer is None
        layers: dict[str, nn.Module] = {
            "conv": nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias),
        }
        if norm_layer is not None:
            layers["bn"] = norm_layer(out_chs, eps=bn_eps, momentum=bn_momentum)
        if act_layer is not None:
            layers["act"] = create_act(act_layer, inplace=inplace and norm_layer is not None)
        super().__init__()
        for name, module in layers.items():
            self.add_module(name, module)
        self.in_channels = in_chs
        self.out_channels = out_chs
