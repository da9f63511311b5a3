"""Inception-ResNet-v2 (Szegedy, Ioffe, Vanhoucke, Alemi 2016, 'Inception-v4, Inception-ResNet and
the Impact of Residual Connections on Learning', arXiv 1602.07261).

Inception blocks as residual branches (Figure 15 schema): each block's towers are concatenated,
projected back to the trunk width by a linear 1x1 (with bias, no BN, as in the released model),
scaled down and added to the trunk, then ReLU. Section 3.3: scaling residuals by 0.1-0.3 before the
addition keeps very wide residual Inception networks from 'dying' early in training; the released
model uses 0.17 / 0.10 / 0.20 for the 35x35 / 17x17 / 8x8 blocks.

The released model (timm's port, whose weights this layout matches) has the Inception-v3-like
stem with a 'mixed_5b' module rather than Figure 3's, and a final 1x1 to 1536 channels; Reduction-A
uses Table 1's k=256, l=256, m=384, n=384. ``attn`` sits on the residual branch before the
addition, as the SE paper builds SE-Inception-ResNet-v2 (arXiv 1709.01507, Fig. 3).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..layers.attention import AttnLike, create_attn
from ..layers.classifier import ClassifierHead
from ..layers.inception import BasicConv, Towers, init_tf_slim, init_weights, seq
from ..registry import INCEPTION_MEAN, INCEPTION_STD, DefaultCfg, ModelCard, register_model
from .base import ZooNet

C = BasicConv


class InceptionResidual(nn.Module):
    """``act(x + scale * up(towers(x)))``: Figures 16 (35x35), 17 (17x17), 19 (8x8)."""

    def __init__(self, towers: Towers, out_chs: int, scale: float, act: bool = True,
                 attn: AttnLike = None):
        super().__init__()
        self.towers = towers
        self.up = nn.Conv2d(towers.out_channels, out_chs, 1, bias=True)
        self.attn = create_attn(attn, out_chs) or nn.Identity()
        self.scale = scale
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()
        self.out_channels = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.scale * self.attn(self.up(self.towers(x))))

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


def block35(cin: int = 320, scale: float = 0.17, attn=None) -> InceptionResidual:
    return InceptionResidual(Towers(cin, OrderedDict(
        branch0=C(cin, 32, 1),
        branch1=seq(C(cin, 32, 1), C(32, 32, 3)),
        branch2=seq(C(cin, 32, 1), C(32, 48, 3), C(48, 64, 3)),
    )), cin, scale, attn=attn)


def block17(cin: int = 1088, scale: float = 0.10, attn=None) -> InceptionResidual:
    return InceptionResidual(Towers(cin, OrderedDict(
        branch0=C(cin, 192, 1),
        branch1=seq(C(cin, 128, 1), C(128, 160, (1, 7)), C(160, 192, (7, 1))),
    )), cin, scale, attn=attn)


def block8(cin: int = 2080, scale: float = 0.20, act: bool = True, attn=None) -> InceptionResidual:
    return InceptionResidual(Towers(cin, OrderedDict(
        branch0=C(cin, 192, 1),
        branch1=seq(C(cin, 192, 1), C(192, 224, (1, 3)), C(224, 256, (3, 1))),
    )), cin, scale, act=act, attn=attn)


def stem(in_chans: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv1a=C(in_chans, 32, 3, stride=2, padding=0),
        conv2a=C(32, 32, 3, padding=0),
        conv2b=C(32, 64, 3),
        pool3a=nn.MaxPool2d(3, 2),
        conv3b=C(64, 80, 1),
        conv4a=C(80, 192, 3, padding=0),
        pool5a=nn.MaxPool2d(3, 2),
        mixed_5b=Towers(192, OrderedDict(
            branch0=C(192, 96, 1),
            branch1=seq(C(192, 48, 1), C(48, 64, 5)),
            branch2=seq(C(192, 64, 1), C(64, 96, 3), C(96, 96, 3)),
            branch3=seq(nn.AvgPool2d(3, 1, padding=1, count_include_pad=False), C(192, 64, 1)),
        )),
    ))


def reduction_a(cin: int = 320, k: int = 256, l: int = 256, m: int = 384,  # noqa: E741
                n: int = 384) -> Towers:
    """Figure 7 with Table 1's Inception-ResNet-v2 filter counts (35x35 -> 17x17)."""
    return Towers(cin, OrderedDict(
        branch0=C(cin, n, 3, stride=2, padding=0),
        branch1=seq(C(cin, k, 1), C(k, l, 3), C(l, m, 3, stride=2, padding=0)),
        branch2=nn.MaxPool2d(3, 2),
    ))


