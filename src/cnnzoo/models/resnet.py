"""ResNet, ResNeXt and Wide ResNet, and the attention/conv-variant networks built on them.

- ResNet (He, Zhang, Ren, Sun 2015, 'Deep Residual Learning for Image Recognition', arXiv
  1512.03385, Table 1): identity shortcuts let 152-layer networks train; basic 3x3-3x3 blocks for
  18/34 layers, 1x1-3x3-1x1 bottlenecks (4x expansion) from 50 up; projection shortcuts (option B)
  where the shape changes.
- ResNeXt (Xie et al. 2016, arXiv 1611.05431, Table 1): the bottleneck's 3x3 becomes a grouped
  convolution of ``cardinality`` groups of ``base_width`` channels.
- Wide ResNet (Zagoruyko & Komodakis 2016, arXiv 1605.07146): the bottleneck twice as wide.
- SE-ResNet, SE-ResNeXt, SENet-154 (Hu et al. 2017, arXiv 1709.01507), CBAM-ResNet (Woo et al.
  2018, arXiv 1807.06521): the same networks with an attention block in every residual branch.
- Non-local ResNet (Wang et al. 2017, arXiv 1711.07971): non-local blocks between residual blocks.
- DCNv2 ResNet (Zhu et al. 2018, arXiv 1811.11168): deformable 3x3s in the last three stages.

The stride of a downsampling bottleneck sits on its 3x3 convolution, not the first 1x1 (the
'ResNet v1.5' of torchvision and timm): same parameters, better accuracy, weight-compatible.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers.activations import create_act
from ..layers.attention import AttnLike, create_attn
from ..layers.classifier import ClassifierHead
from ..layers.conv_norm_act import ConvNormAct
from ..layers.deform_conv import DeformConv2d
from ..layers.drop import DropPath
from ..layers.non_local import NonLocal
from ..registry import DefaultCfg, ModelCard, register_model
from ..layers.init import restore_block_init
from .base import ZooNet


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None, cardinality: int = 1, base_width: int = 64,
                 reduce_first: int = 1, attn_layer: AttnLike = None, drop_path: float = 0.0,
                 act_layer="relu", down_kernel_size: int = 1, deform: int = 0,
                 non_local: bool = False):
        super().__init__()
        if cardinality != 1 or base_width != 64 or reduce_first != 1:
            raise ValueError("BasicBlock supports only cardinality=1, base_width=64, reduce_first=1")
        out_chs = planes * self.expansion
        first_dilation = first_dilation or dilation
        self.conv1 = ConvNormAct(in_chs, planes, 3, stride=stride, dilation=first_dilation,
                                 act_layer=act_layer)
        self.conv2 = ConvNormAct(planes, out_chs, 3, dilation=dilation, act_layer=None)
        if deform:
            _make_deformable(self.conv2, deform)
        # Attention acts on the residual branch before the addition (SE paper, Fig. 3).
        self.attn = create_attn(attn_layer, out_chs) or nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.downsample = _shortcut(in_chs, out_chs, stride, dilation, first_dilation,
                                    down_kernel_size)
        self.act = create_act(act_layer)
        self.nl = NonLocal(out_chs) if non_local else nn.Identity()

    def last_bn(self) -> nn.BatchNorm2d:
        return self.conv2.bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        x = self.attn(self.conv2(self.conv1(x)))
        x = self.drop_path(x) + shortcut
        return self.nl(self.act(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None, cardinality: int = 1, base_width: int = 64,
                 reduce_first: int = 1, attn_layer: AttnLike = None, drop_path: float = 0.0,
                 act_layer="relu", down_kernel_size: int = 1, deform: int = 0,
                 non_local: bool = False):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * cardinality
        # SENet-154 halves the first 1x1 (SENet paper, Appendix 'Details of SENet-154', item 1).
        first_width = width // reduce_first
        out_chs = planes * self.expansion
        first_dilation = first_dilation or dilation
        self.conv1 = ConvNormAct(in_chs, first_width, 1, act_layer=act_layer)
        self.conv2 = ConvNormAct(first_width, width, 3, stride=stride, dilation=first_dilation,
                                 groups=cardinality, act_layer=act_layer)
        if deform:
            _make_deformable(self.conv2, deform)
        self.conv3 = ConvNormAct(width, out_chs, 1, act_layer=None)
        self.attn = create_attn(attn_layer, out_chs) or nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.downsample = _shortcut(in_chs, out_chs, stride, dilation, first_dilation,
                                    down_kernel_size)
        self.act = create_act(act_layer)
        # Non-local blocks sit between residual blocks (Non-local paper, Section 4.1); hanging
        # one off the block it follows keeps every plain-ResNet weight name unchanged.
        self.nl = NonLocal(out_chs) if non_local else nn.Identity()

    def last_bn(self) -> nn.BatchNorm2d:
        return self.conv3.bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        x = self.attn(self.conv3(self.conv2(self.conv1(x))))
        x = self.drop_path(x) + shortcut
        return self.nl(self.act(x))


def _make_deformable(unit: ConvNormAct, version: int) -> None:
    """Swap a ConvNormAct's conv for a deformable one of the same shape (v1 or v2, modulated)."""
    if version not in (1, 2):
        raise ValueError(f"deformable convolution version must be 1 or 2, got {version}")
    c = unit.conv
    unit.conv = DeformConv2d(c.in_channels, c.out_channels, c.kernel_size[0], stride=c.stride[0],
                             padding=c.padding[0], dilation=c.dilation[0], groups=c.groups,
                             bias=c.bias is not None, modulated=version == 2)


