"""CBAM (Woo, Park, Lee, Kweon 2018, 'CBAM: Convolutional Block Attention Module', arXiv 1807.06521).

Channel attention, then spatial attention, applied in sequence (Section 3, Fig. 2: the sequential
channel-first order beat parallel and spatial-first in its Table 3).
"""
from __future__ import annotations

import torch
from torch import nn

from .activations import ActLike, create_act
from .conv_norm_act import ConvNormAct
from .helpers import make_divisible


class ChannelAttention(nn.Module):
    """Eq. 2: ``sigmoid(MLP(avgpool(F)) + MLP(maxpool(F)))``, one MLP shared by both descriptors.

    The MLP has biases as the authors' code does (28.09M for ResNet-50, Table 4); timm drops them
    (``mlp_bias=False``), which costs 16k parameters of 28M, so its weights load with zero biases.
    """

    def __init__(self, chs: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 rd_divisor: int = 1, act_layer: ActLike = "relu", gate_layer: ActLike = "sigmoid",
                 mlp_bias: bool = True):
        super().__init__()
        if rd_channels is None:
            rd_channels = make_divisible(chs * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(chs, rd_channels, 1, bias=mlp_bias)
        self.act = create_act(act_layer, inplace=False)
        self.fc2 = nn.Conv2d(rd_channels, chs, 1, bias=mlp_bias)
        self.gate = create_act(gate_layer, inplace=False)
        self.init_weights()

    def init_weights(self) -> None:
        """The authors' init (ResidualNet in Jongchan/attention-module): their MLP is nn.Linear,
        which their init loop leaves at torch's default (for a 1x1 conv the same distribution),
        apart from zeroing every bias. Families re-run this after their generic pass."""
        for fc in (self.fc1, self.fc2):
            fc.reset_parameters()
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)

    def _mlp(self, s: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(s)))

    def gate_values(self, x: torch.Tensor) -> torch.Tensor:
        avg = self._mlp(x.mean((2, 3), keepdim=True))
        mx = self._mlp(x.amax((2, 3), keepdim=True))
        return self.gate(avg + mx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate_values(x)


class SpatialAttention(nn.Module):
    """Eq. 3: a 7x7 conv over the channel-wise [mean; max] maps, then a sigmoid.

    The channel order is the paper's (average first, as timm); the authors' code stacks max
    first, so their spatial conv weights need their two input channels swapped. The BN after the
    conv is in both reference codes, though the paper does not mention it.
    """

    def __init__(self, kernel_size: int = 7, gate_layer: ActLike = "sigmoid"):
        super().__init__()
        self.conv = ConvNormAct(2, 1, kernel_size, act_layer=None)
        self.gate = create_act(gate_layer, inplace=False)
        self.init_weights()

    def init_weights(self) -> None:
        """The authors' init zeroes this BN's scale (and every bias), so the gate starts at a
        uniform sigmoid(0) = 0.5. Families re-run this after their generic pass."""
        nn.init.zeros_(self.conv.bn.weight)
        nn.init.zeros_(self.conv.bn.bias)

    def gate_values(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return self.gate(self.conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate_values(x)


class CBAM(nn.Module):
    """Channel attention (reduction 16, as the paper's ImageNet models), then 7x7 spatial attention."""

    def __init__(self, chs: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 rd_divisor: int = 1, spatial_kernel_size: int = 7, act_layer: ActLike = "relu",
                 gate_layer: ActLike = "sigmoid", mlp_bias: bool = True):
        super().__init__()
        self.channel = ChannelAttention(chs, rd_ratio, rd_channels, rd_divisor, act_layer,
                                        gate_layer, mlp_bias)
        self.spatial = SpatialAttention(spatial_kernel_size, gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
