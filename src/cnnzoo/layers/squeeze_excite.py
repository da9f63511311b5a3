"""Squeeze-and-Excitation (Hu et al. 2018, 'Squeeze-and-Excitation Networks', arXiv 1709.01507)."""
from __future__ import annotations

import torch
from torch import nn

from .activations import ActLike, create_act
from .helpers import make_divisible


class SqueezeExcite(nn.Module):
    """Global-average 'squeeze', a two-layer bottleneck 'excitation', a gate per channel.

    ``rd_ratio`` is relative to ``chs`` (1/16 in SENet, 1/4 in MobileNetV3); EfficientNet sizes
    the bottleneck from the *block input* instead, so it passes ``rd_channels`` directly.
    ``rd_divisor`` rounds the bottleneck the way each reference does (8 in timm's SE-ResNets and
    MobileNetV3, 1 in EfficientNet).
    """

    def __init__(self, chs: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 rd_divisor: int = 8, act_layer: ActLike = "relu", gate_layer: ActLike = "sigmoid",
                 round_limit: float = 0.0):
        super().__init__()
        if rd_channels is None:
            rd_channels = make_divisible(chs * rd_ratio, rd_divisor, round_limit=round_limit)
        self.fc1 = nn.Conv2d(chs, rd_channels, 1, bias=True)
        # Out of place: fc1's output stays what fc1 computed, for a hook that keeps it.
        self.act = create_act(act_layer, inplace=False)
        self.fc2 = nn.Conv2d(rd_channels, chs, 1, bias=True)
        self.gate = create_act(gate_layer, inplace=False)

    def gate_values(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel weights in (0, 1) for a sigmoid gate; handy to inspect."""
        s = x.mean((2, 3), keepdim=True)
        return self.gate(self.fc2(self.act(self.fc1(s))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate_values(x)
