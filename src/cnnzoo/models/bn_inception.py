"""BN-Inception, or Inception v2 (Ioffe & Szegedy 2015, 'Batch Normalization: Accelerating Deep
Network Training by Reducing Internal Covariate Shift', arXiv 1502.03167).

The network of the BN paper's Figure 5: GoogLeNet with batch normalisation after every
convolution, each 5x5 replaced by two stacked 3x3 (same window, fewer weights), grid reductions
(3c, 4e) made inside Inception modules by striding the last conv of each tower next to a max pool
pass-through, and average pooling in most pool towers. No auxiliary classifiers are built.

Where Figure 5 contradicts itself (the pool projections of 4c and 4d are printed as 128, which
makes 608 channels while the table's output-size column says 576) we follow the output column,
as TF-slim's inception_v2 does (96 for both). The first conv is a plain 7x7 convolution (TF-slim's
separable 7x7 is its own variant).
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..layers.attention import AttnLike
from ..layers.classifier import ClassifierHead
from ..layers.inception import BasicConv, InceptionModule, init_weights
from ..registry import DefaultCfg, ModelCard, register_model
from .base import ZooNet

# Figure 5 of the BN paper: name, #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3,
# pool proj (0: pass-through), pool type, stride.
FIGURE5 = (
    ("inception_3a", 64, 64, 64, 64, 96, 32, "avg", 1),
    ("inception_3b", 64, 64, 96, 64, 96, 64, "avg", 1),
    ("inception_3c", 0, 128, 160, 64, 96, 0, "max", 2),
    ("inception_4a", 224, 64, 96, 96, 128, 128, "avg", 1),
    ("inception_4b", 192, 96, 128, 96, 128, 128, "avg", 1),
    ("inception_4c", 160, 128, 160, 128, 160, 96, "avg", 1),
    ("inception_4d", 96, 128, 192, 160, 192, 96, "avg", 1),
    ("inception_4e", 0, 128, 192, 192, 256, 0, "max", 2),
    ("inception_5a", 352, 192, 320, 160, 224, 128, "avg", 1),
    ("inception_5b", 352, 192, 320, 192, 224, 128, "max", 1),
)
FEATURES = ("stem.conv1", "stem.conv2", "blocks.inception_3b", "blocks.inception_4d",
            "blocks.inception_5b")


class BNInception(ZooNet):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 attn: AttnLike = None):
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(OrderedDict(
            conv1=BasicConv(in_chans, 64, 7, stride=2),
            pool1=nn.MaxPool2d(3, 2, ceil_mode=True),
            conv2_reduce=BasicConv(64, 64, 1),
            conv2=BasicConv(64, 192, 3),
            pool2=nn.MaxPool2d(3, 2, ceil_mode=True),
        ))
        blocks, cin, channels = OrderedDict(), 192, {"stem.conv1": 64, "stem.conv2": 192}
        for name, *widths, pool, stride in FIGURE5:
            blocks[name] = InceptionModule(cin, *widths, five="double_3x3", pool=pool,
                                           stride=stride, attn=attn)
            cin = channels[f"blocks.{name}"] = blocks[name].out_channels
        self.blocks = nn.Sequential(blocks)
        self.feature_info = [dict(num_chs=channels[m], reduction=2 ** (i + 1), module=m)
                             for i, m in enumerate(FEATURES)]
        self.num_features = cin
        self.head = ClassifierHead(cin, num_classes, drop_rate=drop_rate)
        init_weights(self)

    feature_chain = ("stem", "blocks")

    def forward_features(self, x):
        return self.blocks(self.stem(x))


register_model(
    "bn_inception", BNInception,
    card=ModelCard(
        family="Inception", year=2015,
        paper="Batch Normalization: Accelerating Deep Network Training by Reducing Internal "
              "Covariate Shift", arxiv="1502.03167",
        innovation="Batch normalisation of every layer's inputs; each 5x5 conv becomes two 3x3.",
        top1=74.8,
        top1_source="Figure 3: BN-x30, one network, the maximum single-crop validation accuracy "
                    "it reached (the 6-network ensemble: 4.9% top-5 val error, 4.8% test)"),
    cfg=DefaultCfg(first_conv="stem.conv1.conv", classifier="head.fc"),
)
