"""The blocks of the mobile era: MobileNetV1's depthwise-separable conv and the inverted residual.

- ``DepthwiseSeparable`` (Howard et al. 2017, arXiv 1704.04861, Fig. 3): a kxk depthwise conv
  filters each channel on its own, a 1x1 pointwise conv mixes them; each is followed by BN and
  an activation. For a k x k kernel and M -> N channels this costs k*k*M + M*N weights instead of
  k*k*M*N.
- ``MBConv`` (MobileNetV2, Sandler et al. 2018, arXiv 1801.04381, Fig. 3 and Table 1): 1x1
  expansion -> kxk depthwise -> (SE) -> 1x1 linear projection, the shortcut joining the thin
  ends. The projection has no activation: the paper's 'linear bottleneck', because a ReLU in a
  narrow space destroys information. With ``fused=True`` the expansion and the depthwise conv
  become one full kxk conv: the Fused-MBConv of EfficientNetV2 (Tan & Le 2021, arXiv 2104.00298,
  Fig. 2), faster on accelerators in the early, wide-map stages. The same class serves
  MobileNetV2 (ReLU6, no SE), MobileNetV3 (ReLU or hard-swish, SE with a hard-sigmoid gate),
  EfficientNet (swish, SE) and EfficientNetV2 (both kinds).

Module names follow timm's (``conv_pw``, ``conv_dw``, ``se``, ``conv_pwl``, ``conv_exp``) so
importing torchvision or timm checkpoints is a table of renames.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .activations import ActLike
from .conv_norm_act import ConvNormAct
from .drop import DropPath
from .init import restore_block_init

SeFactory = Callable[[int], nn.Module] | None


class DepthwiseSeparable(nn.Module):
    """MobileNetV1's unit: depthwise kxk -> BN -> act, then pointwise 1x1 -> BN -> act."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 act_layer: ActLike = "relu6", bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.conv_dw = ConvNormAct(in_chs, in_chs, kernel_size, stride=stride, groups=in_chs,
                                   act_layer=act_layer, **bn)
        self.conv_pw = ConvNormAct(in_chs, out_chs, 1, act_layer=act_layer, **bn)
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))


class MBConv(nn.Module):
    """Inverted residual with a linear bottleneck, fused or not, with or without SE.

    ``mid_chs`` is the expanded width; each family rounds it its own way (MobileNetV2
    ``round(in * t)``, EfficientNet to a multiple of 8, MobileNetV3 straight from its table).
    When ``mid_chs == in_chs`` there is no expansion conv (expansion ratio 1), as in every
    reference. ``se_layer`` builds the attention on the expanded map: ``se_layer(mid_chs)``.
    The shortcut exists when stride is 1 and widths agree; ``drop_path`` drops the residual
    branch of whole samples in training (stochastic depth).
    """

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, kernel_size: int = 3,
                 stride: int = 1, fused: bool = False, act_layer: ActLike = "relu6",
                 se_layer: SeFactory = None, drop_path: float = 0.0, skip: bool = True,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        expand = mid_chs != in_chs
        if fused and not expand:
            # Fused-MBConv with ratio 1 is a single full conv straight to the output width
            # (EfficientNetV2-S stage 1); nothing is left to project.
            self.conv_exp = ConvNormAct(in_chs, out_chs, kernel_size, stride=stride,
                                        act_layer=act_layer, **bn)
            self.se = se_layer(out_chs) if se_layer else nn.Identity()
            self.conv_pwl = nn.Identity()
        elif fused:
            self.conv_exp = ConvNormAct(in_chs, mid_chs, kernel_size, stride=stride,
                                        act_layer=act_layer, **bn)
            self.se = se_layer(mid_chs) if se_layer else nn.Identity()
            self.conv_pwl = ConvNormAct(mid_chs, out_chs, 1, act_layer=None, **bn)
        else:
            self.conv_pw = (ConvNormAct(in_chs, mid_chs, 1, act_layer=act_layer, **bn)
                            if expand else nn.Identity())
            self.conv_dw = ConvNormAct(mid_chs, mid_chs, kernel_size, stride=stride,
                                       groups=mid_chs, act_layer=act_layer, **bn)
            self.se = se_layer(mid_chs) if se_layer else nn.Identity()
            self.conv_pwl = ConvNormAct(mid_chs, out_chs, 1, act_layer=None, **bn)
        self.fused = fused
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.has_skip else nn.Identity()
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.fused:
            x = self.conv_exp(x)
        else:
            x = self.conv_dw(self.conv_pw(x))
        x = self.conv_pwl(self.se(x))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


def build_stages(stages: Sequence[Sequence[dict[str, Any]]], drop_path_rate: float = 0.0,
                 reduction: int = 2, defaults: dict[str, Any] | None = None
                 ) -> tuple[nn.Sequential, list[dict]]:
    """Blocks grouped into ``stages.i.blocks.j``, with stochastic depth and feature info.

    Each inner dict holds one block's keyword arguments (``block`` picks the class, MBConv by
    default). The drop rate rises linearly from 0 at the first block towards ``drop_path_rate``:
    block i of n gets ``rate * i / n``, the schedule of the EfficientNet reference code (and
    torchvision and timm). ``reduction`` is the stem's stride. Feature info names the last stage
    at each stride, the maps a detector would take. ``defaults`` (e.g. the network's BN
    epsilon) apply to every block that does not set the key itself.
    """
    total = sum(len(s) for s in stages)
    idx = 0
    built, info = [], []
    for i, stage in enumerate(stages):
        blocks = []
        for kwargs in stage:
            kwargs = {**(defaults or {}), **kwargs}
            block_cls = kwargs.pop("block", MBConv)
            if block_cls is MBConv:
                kwargs["drop_path"] = drop_path_rate * idx / total
            blocks.append(block_cls(**kwargs))
            reduction *= kwargs.get("stride", 1)
            idx += 1
        built.append(nn.Sequential(OrderedDict(blocks=nn.Sequential(*blocks))))
        entry = dict(num_chs=blocks[-1].out_chs, reduction=reduction, module=f"stages.{i}")
        if info and info[-1]["reduction"] == reduction:
            info[-1] = entry
        else:
            info.append(entry)
    return nn.Sequential(*built), info


def init_weights(model: nn.Module) -> None:
    """The initialisation of the TF reference code of this family (MnasNet, MobileNetV3,
    EfficientNet), which timm follows too.

    Convs: He normal on fan-out, counted as TF does, k*k*out/groups: a depthwise conv's fan-out
    is k*k. torch's ``mode="fan_out"`` (which torchvision uses) ignores groups and counts C*k*k,
    starting depthwise kernels sqrt(C) too small, so that a fresh network's signal fades with
    depth. BN: identity; dense layers: uniform in +-1/sqrt(out), the EfficientNet code's choice.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
    restore_block_init(model)
