"""ResNet, ResNeXt and Wide ResNet: one configurable network.

- ResNet (He, Zhang, Ren, Sun 2015, 'Deep Residual Learning for Image Recognition', arXiv
  1512.03385, Table 1): identity shortcuts let 152-layer networks train; basic 3x3-3x3 blocks for
  18/34 layers, 1x1-3x3-1x1 bottlenecks (4x expansion) from 50 up; projection shortcuts (option B)
  where the shape changes.
- ResNeXt (Xie et al. 2016, arXiv 1611.05431, Table 1): the bottleneck's 3x3 becomes a grouped
  convolution of ``cardinality`` groups of ``base_width`` channels.
- Wide ResNet (Zagoruyko & Komodakis 2016, arXiv 1605.07146): the bottleneck twice as wide.

The stride of a downsampling bottleneck sits on its 3x3 convolution, not the first 1x1 (the
'ResNet v1.5' of torchvision and timm): same parameters, better accuracy, weight-compatible.
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
from ..layers.drop import DropPath
from ..registry import DefaultCfg, ModelCard, register_model
from .base import ZooNet


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None, cardinality: int = 1, base_width: int = 64,
                 attn_layer: AttnLike = None, drop_path: float = 0.0, act_layer="relu"):
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only cardinality=1 and base_width=64")
        out_chs = planes * self.expansion
        first_dilation = first_dilation or dilation
        self.conv1 = ConvNormAct(in_chs, planes, 3, stride=stride, dilation=first_dilation,
                                 act_layer=act_layer)
        self.conv2 = ConvNormAct(planes, out_chs, 3, dilation=dilation, act_layer=None)
        # Attention acts on the residual branch before the addition (SE paper, Fig. 3).
        self.attn = create_attn(attn_layer, out_chs) or nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.downsample = _shortcut(in_chs, out_chs, stride)
        self.act = create_act(act_layer)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.conv2.bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        x = self.attn(self.conv2(self.conv1(x)))
        return self.act(self.drop_path(x) + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None, cardinality: int = 1, base_width: int = 64,
                 attn_layer: AttnLike = None, drop_path: float = 0.0, act_layer="relu"):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * cardinality
        out_chs = planes * self.expansion
        first_dilation = first_dilation or dilation
        self.conv1 = ConvNormAct(in_chs, width, 1, act_layer=act_layer)
        self.conv2 = ConvNormAct(width, width, 3, stride=stride, dilation=first_dilation,
                                 groups=cardinality, act_layer=act_layer)
        self.conv3 = ConvNormAct(width, out_chs, 1, act_layer=None)
        self.attn = create_attn(attn_layer, out_chs) or nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.downsample = _shortcut(in_chs, out_chs, stride)
        self.act = create_act(act_layer)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.conv3.bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        x = self.attn(self.conv3(self.conv2(self.conv1(x))))
        return self.act(self.drop_path(x) + shortcut)


def _shortcut(in_chs: int, out_chs: int, stride: int) -> nn.Module:
    # Option B of the paper: identity where shapes agree, a strided 1x1 projection where not.
    if stride == 1 and in_chs == out_chs:
        return nn.Identity()
    return ConvNormAct(in_chs, out_chs, 1, stride=stride, act_layer=None)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _stage_dilations(output_stride: int) -> tuple[tuple[int, int], ...]:
    """(stride, dilation) of the four stages for a given output stride.

    Below stride 32 the last stages trade their stride for dilation (DeepLab, DRN), so the map
    stays larger while each 3x3 still sees the area it saw before.
    """
    table = {
        32: ((1, 1), (2, 1), (2, 1), (2, 1)),
        16: ((1, 1), (2, 1), (2, 1), (1, 2)),
        8: ((1, 1), (2, 1), (1, 2), (1, 4)),
    }
    if output_stride not in table:
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    return table[output_stride]


class ResNet(ZooNet):
    """ResNet / ResNeXt / Wide ResNet, set by block type, depths, cardinality and base width.

    ``attn`` puts an attention block (a name of the layers.attention table or a class) in every
    block; ``output_stride`` 16 or 8 dilates the last stages; ``drop_path_rate`` is stochastic
    depth rising linearly over the blocks; ``zero_init_last`` starts every residual branch at
    zero (Goyal et al. 2017) so the network begins as a shallower one.
    """

    def __init__(self, block: str = "bottleneck", layers: tuple[int, ...] = (3, 4, 6, 3),
                 num_classes: int = 1000, in_chans: int = 3, cardinality: int = 1,
                 base_width: int = 64, attn: AttnLike = None, output_stride: int = 32,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, zero_init_last: bool = True,
                 act_layer="relu", widths: tuple[int, ...] = (64, 128, 256, 512),
                 stem_width: int = 64):
        super().__init__()
        block_cls = BLOCKS[block]
        self.num_classes = num_classes
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False),
            bn=nn.BatchNorm2d(stem_width),
            act=create_act(act_layer),
            pool=nn.MaxPool2d(3, stride=2, padding=1),
        ))
        self.feature_info = [dict(num_chs=stem_width, reduction=2, module="stem.act")]
        total = sum(layers)
        block_idx = 0
        cin, reduction, prev_dilation = stem_width, 4, 1
        stages = []
        for i, (depth, planes, (stride, dilation)) in enumerate(
                zip(layers, widths, _stage_dilations(output_stride))):
            blocks = []
            for j in range(depth):
                dpr = drop_path_rate * block_idx / max(total - 1, 1)
                blocks.append(block_cls(
                    cin, planes, stride=stride if j == 0 else 1, dilation=dilation,
                    first_dilation=prev_dilation if j == 0 else dilation,
                    cardinality=cardinality, base_width=base_width, attn_layer=attn,
                    drop_path=dpr, act_layer=act_layer))
                cin = planes * block_cls.expansion
                block_idx += 1
            prev_dilation = dilation
            reduction *= stride
            stages.append(nn.Sequential(OrderedDict(blocks=nn.Sequential(*blocks))))
            self.feature_info.append(dict(num_chs=cin, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.head = ClassifierHead(cin, num_classes, drop_rate=drop_rate)
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "last_bn"):
                    nn.init.zeros_(m.last_bn().weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


@dataclass(frozen=True)
class ResNetVariant:
    name: str
    block: str
    layers: tuple[int, int, int, int]
    cardinality: int = 1
    base_width: int = 64
    top1: float | None = None
    top1_source: str = ""


_RESNET = ("Deep Residual Learning for Image Recognition", "1512.03385", 2015, "ResNet",
           "Identity shortcuts make very deep networks trainable: learn residuals, not mappings.")
_RESNEXT = ("Aggregated Residual Transformations for Deep Neural Networks", "1611.05431", 2016,
            "ResNeXt", "Cardinality: split the bottleneck 3x3 into many same-shaped grouped paths.")
_WRN = ("Wide Residual Networks", "1605.07146", 2016, "Wide ResNet",
        "Fewer, wider residual layers beat thinner, deeper ones.")

# Depths: Table 1 of the ResNet paper; ResNeXt's (32, 4d) and (32, 8d) templates: its Table 1 and
# Section 5.1; Wide ResNet-50-2: the bottleneck's inner width doubled (its Section 3 on ImageNet).
VARIANTS: tuple[tuple[ResNetVariant, tuple], ...] = (
    (ResNetVariant("resnet18", "basic", (2, 2, 2, 2), top1=72.12,
                   top1_source="Table 2: ResNet-18, 10-crop, top-1 error 27.88%"), _RESNET),
    (ResNetVariant("resnet34", "basic", (3, 4, 6, 3), top1=75.48,
                   top1_source="Table 3: ResNet-34 B (projection shortcuts), 10-crop, top-1 error 24.52%"), _RESNET),
    (ResNetVariant("resnet50", "bottleneck", (3, 4, 6, 3), top1=77.15,
                   top1_source="Table 3: ResNet-50, 10-crop, top-1 error 22.85%"), _RESNET),
    (ResNetVariant("resnet101", "bottleneck", (3, 4, 23, 3), top1=78.25,
                   top1_source="Table 3: ResNet-101, 10-crop, top-1 error 21.75%"), _RESNET),
    (ResNetVariant("resnet152", "bottleneck", (3, 8, 36, 3), top1=78.57,
                   top1_source="Table 3: ResNet-152, 10-crop, top-1 error 21.43%"), _RESNET),
    (ResNetVariant("resnext50_32x4d", "bottleneck", (3, 4, 6, 3), 32, 4, top1=77.8,
                   top1_source="Table 3: ResNeXt-50 (32x4d), 224 single crop, top-1 error 22.2%"),
     _RESNEXT),
    (ResNetVariant("resnext101_32x8d", "bottleneck", (3, 4, 23, 3), 32, 8, top1=None,
                   top1_source="not in the paper (its 101-layer rows are 32x4d and 64x4d); "
                               "torchvision trained it"), _RESNEXT),
    (ResNetVariant("wide_resnet50_2", "bottleneck", (3, 4, 6, 3), 1, 128, top1=78.1,
                   top1_source="Table 4 of arXiv 1605.07146 (v4): WRN-50-2-bottleneck, "
                               "single crop 224, top-1 error 21.9%"), _WRN),
)


def _register() -> None:
    for v, (paper, arxiv, year, family, innovation) in VARIANTS:
        def build(num_classes=1000, in_chans=3, _v=v, **kwargs):
            kwargs.setdefault("cardinality", _v.cardinality)
            kwargs.setdefault("base_width", _v.base_width)
            return ResNet(_v.block, _v.layers, num_classes=num_classes, in_chans=in_chans, **kwargs)
        register_model(
            v.name, build,
            card=ModelCard(family=family, year=year, paper=paper, arxiv=arxiv,
                           innovation=innovation, top1=v.top1, top1_source=v.top1_source),
            cfg=DefaultCfg(first_conv="stem.conv", classifier="head.fc"),
        )


_register()