def _shortcut(in_chs: int, out_chs: int, stride: int, dilation: int = 1,
              first_dilation: int = 1, kernel_size: int = 1) -> nn.Module:
    # Option B of the paper: identity where shapes agree, a strided projection where not.
    # SENet-154 makes the projection a 3x3 where it downsamples (its Appendix, item 3); a stage
    # that trades its stride for dilation keeps that 3x3, dilated, so weights stay loadable.
    if stride == 1 and in_chs == out_chs:
        return nn.Identity()
    if stride == 1 and dilation == 1:
        kernel_size = 1
    return ConvNormAct(in_chs, out_chs, kernel_size, stride=stride,
                       dilation=first_dilation if kernel_size > 1 else 1, act_layer=None)


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


def _make_stem(in_chans: int, stem_type: str, stem_width: int, act_layer) -> tuple[nn.Module, str]:
    """The stem and the name of its last full-resolution-/2 module (a feature map)."""
    if stem_type == "":
        return nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False),
            bn=nn.BatchNorm2d(stem_width),
            act=create_act(act_layer),
            pool=nn.MaxPool2d(3, stride=2, padding=1),
        )), "stem.act"
    if stem_type == "deep":
        # SENet-154: three 3x3 convs (64, 64, stem_width) replace the 7x7 (its Appendix, item 2);
        # its Caffe model pools with ceil_mode and no padding, which picks different windows.
        return nn.Sequential(OrderedDict(
            conv1=ConvNormAct(in_chans, 64, 3, stride=2, act_layer=act_layer),
            conv2=ConvNormAct(64, 64, 3, act_layer=act_layer),
            conv3=ConvNormAct(64, stem_width, 3, act_layer=act_layer),
            pool=nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )), "stem.conv3"
    raise ValueError(f"stem_type must be '' or 'deep', got {stem_type!r}")


