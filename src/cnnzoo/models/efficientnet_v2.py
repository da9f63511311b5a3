"""EfficientNetV2 S/M/L (Tan & Le 2021, 'EfficientNetV2: Smaller Models and Faster Training', arXiv
2104.00298).

Training-aware NAS found that depthwise convolutions are slow in the early, high-resolution
stages, so those stages use Fused-MBConv (expansion and depthwise kxk merged into one full kxk
conv, Fig. 2), prefer small expansion ratios and 3x3 kernels, and put more blocks in the later
stages. SE (0.25 of the block input) only sits in the MBConv stages. Progressive resizing with
adaptive regularisation is a training recipe, not part of the network.

Layout and shapes are torchvision's ``efficientnet_v2_*``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from ..layers.helpers import make_divisible
from ..layers.squeeze_excite import SqueezeExcite
from ..registry import INCEPTION_MEAN, INCEPTION_STD, DefaultCfg, ModelCard, register_model
from ._mobile import MobileNet

F, M = True, False  # Fused-MBConv / MBConv
# Rows: (fused, expansion ratio, kernel, stride of the first block, output channels, blocks).
# S is Table 4 of the paper. The paper gives no table for M and L (Section 4: S scaled up with
# compound scaling, a 480 px cap on the inference size and extra layers in stages 5 and 6); these
# rows are the official code's (google/automl efficientnetv2/effnetv2_configs.py), as torchvision.
V2_S = (
    (F, 1, 3, 1, 24, 2),
    (F, 4, 3, 2, 48, 4),
    (F, 4, 3, 2, 64, 4),
    (M, 4, 3, 2, 128, 6),
    (M, 6, 3, 1, 160, 9),
    (M, 6, 3, 2, 256, 15),
)
V2_M = (
    (F, 1, 3, 1, 24, 3),
    (F, 4, 3, 2, 48, 5),
    (F, 4, 3, 2, 80, 5),
    (M, 4, 3, 2, 160, 7),
    (M, 6, 3, 1, 176, 14),
    (M, 6, 3, 2, 304, 18),
    (M, 6, 3, 1, 512, 5),
)
V2_L = (
    (F, 1, 3, 1, 32, 4),
    (F, 4, 3, 2, 64, 7),
    (F, 4, 3, 2, 96, 7),
    (M, 4, 3, 2, 192, 10),
    (M, 6, 3, 1, 224, 19),
    (M, 6, 3, 2, 384, 25),
    (M, 6, 3, 1, 640, 7),
)
HEAD = 1280
SE_RATIO = 0.25


def efficientnet_v2(table, num_classes: int = 1000, in_chans: int = 3, img_size: int = 384,
                    drop_rate: float = 0.2, drop_path_rate: float = 0.2, act_layer="swish",
                    bn_eps: float = 1e-3, bn_momentum: float = 0.01, **kwargs) -> MobileNet:
    """An EfficientNetV2 from a stage table; the stem is as wide as the first stage."""
    bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
    cin = table[0][4]
    stages = []
    for fused, t, k, s, out, n in table:
        blocks = []
        for j in range(n):
            se = None if fused else partial(SqueezeExcite, rd_channels=max(1, int(cin * SE_RATIO)),
                                            act_layer=act_layer, gate_layer="sigmoid")
            blocks.append(dict(in_chs=cin, out_chs=out, mid_chs=make_divisible(cin * t, 8),
                               kernel_size=k, stride=s if j == 0 else 1, fused=fused,
                               act_layer=act_layer, se_layer=se, **bn))
            cin = out
        stages.append(blocks)
    model = MobileNet(stages, stem_chs=table[0][4], head_chs=HEAD, act_layer=act_layer,
                      num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                      drop_path_rate=drop_path_rate, **bn, **kwargs)
    model.input_size = (img_size, img_size)
    return model


@dataclass(frozen=True)
class V2Variant:
    name: str
    table: tuple
    dropout: float
    resolution: int  # torchvision's evaluation size (= the paper's maximum inference size)
    interpolation: str
    inception_norm: bool  # weights ported from TF normalise to [-1, 1]
    top1: float


VARIANTS = (
    V2Variant("efficientnet_v2_s", V2_S, 0.2, 384, "bilinear", False, 83.9),
    V2Variant("efficientnet_v2_m", V2_M, 0.3, 480, "bilinear", False, 85.1),
    V2Variant("efficientnet_v2_l", V2_L, 0.4, 480, "bicubic", True, 85.7),
)


def _register() -> None:
    for v in VARIANTS:
        def build(num_classes=1000, in_chans=3, _v=v, **kwargs):
            kwargs.setdefault("img_size", _v.resolution)
            kwargs.setdefault("drop_rate", _v.dropout)
            return efficientnet_v2(_v.table, num_classes=num_classes, in_chans=in_chans, **kwargs)
        norm = dict(mean=INCEPTION_MEAN, std=INCEPTION_STD) if v.inception_norm else {}
        register_model(
            v.name, build,
            card=ModelCard(
                family="EfficientNetV2", year=2021,
                paper="EfficientNetV2: Smaller Models and Faster Training", arxiv="2104.00298",
                innovation="Fused-MBConv in early stages, training-aware NAS, progressive "
                           "resizing with adaptive regularisation.",
                top1=v.top1,
                top1_source="Table 7: trained on ImageNet ILSVRC2012 only (no 21k), val, at "
                            "the model's largest inference size"),
            # Crop 1.0: the reference evaluation resizes straight to the eval size.
            cfg=DefaultCfg(input_size=(3, v.resolution, v.resolution),
                           interpolation=v.interpolation, crop_pct=1.0, first_conv="stem.conv",
                           classifier="head.fc", **norm),
        )


_register()
