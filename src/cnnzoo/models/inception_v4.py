"""Inception-v4 (Szegedy, Ioffe, Vanhoucke, Alemi 2016, 'Inception-v4, Inception-ResNet and the
Impact of Residual Connections on Learning', arXiv 1602.07261).

A uniform, streamlined Inception network (Figure 9): the stem of Figure 3, 4 x Inception-A
(Figure 4), Reduction-A (Figure 7, with k=192, l=224, m=256, n=384 from Table 1), 7 x Inception-B
(Figure 5), Reduction-B (Figure 8), 3 x Inception-C (Figure 6), average pooling, dropout (keep 0.8),
softmax. Convolutions marked 'V' in the figures are valid (``padding=0``); the rest keep the size.
Module order inside each block follows timm's port of the released weights.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..layers.attention import AttnLike
from ..layers.classifier import ClassifierHead
from ..layers.inception import BasicConv, Towers, init_tf_slim, init_weights, seq
from ..registry import INCEPTION_MEAN, INCEPTION_STD, DefaultCfg, ModelCard, register_model
from .base import ZooNet

C = BasicConv


def _avg_pool_proj(cin: int, out: int) -> nn.Sequential:
    return seq(nn.AvgPool2d(3, 1, padding=1, count_include_pad=False), C(cin, out, 1))


def stem(in_chans: int) -> nn.Sequential:
    """Figure 3: 299x299x3 -> 35x35x384, with three filter-concat splits."""
    return nn.Sequential(OrderedDict(
        conv1a=C(in_chans, 32, 3, stride=2, padding=0),
        conv2a=C(32, 32, 3, padding=0),
        conv2b=C(32, 64, 3),
        mixed_3a=Towers(64, OrderedDict(pool=nn.MaxPool2d(3, 2),
                                        conv=C(64, 96, 3, stride=2, padding=0))),
        mixed_4a=Towers(160, OrderedDict(
            branch0=seq(C(160, 64, 1), C(64, 96, 3, padding=0)),
            branch1=seq(C(160, 64, 1), C(64, 64, (1, 7)), C(64, 64, (7, 1)),
                        C(64, 96, 3, padding=0)))),
        mixed_5a=Towers(192, OrderedDict(conv=C(192, 192, 3, stride=2, padding=0),
                                         pool=nn.MaxPool2d(3, 2))),
    ))


def inception_a(cin: int = 384, attn=None) -> Towers:
    """Figure 4 (35x35)."""
    return Towers(cin, OrderedDict(
        branch0=C(cin, 96, 1),
        branch1=seq(C(cin, 64, 1), C(64, 96, 3)),
        branch2=seq(C(cin, 64, 1), C(64, 96, 3), C(96, 96, 3)),
        branch3=_avg_pool_proj(cin, 96),
    ), attn)


def reduction_a(cin: int, k: int, l: int, m: int, n: int, attn=None) -> Towers:  # noqa: E741
    """Figure 7 (35x35 -> 17x17); k, l, m, n per network from Table 1."""
    return Towers(cin, OrderedDict(
        branch0=C(cin, n, 3, stride=2, padding=0),
        branch1=seq(C(cin, k, 1), C(k, l, 3), C(l, m, 3, stride=2, padding=0)),
        branch2=nn.MaxPool2d(3, 2),
    ), attn)


def inception_b(cin: int = 1024, attn=None) -> Towers:
    """Figure 5 (17x17)."""
    return Towers(cin, OrderedDict(
        branch0=C(cin, 384, 1),
        branch1=seq(C(cin, 192, 1), C(192, 224, (1, 7)), C(224, 256, (7, 1))),
        branch2=seq(C(cin, 192, 1), C(192, 192, (7, 1)), C(192, 224, (1, 7)),
                    C(224, 224, (7, 1)), C(224, 256, (1, 7))),
        branch3=_avg_pool_proj(cin, 128),
    ), attn)


def reduction_b(cin: int = 1024, attn=None) -> Towers:
    """Figure 8 (17x17 -> 8x8)."""
    return Towers(cin, OrderedDict(
        branch0=seq(C(cin, 192, 1), C(192, 192, 3, stride=2, padding=0)),
        branch1=seq(C(cin, 256, 1), C(256, 256, (1, 7)), C(256, 320, (7, 1)),
                    C(320, 320, 3, stride=2, padding=0)),
        branch2=nn.MaxPool2d(3, 2),
    ), attn)


def _split(cin: int, out: int) -> Towers:
    return Towers(cin, OrderedDict(a=C(cin, out, (1, 3)), b=C(cin, out, (3, 1))))


def inception_c(cin: int = 1536, attn=None) -> Towers:
    """Figure 6 (8x8)."""
    return Towers(cin, OrderedDict(
        branch0=C(cin, 256, 1),
        branch1=seq(C(cin, 384, 1), _split(384, 256)),
        branch2=seq(C(cin, 384, 1), C(384, 448, (3, 1)), C(448, 512, (1, 3)), _split(512, 256)),
        branch3=_avg_pool_proj(cin, 256),
    ), attn)


# Figure 9: how many of each block. Table 1: Reduction-A filter counts for Inception-v4.
DEPTHS = dict(inception_a=4, inception_b=7, inception_c=3)
REDUCTION_A = dict(k=192, l=224, m=256, n=384)


class InceptionV4(ZooNet):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2,
                 attn: AttnLike = None):
        super().__init__()
        self.num_classes = num_classes
        self.stem = stem(in_chans)
        def repeat(make, cin: int, name: str) -> nn.Sequential:
            return nn.Sequential(*[make(cin, attn) for _ in range(DEPTHS[name])])

        self.stages = nn.Sequential(OrderedDict(
            inception_a=repeat(inception_a, 384, "inception_a"),
            reduction_a=reduction_a(384, **REDUCTION_A, attn=attn),
            inception_b=repeat(inception_b, 1024, "inception_b"),
            reduction_b=reduction_b(1024, attn),
            inception_c=repeat(inception_c, 1536, "inception_c"),
        ))
        self.feature_info = [
            dict(num_chs=64, reduction=2, module="stem.conv2b"),
            dict(num_chs=160, reduction=4, module="stem.mixed_3a"),
            dict(num_chs=384, reduction=8, module="stages.inception_a"),
            dict(num_chs=1024, reduction=16, module="stages.inception_b"),
            dict(num_chs=1536, reduction=32, module="stages.inception_c"),
        ]
        self.num_features = 1536
        self.head = ClassifierHead(1536, num_classes, drop_rate=drop_rate)
        if attn is None:
            init_tf_slim(self, he_convs=True)  # TF-slim: inception_v4_arg_scope, He convs
        else:
            init_weights(self)  # attention variants have no reference code: the family's He init

    feature_chain = ("stem", "stages")

    def forward_features(self, x):
        return self.stages(self.stem(x))


register_model(
    "inception_v4", InceptionV4,
    card=ModelCard(
        family="Inception", year=2016,
        paper="Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning",
        arxiv="1602.07261",
        innovation="Streamlined, uniform Inception-A/B/C blocks with dedicated reduction blocks.",
        top1=80.0,
        top1_source="Table 2: single model, single crop, ILSVRC-2012 val (non-blacklisted "
                    "subset): top-1 error 20.0%, top-5 5.0%"),
    cfg=DefaultCfg(input_size=(3, 299, 299), mean=INCEPTION_MEAN, std=INCEPTION_STD,
                   interpolation="bicubic", crop_pct=0.875, first_conv="stem.conv1a.conv",
                   classifier="head.fc", min_size=75),
)
