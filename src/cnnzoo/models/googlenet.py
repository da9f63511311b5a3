"""GoogLeNet, or Inception v1 (Szegedy et al. 2014, 'Going Deeper with Convolutions',
arXiv 1409.4842).

Nine Inception modules (Table 1) stacked on a small conventional stem, global average pooling
instead of big dense layers, and two auxiliary classifiers on inception (4a) and (4d) whose losses
count with weight 0.3 during training (Section 5) and which are dropped at inference.

Deviations, all from torchvision's GoogLeNet so its weights load: BN (eps 1e-3) after every conv,
which the 2014 paper predates; the '5x5' tower is a 3x3 (``five='5x5'`` restores the paper's);
pool4 is 2x2/2 rather than 3x3/2 (same output size, no parameters); no LRN in the stem.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..layers.attention import AttnLike
from ..layers.classifier import ClassifierHead
from ..layers.inception import (AuxClassifier, AuxHeadsMixin, BasicConv, InceptionModule,
                                init_trunc_normal, init_weights)
from ..registry import DefaultCfg, ModelCard, register_model
from .base import ZooNet

# Table 1: name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj; "pool" rows are the
# 3x3/2 max pools between the grids (28 -> 14 -> 7).
TABLE1 = (
    ("inception_3a", 64, 96, 128, 16, 32, 32),
    ("inception_3b", 128, 128, 192, 32, 96, 64),
    ("pool3",),
    ("inception_4a", 192, 96, 208, 16, 48, 64),
    ("inception_4b", 160, 112, 224, 24, 64, 64),
    ("inception_4c", 128, 128, 256, 24, 64, 64),
    ("inception_4d", 112, 144, 288, 32, 64, 64),
    ("inception_4e", 256, 160, 320, 32, 128, 128),
    ("pool4",),
    ("inception_5a", 256, 160, 320, 32, 128, 128),
    ("inception_5b", 384, 192, 384, 48, 128, 128),
)
# Section 5: the auxiliary classifiers sit on (4a) and (4d); their losses are weighted by 0.3.
AUX_AT = ("inception_4a", "inception_4d")
AUX_LOSS_WEIGHT = 0.3
FEATURES = ("stem.conv1", "stem.conv3", "blocks.inception_3b", "blocks.inception_4e",
            "blocks.inception_5b")


class GoogLeNet(AuxHeadsMixin, ZooNet):
    """GoogLeNet; ``aux_logits=True`` adds the two auxiliary heads (returned in training mode).

    Dropout rates are Section 5's: 40% before the main classifier, 70% in the auxiliary ones.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False,
                 drop_rate: float = 0.4, aux_drop_rate: float = 0.7, five: str = "3x3",
                 attn: AttnLike = None):
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(OrderedDict(
            conv1=BasicConv(in_chans, 64, 7, stride=2),
            pool1=nn.MaxPool2d(3, 2, ceil_mode=True),
            conv2=BasicConv(64, 64, 1),
            conv3=BasicConv(64, 192, 3),
            pool2=nn.MaxPool2d(3, 2, ceil_mode=True),
        ))
        blocks, cin, channels = OrderedDict(), 192, {"stem.conv1": 64, "stem.conv3": 192}
        for row in TABLE1:
            if len(row) == 1:
                size = 2 if row[0] == "pool4" else 3
                blocks[row[0]] = nn.MaxPool2d(size, 2, ceil_mode=True)
                continue
            blocks[row[0]] = InceptionModule(cin, *row[1:], five=five, attn=attn)
            cin = channels[f"blocks.{row[0]}"] = blocks[row[0]].out_channels
        self.blocks = nn.Sequential(blocks)
        self.aux_heads = nn.ModuleDict({
            name: AuxClassifier(blocks[name].out_channels, num_classes, nn.AdaptiveAvgPool2d(4),
                                [(128, 1)], flat_size=16, hidden=1024, drop_rate=aux_drop_rate)
            for name in (AUX_AT if aux_logits else ())
        })
        self.aux_loss_weights = (AUX_LOSS_WEIGHT,) * len(self.aux_heads)
        self.feature_info = [dict(num_chs=channels[m], reduction=2 ** (i + 1), module=m)
                             for i, m in enumerate(FEATURES)]
        self.num_features = cin
        self.head = ClassifierHead(cin, num_classes, drop_rate=drop_rate)
        if attn is None:
            init_trunc_normal(self, std=0.01)  # torchvision's GoogLeNet, whose layout this is
        else:
            init_weights(self)  # attention variants have no reference code: the family's He init


register_model(
    "googlenet", GoogLeNet,
    card=ModelCard(
        family="Inception", year=2014, paper="Going Deeper with Convolutions", arxiv="1409.4842",
        innovation="Inception module: parallel 1x1/3x3/5x5/pool towers with 1x1 reductions.",
        top1=None,
        top1_source="the paper reports top-5 error only: 6.67% on the ILSVRC-2014 test set for "
                    "its 7-model, 144-crop ensemble (Section 7); no top-1"),
    cfg=DefaultCfg(first_conv="stem.conv1.conv", classifier="head.fc"),
)
