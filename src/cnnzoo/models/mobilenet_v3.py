"""MobileNetV3 (Howard et al. 2019, 'Searching for MobileNetV3', arXiv 1905.02244).

Platform-aware NAS found the blocks and NetAdapt trimmed their widths; by hand the authors then
added hard-swish (a piecewise-linear swish, cheap on phones) in the deeper half, squeeze-and-
excitation with a hard-sigmoid gate sized at 1/4 of the expanded width, and an 'efficient last
stage' that pools before the final 1280-wide layer. Layout and shapes are torchvision's
``mobilenet_v3_large`` / ``mobilenet_v3_small``.
"""
from __future__ import annotations

from functools import partial

from ..layers.helpers import make_divisible
from ..layers.squeeze_excite import SqueezeExcite
from ..registry import DefaultCfg, ModelCard, register_model
from ._mobile import MobileNet

RE, HS = "relu", "hswish"
# Tables 1 (Large) and 2 (Small) of the paper, one row per bneck block:
# (kernel, expansion size, output channels, SE, nonlinearity, stride), grouped into one stage
# per output width.
LARGE = (
    ((3, 16, 16, False, RE, 1),),
    ((3, 64, 24, False, RE, 2), (3, 72, 24, False, RE, 1)),
    ((5, 72, 40, True, RE, 2), (5, 120, 40, True, RE, 1), (5, 120, 40, True, RE, 1)),
    ((3, 240, 80, False, HS, 2), (3, 200, 80, False, HS, 1), (3, 184, 80, False, HS, 1),
     (3, 184, 80, False, HS, 1)),
    ((3, 480, 112, True, HS, 1), (3, 672, 112, True, HS, 1)),
    ((5, 672, 160, True, HS, 2), (5, 960, 160, True, HS, 1), (5, 960, 160, True, HS, 1)),
)
SMALL = (
    ((3, 16, 16, True, RE, 2),),
    ((3, 72, 24, False, RE, 2), (3, 88, 24, False, RE, 1)),
    ((5, 96, 40, True, HS, 2), (5, 240, 40, True, HS, 1), (5, 240, 40, True, HS, 1)),
    ((5, 120, 48, True, HS, 1), (5, 144, 48, True, HS, 1)),
    ((5, 288, 96, True, HS, 2), (5, 576, 96, True, HS, 1), (5, 576, 96, True, HS, 1)),
)
# The last stage of each table: a 1x1 conv to 6x the last width, pooling, then a dense layer.
HEAD_HIDDEN = {"large": 1280, "small": 1024}
STEM = 16


def mobilenet_v3(size: str = "large", width_mult: float = 1.0, num_classes: int = 1000,
                 in_chans: int = 3, drop_rate: float = 0.2, drop_path_rate: float = 0.0,
                 **kwargs) -> MobileNet:
    if size not in ("large", "small"):
        raise ValueError(f"size must be 'large' or 'small', got {size!r}")
    table = LARGE if size == "large" else SMALL
    width = partial(_scale, width_mult=width_mult)
    cin = width(STEM)
    stages = []
    for stage in table:
        blocks = []
        for k, exp, out, se, act, stride in stage:
            mid = width(exp)
            # SE squeezes to a quarter of the expanded width, rounded to 8 (Section 5.3); its
            # inner activation is ReLU and its gate the hard sigmoid.
            se_layer = partial(SqueezeExcite, rd_channels=make_divisible(mid // 4, 8),
                               act_layer="relu", gate_layer="hsigmoid") if se else None
            blocks.append(dict(in_chs=cin, out_chs=width(out), mid_chs=mid, kernel_size=k,
                               stride=stride, act_layer=act, se_layer=se_layer))
            cin = width(out)
        stages.append(blocks)
    return MobileNet(stages, stem_chs=width(STEM), act_layer=HS, head_chs=6 * cin,
                     head_hidden=width(HEAD_HIDDEN[size]), head_act=HS,
                     num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                     drop_path_rate=drop_path_rate,
                     # The TF reference's BN (eps 1e-3, decay 0.99), kept by torchvision.
                     **{"bn_eps": 1e-3, "bn_momentum": 0.01, **kwargs})


def _scale(chs: int, width_mult: float) -> int:
    return make_divisible(chs * width_mult, 8)


_CARD = dict(family="MobileNet", year=2019, paper="Searching for MobileNetV3", arxiv="1905.02244",
             innovation="Platform-aware NAS + NetAdapt; hard-swish, SE with hard-sigmoid gate, "
                        "an efficient last stage.")
# Table 3 of the paper: floating-point ImageNet top-1 at 224.
VARIANTS = (("mobilenet_v3_large", "large", 75.2), ("mobilenet_v3_small", "small", 67.4))


def _register() -> None:
    for name, size, top1 in VARIANTS:
        def build(num_classes=1000, in_chans=3, _size=size, **kwargs):
            return mobilenet_v3(_size, num_classes=num_classes, in_chans=in_chans, **kwargs)
        register_model(
            name, build,
            card=ModelCard(**_CARD, top1=top1,
                           top1_source=f"Table 3: MobileNetV3-{size.capitalize()} 1.0, "
                                       "floating point, ImageNet val, 224"),
            cfg=DefaultCfg(interpolation="bilinear", crop_pct=0.875, first_conv="stem.conv",
                           classifier="head.fc"),
        )


_register()
