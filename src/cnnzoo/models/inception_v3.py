"""Inception v3 (Szegedy et al. 2015, 'Rethinking the Inception Architecture for Computer Vision',
arXiv 1512.00567).

Table 1 of the paper: a 299x299 input, a stem of plain 3x3 convolutions, three 35x35 modules
whose 5x5 is factorised into 3x3s (Figure 5), four 17x17 modules with n x 1 / 1 x n factorised
7x7s (Figure 6, n = 7), two 8x8 modules with expanded 1x3 / 3x1 filter banks (Figure 7), and
grid-size reductions that run a strided conv tower next to a strided pool (Section 5, Figure 10)
so the representation shrinks without a bottleneck. The BN'd auxiliary head on the 17x17 grid
(Section 4) acts as a regulariser.

Channel counts that Table 1 leaves implicit follow the released model (torchvision and timm agree),
so their weights load. ``attn='se'`` puts attention on each module's output, as the SE paper builds
SE-Inception (arXiv 1709.01507, Fig. 2); ``se_inception_v3`` registers that network.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

from torch import nn

from ..layers.attention import AttnLike, get_attn
from ..layers.classifier import ClassifierHead
from ..layers.inception import (AuxClassifier, AuxHeadsMixin, BasicConv, Towers,
                                init_trunc_normal, init_weights, seq)
from ..registry import INCEPTION_MEAN, INCEPTION_STD, DefaultCfg, ModelCard, register_model
from .base import ZooNet

C = BasicConv


def _avg_pool_proj(cin: int, out: int) -> nn.Sequential:
    return seq(nn.AvgPool2d(3, 1, padding=1), C(cin, out, 1))


def inception_a(cin: int, pool_features: int, attn=None) -> Towers:
    """35x35 module, Figure 5: the 5x5 as two 3x3 (the released model also keeps one 5x5 tower)."""
    return Towers(cin, OrderedDict(
        branch1x1=C(cin, 64, 1),
        branch5x5=seq(C(cin, 48, 1), C(48, 64, 5)),
        branch3x3dbl=seq(C(cin, 64, 1), C(64, 96, 3), C(96, 96, 3)),
        branch_pool=_avg_pool_proj(cin, pool_features),
    ), attn)


def reduction_a(cin: int, attn=None) -> Towers:
    """35x35 -> 17x17, Figure 10: strided convs beside a strided max pool."""
    return Towers(cin, OrderedDict(
        branch3x3=C(cin, 384, 3, stride=2, padding=0),
        branch3x3dbl=seq(C(cin, 64, 1), C(64, 96, 3), C(96, 96, 3, stride=2, padding=0)),
        branch_pool=nn.MaxPool2d(3, 2),
    ), attn)


def inception_b(cin: int, c7: int, attn=None) -> Towers:
    """17x17 module, Figure 6: 7x7 factorised into 1x7 and 7x1 (c7 channels inside)."""
    return Towers(cin, OrderedDict(
        branch1x1=C(cin, 192, 1),
        branch7x7=seq(C(cin, c7, 1), C(c7, c7, (1, 7)), C(c7, 192, (7, 1))),
        branch7x7dbl=seq(C(cin, c7, 1), C(c7, c7, (7, 1)), C(c7, c7, (1, 7)),
                         C(c7, c7, (7, 1)), C(c7, 192, (1, 7))),
        branch_pool=_avg_pool_proj(cin, 192),
    ), attn)


def reduction_b(cin: int, attn=None) -> Towers:
    """17x17 -> 8x8."""
    return Towers(cin, OrderedDict(
        branch3x3=seq(C(cin, 192, 1), C(192, 320, 3, stride=2, padding=0)),
        branch7x7x3=seq(C(cin, 192, 1), C(192, 192, (1, 7)), C(192, 192, (7, 1)),
                        C(192, 192, 3, stride=2, padding=0)),
        branch_pool=nn.MaxPool2d(3, 2),
    ), attn)


def _split_1x3_3x1(cin: int, out: int) -> Towers:
    return Towers(cin, OrderedDict(a=C(cin, out, (1, 3)), b=C(cin, out, (3, 1))))


def inception_c(cin: int, attn=None) -> Towers:
    """8x8 module, Figure 7: 1x3 and 3x1 side by side to widen the coarsest grid."""
    return Towers(cin, OrderedDict(
        branch1x1=C(cin, 320, 1),
        branch3x3=seq(C(cin, 384, 1), _split_1x3_3x1(384, 384)),
        branch3x3dbl=seq(C(cin, 448, 1), C(448, 384, 3), _split_1x3_3x1(384, 384)),
        branch_pool=_avg_pool_proj(cin, 192),
    ), attn)


# Table 1 from the 35x35 grid on: block name, builder, its extra argument (pool features / c7).
TABLE1 = (
    ("mixed_5b", inception_a, 32), ("mixed_5c", inception_a, 64), ("mixed_5d", inception_a, 64),
    ("mixed_6a", reduction_a, None),
    ("mixed_6b", inception_b, 128), ("mixed_6c", inception_b, 160),
    ("mixed_6d", inception_b, 160), ("mixed_6e", inception_b, 192),
    ("mixed_7a", reduction_b, None),
    ("mixed_7b", inception_c, None), ("mixed_7c", inception_c, None),
)
AUX_AT = "mixed_6e"
# The paper gives no weight for the auxiliary loss; 0.4 is the weight of the reference TF-slim
# training (models/research/slim train_image_classifier.py adds aux logits with weight 0.4).
AUX_LOSS_WEIGHT = 0.4
FEATURES = (("stem.conv2b", 2), ("stem.conv4a", 4), ("blocks.mixed_5d", 8),
            ("blocks.mixed_6e", 16), ("blocks.mixed_7c", 32))


class InceptionV3(AuxHeadsMixin, ZooNet):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False,
                 drop_rate: float = 0.5, attn: AttnLike = None):
        super().__init__()
        self.num_classes = num_classes
        # Stem, Table 1 rows 'conv' .. 'conv': valid 3x3s, one 'same', two 3x3/2 max pools.
        self.stem = nn.Sequential(OrderedDict(
            conv1a=C(in_chans, 32, 3, stride=2, padding=0),
            conv2a=C(32, 32, 3, padding=0),
            conv2b=C(32, 64, 3),
            pool1=nn.MaxPool2d(3, 2),
            conv3b=C(64, 80, 1),
            conv4a=C(80, 192, 3, padding=0),
            pool2=nn.MaxPool2d(3, 2),
        ))
        blocks, cin, channels = OrderedDict(), 192, {"stem.conv2b": 64, "stem.conv4a": 192}
        for name, make, arg in TABLE1:
            blocks[name] = make(cin, arg, attn=attn) if arg else make(cin, attn=attn)
            cin = channels[f"blocks.{name}"] = blocks[name].out_channels
        self.blocks = nn.Sequential(blocks)
        self.aux_heads = nn.ModuleDict({AUX_AT: AuxClassifier(
            blocks[AUX_AT].out_channels, num_classes, nn.AvgPool2d(5, 3), [(128, 1), (768, 5)])}
            if aux_logits else {})
        self.aux_loss_weights = (AUX_LOSS_WEIGHT,) * len(self.aux_heads)
        self.feature_info = [dict(num_chs=channels[m], reduction=r, module=m) for m, r in FEATURES]
        self.num_features = cin
        self.head = ClassifierHead(cin, num_classes, drop_rate=drop_rate)
        if attn is None:
            self._init_as_reference()
        else:
            init_weights(self)  # SE-Inception-v3 has no reference code: the family's He init

    def _init_as_reference(self) -> None:
        # torchvision's Inception3 = timm's InceptionV3: std 0.1 everywhere, 0.001 for the aux
        # fc. Both also tag the aux 5x5 conv 0.01, but on its conv-BN wrapper, which their loop
        # never reaches, so it starts at 0.1 like the rest; so does it here.
        init_trunc_normal(self, std=0.1)
        for head in self.aux_heads.values():
            if isinstance(head.fc, nn.Linear):
                nn.init.trunc_normal_(head.fc.weight, std=0.001, a=-2.0, b=2.0)


def _build(num_classes=1000, in_chans=3, **kwargs):
    return InceptionV3(num_classes=num_classes, in_chans=in_chans, **kwargs)


def _build_se(num_classes=1000, in_chans=3, **kwargs):
    # The SE paper's reduction ratio r = 16, exactly C/16 channels (no rounding to multiples of 8).
    kwargs.setdefault("attn", partial(get_attn("se"), rd_ratio=1 / 16, rd_divisor=1))
    return InceptionV3(num_classes=num_classes, in_chans=in_chans, **kwargs)


_CFG = DefaultCfg(input_size=(3, 299, 299), mean=INCEPTION_MEAN, std=INCEPTION_STD,
                  interpolation="bicubic", crop_pct=0.875, first_conv="stem.conv1a.conv",
                  classifier="head.fc", min_size=75)
_PAPER = dict(family="Inception", year=2015, arxiv="1512.00567",
              paper="Rethinking the Inception Architecture for Computer Vision")

register_model(
    "inception_v3", _build,
    card=ModelCard(**_PAPER,
                   innovation="Factorised n x 1 / 1 x n convolutions, efficient grid-size "
                              "reduction, BN auxiliary head, label smoothing.",
                   top1=78.8,
                   top1_source="Table 3 / abstract: single model, single crop (299), 21.2% top-1 "
                               "and 5.6% top-5 error on ILSVRC-2012 val"),
    cfg=_CFG,
)
register_model(
    "se_inception_v3", _build_se,
    card=ModelCard(family="SENet", year=2017, paper="Squeeze-and-Excitation Networks",
                   arxiv="1709.01507",
                   innovation="Squeeze-and-Excitation: learned channel gates, here on every "
                              "Inception v3 module.",
                   top1=None,
                   top1_source="the SE paper reports SE-BN-Inception (76.38% top-1 in the "
                               "official README) and SE-Inception-ResNet-v2, not SE-Inception-v3"),
    cfg=_CFG,
)
