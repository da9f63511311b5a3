"""MobileNetV1 (Howard et al. 2017, 'MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications', arXiv 1704.04861).

Every 3x3 convolution after the stem is factored into a depthwise 3x3 and a pointwise 1x1
(``layers.mbconv.DepthwiseSeparable``), which cuts computation 8-9x for about 1% accuracy. Two
knobs trade accuracy for cost: the width multiplier ``alpha`` thins every layer (Table 6) and the
resolution multiplier is simply a smaller input (``img_size`` 224/192/160/128, Table 7).

The layout is timm's ``mobilenetv1_100`` (the same layers as Keras' MobileNet), grouped into one
stage per output width so that ``stages.3.blocks.5`` is the last of the six 512-wide blocks.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..layers.helpers import make_divisible
from ..layers.mbconv import DepthwiseSeparable
from ..registry import INCEPTION_MEAN, INCEPTION_STD, DefaultCfg, ModelCard, register_model
from ._mobile import MobileNet

STEM = 32
# Table 1 of the paper, one row per width: (output channels, stride of the first block, blocks).
# Table 1 prints 's2' for the last depthwise conv on the 7x7 map, a typo: the map stays 7x7 into
# the 7x7 average pool, and every reference implementation uses stride 1 there.
STAGES: tuple[tuple[int, int, int], ...] = (
    (64, 1, 1),
    (128, 2, 2),
    (256, 2, 2),
    (512, 2, 6),
    (1024, 2, 2),
)


def mobilenet_v1(alpha: float = 1.0, num_classes: int = 1000, in_chans: int = 3,
                 img_size: int = 224, act_layer="relu6", drop_rate: float = 0.0,
                 **kwargs) -> MobileNet:
    """MobileNetV1 at width multiplier ``alpha``; ``img_size`` records the resolution multiplier
    (the network itself takes any size: it ends in global pooling)."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    # Channels are rounded to multiples of 8 as timm does; for the paper's alphas (1, 0.75, 0.5,
    # 0.25) this equals the paper's alpha * M exactly.
    def width(chs: int) -> int:
        return make_divisible(chs * alpha, 8)

    cin = width(STEM)
    stages = []
    for out, stride, repeats in STAGES:
        blocks = []
        for j in range(repeats):
            blocks.append(dict(block=DepthwiseSeparable, in_chs=cin, out_chs=width(out),
                               stride=stride if j == 0 else 1, act_layer=act_layer))
            cin = width(out)
        stages.append(blocks)
    model = MobileNet(stages, stem_chs=width(STEM), num_classes=num_classes, in_chans=in_chans,
                      act_layer=act_layer, drop_rate=drop_rate, **kwargs)
    model.input_size = (img_size, img_size)
    return model


@dataclass(frozen=True)
class V1Variant:
    name: str
    alpha: float
    top1: float


# Table 6 of the paper: ImageNet top-1 at 224 for each width multiplier.
VARIANTS = (
    V1Variant("mobilenet_v1", 1.0, 70.6),
    V1Variant("mobilenet_v1_075", 0.75, 68.4),
    V1Variant("mobilenet_v1_050", 0.5, 63.7),
    V1Variant("mobilenet_v1_025", 0.25, 50.6),
)


def _register() -> None:
    for v in VARIANTS:
        def build(num_classes=1000, in_chans=3, _v=v, **kwargs):
            kwargs.setdefault("alpha", _v.alpha)
            return mobilenet_v1(num_classes=num_classes, in_chans=in_chans, **kwargs)
        register_model(
            v.name, build,
            card=ModelCard(
                family="MobileNet", year=2017,
                paper="MobileNets: Efficient Convolutional Neural Networks for Mobile Vision "
                      "Applications", arxiv="1704.04861",
                innovation="Depthwise-separable convolutions; width and resolution multipliers.",
                top1=v.top1,
                top1_source=f"Table 6: {v.alpha:g} MobileNet-224, ImageNet val, single crop"),
            # timm's weights for this layout were trained with Inception mean/std and bicubic.
            cfg=DefaultCfg(mean=INCEPTION_MEAN, std=INCEPTION_STD, interpolation="bicubic",
                           crop_pct=0.875, first_conv="stem.conv", classifier="head.fc"),
        )


_register()
