"""Dilated Residual Networks (Yu, Koltun, Funkhouser 2017, 'Dilated Residual Networks', arXiv
1705.09914).

A ResNet whose last two groups trade their stride for dilation (2, then 4), so the final map is
28x28 at 224 instead of 7x7 with the same receptive field per unit (Section 2). DRN-C adds
'degridding' (Section 4, Fig. 6): the max-pooling stem becomes a stride-1 7x7 conv and two
residual levels of 16 and 32 channels, and two levels of non-residual 3x3 convs (dilation 2,
then 1) close the network so the checkerboard of the dilated layers is smoothed out.
Layout and widths follow the authors' code (fyu/drn, whose weights this matches in shape); the
head is a global average and a linear layer, equal to their 28x28 average pool and 1x1 conv at 224.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..layers.activations import create_act
from ..layers.attention import AttnLike, create_attn
from ..layers.classifier import ClassifierHead
from ..layers.conv_norm_act import ConvNormAct
from ..registry import DefaultCfg, ModelCard, register_model
from ..layers.init import restore_block_init
from .base import ZooNet


@dataclass(frozen=True)
class Level:
    """One level of Fig. 4 / Table 1: its width, blocks, stride, dilation and whether residual."""

    channels: int
    blocks: int
    stride: int = 1
    dilation: int = 1
    residual: bool = True


# DRN-C-26 (Table 1 row 'DRN-C-26'; Fig. 4c): levels 1-8 after a 16-wide 7x7 stride-1 conv.
# Levels 5 and 6 keep stride 8 with dilation 2 and 4; levels 7 and 8 are the degridding convs.
DRN_C_26 = (
    Level(16, 1), Level(32, 1, stride=2), Level(64, 2, stride=2), Level(128, 2, stride=2),
    Level(256, 2, dilation=2), Level(512, 2, dilation=4),
    Level(512, 1, dilation=2, residual=False), Level(512, 1, dilation=1, residual=False),
)


class DRNBlock(nn.Module):
    """Two 3x3 convs of one dilation; with ``residual=False`` the shortcut is dropped (levels 7-8)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, dilation: int = 1,
                 residual: bool = True, attn_layer: AttnLike = None, act_layer="relu"):
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, out_chs, 3, stride=stride, dilation=dilation,
                                 act_layer=act_layer)
        self.conv2 = ConvNormAct(out_chs, out_chs, 3, dilation=dilation, act_layer=None)
        self.attn = create_attn(attn_layer, out_chs) or nn.Identity()
        self.residual = residual
        if residual and (stride != 1 or in_chs != out_chs):
            self.downsample: nn.Module = ConvNormAct(in_chs, out_chs, 1, stride=stride,
                                                     act_layer=None)
        else:
            self.downsample = nn.Identity()
        self.act = create_act(act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.attn(self.conv2(self.conv1(x)))
        if self.residual:
            out = out + self.downsample(x)
        return self.act(out)


class DRN(ZooNet):
    def __init__(self, levels: tuple[Level, ...] = DRN_C_26, num_classes: int = 1000,
                 in_chans: int = 3, attn: AttnLike = None, drop_rate: float = 0.0,
                 act_layer="relu"):
        super().__init__()
        self.num_classes = num_classes
        cin = levels[0].channels
        self.stem = ConvNormAct(in_chans, cin, 7, act_layer=act_layer)
        self.feature_info = [dict(num_chs=cin, reduction=1, module="stem")]
        reduction = 1
        stages = []
        for i, lv in enumerate(levels):
            blocks = []
            for j in range(lv.blocks):
                blocks.append(DRNBlock(cin, lv.channels, lv.stride if j == 0 else 1, lv.dilation,
                                       lv.residual, attn_layer=attn, act_layer=act_layer))
                cin = lv.channels
            reduction *= lv.stride
            stages.append(nn.Sequential(OrderedDict(blocks=nn.Sequential(*blocks))))
            self.feature_info.append(dict(num_chs=cin, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.head = ClassifierHead(cin, num_classes, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        # The authors' init: N(0, sqrt(2 / (k*k*out))) for convs, i.e. Kaiming fan-out.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.head.fc, nn.Linear):
            # Their classifier is a 1x1 conv, so the same rule gives it std sqrt(2 / num_classes);
            # its bias keeps torch's default, as theirs does.
            nn.init.normal_(self.head.fc.weight, 0.0, (2.0 / self.head.fc.out_features) ** 0.5)
        restore_block_init(self)

    feature_chain = ("stem", "stages")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


_VARIANTS = (
    ("drn_c_26", DRN_C_26, 75.1,
     "authors' README (fyu/drn): DRN-C-26, single center 224 crop, top-1 error 24.9% "
     "(the paper's Table 1 cell, 24.86 as recalled, is unverified)"),
)


def _register() -> None:
    for name, levels, top1, where in _VARIANTS:
        def build(num_classes=1000, in_chans=3, _levels=levels, **kwargs):
            return DRN(_levels, num_classes=num_classes, in_chans=in_chans, **kwargs)
        register_model(
            name, build,
            card=ModelCard(family="DRN", year=2017, paper="Dilated Residual Networks",
                           arxiv="1705.09914",
                           innovation="Dilation instead of striding in the last groups keeps a "
                                      "28x28 map; degridding layers remove dilation artifacts.",
                           top1=top1, top1_source=where),
            cfg=DefaultCfg(first_conv="stem.conv", classifier="head.fc"),
        )


_register()
