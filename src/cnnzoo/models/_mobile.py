"""The skeleton MobileNetV1/V2/V3 and EfficientNet V1/V2 share: stem, stages, 1x1 head conv, head.

Not a family (the leading underscore keeps it out of model discovery): the five families differ
only in their stage tables, so each family file turns its paper's table into per-block keyword
arguments and hands them here, instead of five copies of the same ``__init__``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..layers.activations import ActLike
from ..layers.classifier import ClassifierHead, MLPHead
from ..layers.conv_norm_act import ConvNormAct
from ..layers.mbconv import build_stages, init_weights
from .base import ZooNet


class MobileNet(ZooNet):
    """A strided 3x3 stem, stages of blocks, an optional 1x1 conv widening the last map
    (``head_chs``), global pooling and a classifier; MobileNetV3 adds a hidden dense layer
    after the pooling (``head_hidden``), its 'efficient last stage'."""

    def __init__(self, stages: Sequence[Sequence[dict[str, Any]]], *, stem_chs: int,
                 num_classes: int = 1000, in_chans: int = 3, act_layer: ActLike = "relu6",
                 head_chs: int | None = None, head_hidden: int | None = None,
                 head_act: ActLike = None, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        head_act = head_act or act_layer
        self.num_classes = num_classes
        self.stem = ConvNormAct(in_chans, stem_chs, 3, stride=2, act_layer=act_layer, **bn)
        self.stages, info = build_stages(stages, drop_path_rate=drop_path_rate, reduction=2,
                                          defaults=bn)
        if info[0]["reduction"] != 2:
            info.insert(0, dict(num_chs=stem_chs, reduction=2, module="stem"))
        self.feature_info = info
        chs = info[-1]["num_chs"]
        if head_chs:
            self.conv_head = ConvNormAct(chs, head_chs, 1, act_layer=head_act, **bn)
            chs = head_chs
        else:
            self.conv_head = nn.Identity()
        self.num_features = chs
        if head_hidden:
            # V3 pools before its last widening, so the 1280-wide layer runs on a 1x1 map: a
            # dense layer with a bias and no BN (V3 paper, Section 5.2 and Fig. 5).
            self.head = MLPHead(chs, [head_hidden], num_classes, pool_size=(1, 1),
                                act_layer=head_act, drop_rate=drop_rate)
        else:
            self.head = ClassifierHead(chs, num_classes, drop_rate=drop_rate)
        init_weights(self)
        if head_hidden:
            # The TF reference and timm build this layer as a 1x1 conv (timm's conv_head), so it
            # starts as their convs do: He normal on fan-out, not as a dense layer.
            nn.init.normal_(self.head.fc1.weight, 0.0, math.sqrt(2.0 / head_hidden))

    feature_chain = ("stem", "stages", "conv_head")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self.stages(self.stem(x)))
