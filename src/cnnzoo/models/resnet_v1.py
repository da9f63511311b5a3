"""ResNet v1 as the paper built it (He, Zhang, Ren, Sun 2015, arXiv 1512.03385, Table 1).

The paper's bottleneck downsamples in its first 1x1 convolution: the Caffe release (and Keras's
``ResNet50/101/152``, ported from it) put stride 2 there. torchvision and timm moved the stride to
the 3x3 ('v1.5', models/resnet.py): the same parameters, about 0.5% better top-1, but another
network, whose weights do not fit this one. Keras's port also gives every convolution a bias
(redundant before BatchNorm, kept so its weights load exactly). Built here from ResNet's own
classes, so the two differ only where the papers' releases do.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import DefaultCfg, ModelCard, register_model
from .resnet import Bottleneck, ResNet

# (name, stage depths, paper top-1 with where it stands): Table 1 depths, Table 3 errors.
VARIANTS = (
    ("resnet50_v1", (3, 4, 6, 3), 77.15, "Table 3: ResNet-50, 10-crop, top-1 error 22.85%"),
    ("resnet101_v1", (3, 4, 23, 3), 78.25, "Table 3: ResNet-101, 10-crop, top-1 error 21.75%"),
    ("resnet152_v1", (3, 8, 36, 3), 78.57, "Table 3: ResNet-152, 10-crop, top-1 error 21.43%"),
)


def resnet_v1(layers: tuple[int, ...], conv_bias: bool = True, **kwargs) -> ResNet:
    """A bottleneck ResNet with the stride of each downsampling block in its first 1x1."""
    model = ResNet("bottleneck", layers, **kwargs)
    for block in model.modules():
        if isinstance(block, Bottleneck) and block.conv2.conv.stride != (1, 1):
            block.conv1.conv.stride, block.conv2.conv.stride = block.conv2.conv.stride, (1, 1)
    if conv_bias:
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.bias is None:
                m.bias = nn.Parameter(torch.zeros(m.out_channels, device=m.weight.device,
                                                  dtype=m.weight.dtype))
    return model


def _register() -> None:
    for name, layers, top1, where in VARIANTS:
        def build(num_classes=1000, in_chans=3, _layers=layers, **kwargs):
            return resnet_v1(_layers, num_classes=num_classes, in_chans=in_chans, **kwargs)
        register_model(
            name, build,
            card=ModelCard(
                family="ResNet", year=2015, paper="Deep Residual Learning for Image Recognition",
                arxiv="1512.03385",
                innovation="The paper's bottleneck: stride 2 in the first 1x1 (torchvision's "
                           "v1.5 strides the 3x3) and, as Keras's port, biased convolutions.",
                top1=top1, top1_source=where),
            cfg=DefaultCfg(first_conv="stem.conv", classifier="head.fc"))


_register()