def reduction_b(cin: int = 1088) -> Towers:
    """Figure 18 (17x17 -> 8x8)."""
    return Towers(cin, OrderedDict(
        branch0=seq(C(cin, 256, 1), C(256, 384, 3, stride=2, padding=0)),
        branch1=seq(C(cin, 256, 1), C(256, 288, 3, stride=2, padding=0)),
        branch2=seq(C(cin, 256, 1), C(256, 288, 3), C(288, 320, 3, stride=2, padding=0)),
        branch3=nn.MaxPool2d(3, 2),
    ))


# Figure 15 / the released model: 10 x 35x35, 20 x 17x17, 10 x 8x8 residual blocks; the last 8x8
# block has no ReLU and no scaling.
DEPTHS = dict(block35=10, block17=20, block8=10)


class InceptionResNetV2(ZooNet):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2,
                 attn: AttnLike = None):
        super().__init__()
        self.num_classes = num_classes
        self.stem = stem(in_chans)
        n8 = DEPTHS["block8"]
        self.stages = nn.Sequential(OrderedDict(
            block35=nn.Sequential(*[block35(attn=attn) for _ in range(DEPTHS["block35"])]),
            mixed_6a=reduction_a(),
            block17=nn.Sequential(*[block17(attn=attn) for _ in range(DEPTHS["block17"])]),
            mixed_7a=reduction_b(),
            block8=nn.Sequential(*[block8(attn=attn) for _ in range(n8 - 1)],
                                 block8(scale=1.0, act=False, attn=attn)),
            conv7b=C(2080, 1536, 1),
        ))
        self.feature_info = [
            dict(num_chs=64, reduction=2, module="stem.conv2b"),
            dict(num_chs=192, reduction=4, module="stem.conv4a"),
            dict(num_chs=320, reduction=8, module="stages.block35"),
            dict(num_chs=1088, reduction=16, module="stages.block17"),
            dict(num_chs=1536, reduction=32, module="stages.conv7b"),
        ]
        self.num_features = 1536
        self.head = ClassifierHead(1536, num_classes, drop_rate=drop_rate)
        if attn is None:
            init_tf_slim(self, he_convs=False)  # TF-slim: its arg scope keeps Xavier convs
        else:
            init_weights(self)  # attention variants have no reference code: the family's He init

    feature_chain = ("stem", "stages")

    def forward_features(self, x):
        return self.stages(self.stem(x))


register_model(
    "inception_resnet_v2", InceptionResNetV2,
    card=ModelCard(
        family="Inception", year=2016,
        paper="Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning",
        arxiv="1602.07261",
        innovation="Inception blocks as scaled residual branches: faster training, same depth.",
        top1=80.1,
        top1_source="Table 2: single model, single crop, ILSVRC-2012 val (non-blacklisted "
                    "subset): top-1 error 19.9%, top-5 4.9%"),
    cfg=DefaultCfg(input_size=(3, 299, 299), mean=INCEPTION_MEAN, std=INCEPTION_STD,
                   interpolation="bicubic", crop_pct=0.8975, first_conv="stem.conv1a.conv",
                   classifier="head.fc", min_size=75),
)
