"""MobileNetV2 (Sandler et al. 2018, 'MobileNetV2: Inverted Residuals and Linear Bottlenecks',
arXiv 1801.04381).

The residual connects the thin bottlenecks and the block expands in between (an 'inverted'
residual, ``layers.mbconv.MBConv``); the projection back to the bottleneck is linear because a
ReLU on a low-dimensional map loses information (Section 3.2). Layout and shapes are
torchvision's ``mobilenet_v2``.
"""
from __future__ import annotations

from ..layers.helpers import make_divisible
from ..registry import DefaultCfg, ModelCard, register_model
from ._mobile import MobileNet

STEM = 32
HEAD = 1280
# Table 2 of the paper: (expansion t, output channels c, repeats n, stride s of the first block).
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenet_v2(width_mult: float = 1.0, num_classes: int = 1000, in_chans: int = 3,
                 act_layer="relu6", drop_rate: float = 0.2, drop_path_rate: float = 0.0,
                 **kwargs) -> MobileNet:
    """MobileNetV2 at width multiplier ``width_mult`` (the paper's Table 6 sweeps 0.35-1.4)."""
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    cin = make_divisible(STEM * width_mult, 8)
    stages = []
    for t, c, n, s in STAGES:
        out = make_divisible(c * width_mult, 8)
        blocks = []
        for j in range(n):
            blocks.append(dict(in_chs=cin, out_chs=out, mid_chs=int(round(cin * t)),
                               stride=s if j == 0 else 1, act_layer=act_layer))
            cin = out
        stages.append(blocks)
    # Section 4: the last 1x1 conv keeps its 1280 channels for multipliers below one ("we do not
    # apply width multiplier to the last convolutional layer") and grows above one.
    head = make_divisible(HEAD * max(1.0, width_mult), 8)
    return MobileNet(stages, stem_chs=make_divisible(STEM * width_mult, 8), head_chs=head,
                     num_classes=num_classes, in_chans=in_chans, act_layer=act_layer,
                     drop_rate=drop_rate, drop_path_rate=drop_path_rate, **kwargs)


def _build(num_classes=1000, in_chans=3, **kwargs):
    return mobilenet_v2(num_classes=num_classes, in_chans=in_chans, **kwargs)


register_model(
    "mobilenet_v2", _build,
    card=ModelCard(
        family="MobileNet", year=2018,
        paper="MobileNetV2: Inverted Residuals and Linear Bottlenecks", arxiv="1801.04381",
        innovation="Inverted residual blocks with linear bottlenecks.",
        # Table 4 of the current arXiv version is recalled as 72.0 (300M MAdds, 3.4M params), but
        # the number could not be checked against the paper and secondary sources disagree (an
        # early version is quoted at 71.7), so no figure is claimed.
        top1=None, top1_source="unverified: Table 4 (1.0 at 224) is quoted as 72.0 (latest arXiv) "
                               "and 71.7 (early version); paper text not checked"),
    cfg=DefaultCfg(interpolation="bilinear", crop_pct=0.875, first_conv="stem.conv",
                   classifier="head.fc"),
)