class ResNet(ZooNet):
    """ResNet / ResNeXt / Wide ResNet, set by block type, depths, cardinality and base width.

    ``attn`` puts an attention block (a name of the layers.attention table or a class) in every
    block; ``output_stride`` 16 or 8 dilates the last stages; ``drop_path_rate`` is stochastic
    depth rising linearly over the blocks; ``zero_init_last`` starts every residual branch at
    zero (Goyal et al. 2017) so the network begins as a shallower one. ``stem_type='deep'``,
    ``down_kernel_size=3`` and ``block_reduce_first=2`` are SENet-154's changes;
    ``nl_blocks`` (per stage, the blocks a non-local block follows) and ``dcn_stages`` (stages
    whose 3x3 convs are deformable, ``dcn_version`` 1 or 2) the non-local and DCN papers'.
    """

    def __init__(self, block: str = "bottleneck", layers: tuple[int, ...] = (3, 4, 6, 3),
                 num_classes: int = 1000, in_chans: int = 3, cardinality: int = 1,
                 base_width: int = 64, attn: AttnLike = None, output_stride: int = 32,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, zero_init_last: bool = True,
                 act_layer="relu", widths: tuple[int, ...] = (64, 128, 256, 512),
                 stem_width: int = 64, stem_type: str = "", down_kernel_size: int = 1,
                 block_reduce_first: int = 1,
                 nl_blocks: tuple[tuple[int, ...], ...] = (),
                 dcn_stages: tuple[int, ...] = (), dcn_version: int = 2):
        super().__init__()
        block_cls = BLOCKS[block]
        self.num_classes = num_classes
        self.stem, stem_out = _make_stem(in_chans, stem_type, stem_width, act_layer)
        self.feature_info = [dict(num_chs=stem_width, reduction=2, module=stem_out)]
        nl_blocks = tuple(nl_blocks) + ((),) * (len(layers) - len(nl_blocks))
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
                    cardinality=cardinality, base_width=base_width,
                    reduce_first=block_reduce_first, attn_layer=attn, drop_path=dpr,
                    act_layer=act_layer, down_kernel_size=down_kernel_size,
                    deform=dcn_version if i in dcn_stages else 0,
                    non_local=j in nl_blocks[i]))
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
            elif isinstance(m, DeformConv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        restore_block_init(self)
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "last_bn"):
                    nn.init.zeros_(m.last_bn().weight)

    feature_chain = ("stem", "stages")

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
    kwargs: dict = field(default_factory=dict)  # further ResNet arguments (attn, stem, ...)
    innovation: str = ""  # overrides the paper's one-liner where a variant adds its own idea
    first_conv: str = "stem.conv"


_RESNET = ("Deep Residual Learning for Image Recognition", "1512.03385", 2015, "ResNet",
           "Identity shortcuts make very deep networks trainable: learn residuals, not mappings.")
_RESNEXT = ("Aggregated Residual Transformations for Deep Neural Networks", "1611.05431", 2016,
            "ResNeXt", "Cardinality: split the bottleneck 3x3 into many same-shaped grouped paths.")
_WRN = ("Wide Residual Networks", "1605.07146", 2016, "Wide ResNet",
        "Fewer, wider residual layers beat thinner, deeper ones.")
_SENET = ("Squeeze-and-Excitation Networks", "1709.01507", 2017, "SENet",
          "Channel attention: pool each channel, a bottleneck MLP, a sigmoid gate per channel.")
_CBAM = ("CBAM: Convolutional Block Attention Module", "1807.06521", 2018, "CBAM",
         "Channel attention from avg- and max-pooled descriptors, then 7x7 spatial attention.")
_NONLOCAL = ("Non-local Neural Networks", "1711.07971", 2017, "Non-local",
             "A block whose response at each position is an attention-weighted sum over all positions.")
_DCNV2 = ("Deformable ConvNets v2: More Deformable, Better Results", "1811.11168", 2018, "DCN",
          "Convolutions sample at learned offsets, each sample scaled by a learned modulation.")

_SE = dict(attn="se")
# The SENet paper's Table 2 cells could not be checked; the authors' README (hujie-frank/SENet)
# was: it reports single 224-crop errors of their released (retrained) models, which it says beat
# the paper's. Those are the numbers here, so the card says exactly what it cites.
_SE_README = "authors' README (hujie-frank/SENet), released model, single 224 crop, top-1 error "
SE_TOP1 = {
    "seresnet50": (77.63, _SE_README + "22.37%; paper Table 2 cell unverified"),
    "seresnet101": (78.25, _SE_README + "21.75%; paper Table 2 cell unverified"),
    "seresnext50_32x4d": (79.03, _SE_README + "20.97%; paper Table 2 cell unverified"),
    "senet154": (81.32, _SE_README + "18.68% (the same figure as the paper's table of "
                                     "state-of-the-art models at 224, whose number is unverified)"),
}
CBAM_TOP1 = (77.34, "Table 4: ResNet50 + CBAM, single crop 224, top-1 error 22.66% (checked against "
                    "a secondary listing only; the authors' released checkpoint gives 77.62)")
DCN_TOP1 = (None, "not verifiable: the DCNv2 paper's ImageNet table (pre-training evidence) could "
                  "not be retrieved; its main results are COCO box/mask AP")
