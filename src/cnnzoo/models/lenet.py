"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, 'Gradient-Based Learning Applied to Document
Recognition', Proc. IEEE 86(11), Section II.B and Fig. 2).

C1 (6 maps, 5x5) -> S2 (2x2 subsampling) -> C3 (16 maps, 5x5) -> S4 -> C5 (120) -> F6 (84)
-> output (10), tanh throughout. Deviations, each a convention the whole field adopted since:
- S2/S4 are plain average pooling; the paper's subsampling units also had one trainable
  coefficient and bias per map (12 + 32 parameters), which the reference count (61,706) leaves out.
- C3 connects to all six S2 maps; the paper's Table I connects each C3 map to a subset only, to
  break symmetry when GPUs did not exist. Full connection is what the reference count assumes.
- C5 is a dense layer on the flattened S4 maps: identical to the paper's 5x5 convolution at 32x32
  input (5x5 is all there is), and it is what makes the 28x28 Keras variant (4x4 maps) work.
- The output is a linear layer for softmax cross-entropy instead of Euclidean RBF units, and
  tanh is the plain one rather than the paper's scaled 1.7159 * tanh(2a/3).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..layers.classifier import MLPHead
from ..layers.conv_norm_act import ConvNormAct
from ..registry import DefaultCfg, ModelCard, register_model
from .base import ZooNet


def _feature_side(img_size: int) -> int:
    return ((img_size - 4) // 2 - 4) // 2


class LeNet5(ZooNet):
    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 32,
                 act_layer: str = "tanh"):
        super().__init__()
        if _feature_side(img_size) < 1:
            raise ValueError(f"LeNet-5 needs img_size >= 16, got {img_size}")
        self.num_classes = num_classes
        self.input_size = (img_size, img_size)
        side = _feature_side(img_size)

        def conv(cin, cout):
            return ConvNormAct(cin, cout, 5, padding=0, norm_layer=None, act_layer=act_layer)

        self.features = nn.Sequential(OrderedDict(
            c1=conv(in_chans, 6),
            s2=nn.AvgPool2d(2),
            c3=conv(6, 16),
            s4=nn.AvgPool2d(2),
        ))
        self.num_features = 84
        # fc1 is C5, fc2 is F6 in the paper's naming.
        self.head = MLPHead(16, (120, 84), num_classes, expected=(16, side, side),
                            size_hint=f"LeNet-5 was built for {img_size}x{img_size} input; "
                                      f"resize the images or rebuild with img_size=<their size>.",
                            act_layer=act_layer)
        self.feature_info = [
            dict(num_chs=6, reduction=1, module="features.c1"),
            dict(num_chs=6, reduction=2, module="features.s2"),
            dict(num_chs=16, reduction=2, module="features.c3"),
            dict(num_chs=16, reduction=4, module="features.s4"),
        ]

    feature_chain = ("features",)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


register_model(
    "lenet5", LeNet5,
    card=ModelCard(
        family="LeNet", year=1998,
        paper="Gradient-Based Learning Applied to Document Recognition", arxiv=None,
        innovation="Convolutions, subsampling and shared weights trained end to end by backprop.",
        top1=None,
        top1_source="no ImageNet result (1998); MNIST test error 0.95%, 0.8% with distortions "
                    "(Section III.C and Fig. 14 of the paper)"),
    cfg=DefaultCfg(input_size=(1, 32, 32), num_classes=10, mean=(0.1307,), std=(0.3081,),
                   crop_pct=1.0, first_conv="features.c1.conv", classifier="head.fc",
                   min_size=16, fixed_size=True),
)
