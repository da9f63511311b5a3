"""AlexNet (Krizhevsky, Sutskever, Hinton 2012, 'ImageNet Classification with Deep Convolutional
Neural Networks', NIPS; Section 3 and Fig. 2), in two forms.

- ``alexnet_original``: the paper's network. Five convolutions of 96-256-384-384-256 filters;
  conv2, conv4 and conv5 split in two groups (one per GPU, Section 3.5: only conv3 and the dense
  layers see both halves); local response normalisation (k=2, n=5, alpha=1e-4, beta=0.75) after
  conv1 and conv2; overlapping 3x3 stride-2 max-pooling (Section 3.4); dropout 0.5 in the two
  hidden dense layers; 227x227 input (the paper says 224, but 11x11 stride 4 needs 227 to give the
  55x55 maps of Fig. 2).
- ``alexnet``: the single-tower 64-192-384-256-256 network of Krizhevsky 2014, 'One weird trick for
  parallelizing convolutional neural networks' (arXiv 1404.5997), as torchvision ships it, with
  adaptive 6x6 pooling so it takes any input size from 63x63 up.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..layers.classifier import MLPHead
from ..layers.conv_norm_act import ConvNormAct
from ..layers.norm import lrn
from ..registry import DefaultCfg, ModelCard, register_model
from .base import ZooNet


def _conv(cin, cout, k, stride=1, padding=0, groups=1):
    return ConvNormAct(cin, cout, k, stride=stride, padding=padding, groups=groups,
                       norm_layer=None, act_layer="relu")


class AlexNet(ZooNet):
    """torchvision-compatible single-tower AlexNet."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5):
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(OrderedDict(
            conv1=_conv(in_chans, 64, 11, stride=4, padding=2),
            pool1=nn.MaxPool2d(3, 2),
            conv2=_conv(64, 192, 5, padding=2),
            pool2=nn.MaxPool2d(3, 2),
            conv3=_conv(192, 384, 3, padding=1),
            conv4=_conv(384, 256, 3, padding=1),
            conv5=_conv(256, 256, 3, padding=1),
            pool5=nn.MaxPool2d(3, 2),
        ))
        self.num_features = 4096
        self.head = MLPHead(256, (4096, 4096), num_classes, pool_size=(6, 6), drop_rate=drop_rate,
                            drop_first=True)
        self.feature_info = [
            dict(num_chs=64, reduction=4, module="features.conv1"),
            dict(num_chs=192, reduction=8, module="features.conv2"),
            dict(num_chs=256, reduction=16, module="features.conv5"),
            dict(num_chs=256, reduction=32, module="features.pool5"),
        ]

    feature_chain = ("features",)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _original_side(img_size: int) -> int:
    side = (img_size - 11) // 4 + 1  # conv1
    for _ in range(3):  # pool1, pool2, pool5 (the convs between keep the size)
        side = (side - 3) // 2 + 1
    return side


class AlexNetOriginal(ZooNet):
    """The 2012 paper's two-group network with LRN, at a fixed input size."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, img_size: int = 227,
                 drop_rate: float = 0.5):
        super().__init__()
        if _original_side(img_size) < 1:
            raise ValueError(f"alexnet_original needs img_size >= 67, got {img_size}")
        self.num_classes = num_classes
        self.input_size = (img_size, img_size)
        side = _original_side(img_size)
        self.features = nn.Sequential(OrderedDict(
            conv1=_conv(in_chans, 96, 11, stride=4),
            norm1=lrn(size=5, alpha=1e-4, beta=0.75, k=2.0),
            pool1=nn.MaxPool2d(3, 2),
            conv2=_conv(96, 256, 5, padding=2, groups=2),
            norm2=lrn(size=5, alpha=1e-4, beta=0.75, k=2.0),
            pool2=nn.MaxPool2d(3, 2),
            conv3=_conv(256, 384, 3, padding=1),
            conv4=_conv(384, 384, 3, padding=1, groups=2),
            conv5=_conv(384, 256, 3, padding=1, groups=2),
            pool5=nn.MaxPool2d(3, 2),
        ))
        self.num_features = 4096
        self.head = MLPHead(256, (4096, 4096), num_classes, expected=(256, side, side),
                            size_hint=f"alexnet_original was built for {img_size}x{img_size} input; "
                                      f"resize the images or rebuild with img_size=<their size>.",
                            drop_rate=drop_rate)
        self.feature_info = [
            dict(num_chs=96, reduction=4, module="features.conv1"),
            dict(num_chs=256, reduction=8, module="features.conv2"),
            dict(num_chs=256, reduction=16, module="features.conv5"),
            dict(num_chs=256, reduction=32, module="features.pool5"),
        ]
        self._init_as_paper()

    def _init_as_paper(self) -> None:
        # Section 5: weights from N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden dense
        # layers (so ReLUs start with positive inputs), 0 elsewhere.
        ones = {"features.conv2.conv", "features.conv4.conv", "features.conv5.conv",
                "head.fc1", "head.fc2"}
        for name, m in self.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, 1.0 if name in ones else 0.0)

    feature_chain = ("features",)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


_PAPER_2012 = "ImageNet Classification with Deep Convolutional Neural Networks"

register_model(
    "alexnet", AlexNet,
    card=ModelCard(
        family="AlexNet", year=2012, paper=_PAPER_2012 + " (single-tower form of arXiv 1404.5997)",
        arxiv="1404.5997",
        innovation="ReLU, dropout and GPU training make a deep CNN win ImageNet.",
        top1=59.3, top1_source="2012 paper, Table 2: 1 CNN, ILSVRC-2012 val top-1 error 40.7%"),
    cfg=DefaultCfg(first_conv="features.conv1.conv", classifier="head.fc", min_size=63),
)
register_model(
    "alexnet_original", AlexNetOriginal,
    card=ModelCard(
        family="AlexNet", year=2012, paper=_PAPER_2012, arxiv=None,
        innovation="ReLU, dropout, LRN and two-GPU grouped convolutions win ILSVRC-2012.",
        top1=59.3, top1_source="Table 2: 1 CNN, ILSVRC-2012 val top-1 error 40.7%"),
    cfg=DefaultCfg(input_size=(3, 227, 227), first_conv="features.conv1.conv",
                   classifier="head.fc", min_size=67, fixed_size=True),
)