# Non-local paper, Table 2b '5-block': 2 blocks in res3 and 3 in res4, after every other
# residual block (its code inserts one after blocks 1, 3, 5); in 2D (its C2D baseline).
_NL_5BLOCK = dict(nl_blocks=((), (1, 3), (1, 3, 5), ()))

# Depths: Table 1 of the ResNet paper; ResNeXt's (32, 4d) and (32, 8d) templates: its Table 1 and
# Section 5.1; Wide ResNet-50-2: the bottleneck's inner width doubled (its Section 3 on ImageNet).
# SE-, CBAM-, non-local- and DCN- networks: those ResNets with the block of their paper.
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
    (ResNetVariant("seresnet50", "bottleneck", (3, 4, 6, 3), kwargs=_SE, top1=SE_TOP1["seresnet50"][0],
                   top1_source=SE_TOP1["seresnet50"][1]), _SENET),
    (ResNetVariant("seresnet101", "bottleneck", (3, 4, 23, 3), kwargs=_SE, top1=SE_TOP1["seresnet101"][0],
                   top1_source=SE_TOP1["seresnet101"][1]), _SENET),
    (ResNetVariant("seresnext50_32x4d", "bottleneck", (3, 4, 6, 3), 32, 4, kwargs=_SE,
                   top1=SE_TOP1["seresnext50_32x4d"][0],
                   top1_source=SE_TOP1["seresnext50_32x4d"][1]), _SENET),
    # SENet-154: SE in a 64x4d ResNeXt-152 with the four changes of the SENet paper's Appendix
    # ('Details of SENet-154'): first 1x1 of each bottleneck halved, three 3x3 convs for the 7x7
    # stem (its last 128 wide), 3x3 stride-2 projections, dropout 0.2 before the classifier.
    (ResNetVariant("senet154", "bottleneck", (3, 8, 36, 3), 64, 4,
                   kwargs=dict(attn="se", stem_type="deep", stem_width=128, down_kernel_size=3,
                               block_reduce_first=2, drop_rate=0.2),
                   first_conv="stem.conv1.conv", top1=SE_TOP1["senet154"][0],
                   top1_source=SE_TOP1["senet154"][1],
                   innovation="SE on a 64x4d ResNeXt-152 with a 3x3 stem: the ILSVRC 2017 winner's "
                              "backbone."), _SENET),
    (ResNetVariant("cbam_resnet50", "bottleneck", (3, 4, 6, 3), kwargs=dict(attn="cbam"),
                   top1=CBAM_TOP1[0], top1_source=CBAM_TOP1[1]), _CBAM),
    (ResNetVariant("nl_resnet50", "bottleneck", (3, 4, 6, 3), kwargs=_NL_5BLOCK, top1=None,
                   top1_source="no ImageNet classification in the paper: it reports Kinetics and "
                               "Charades video classification and COCO; this is its Table 2b "
                               "'5-block' setting (2 in res3, 3 in res4) on a 2D ResNet-50"),
     _NONLOCAL),
    # DCNv2 Section 4: modulated deformable convs replace every 3x3 of conv3-conv5 (stages 2-4).
    (ResNetVariant("dcn_resnet50", "bottleneck", (3, 4, 6, 3),
                   kwargs=dict(dcn_stages=(1, 2, 3), dcn_version=2),
                   top1=DCN_TOP1[0], top1_source=DCN_TOP1[1]), _DCNV2),
)


def _register() -> None:
    for v, (paper, arxiv, year, family, innovation) in VARIANTS:
        def build(num_classes=1000, in_chans=3, _v=v, **kwargs):
            kwargs.setdefault("cardinality", _v.cardinality)
            kwargs.setdefault("base_width", _v.base_width)
            for key, value in _v.kwargs.items():
                kwargs.setdefault(key, value)
            return ResNet(_v.block, _v.layers, num_classes=num_classes, in_chans=in_chans, **kwargs)
        register_model(
            v.name, build,
            card=ModelCard(family=family, year=year, paper=paper, arxiv=arxiv,
                           innovation=v.innovation or innovation, top1=v.top1,
                           top1_source=v.top1_source),
            cfg=DefaultCfg(first_conv=v.first_conv, classifier="head.fc"),
        )


_register()
