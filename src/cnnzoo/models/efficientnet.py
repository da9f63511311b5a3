"""EfficientNet B0-B7 (Tan & Le 2019, 'EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks', arXiv 1905.11946).

A NAS-found baseline (B0, Table 1: MBConv blocks with swish and squeeze-and-excitation) scaled in
depth, width and input resolution together by one compound coefficient phi (Section 3.3):
depth ``alpha ** phi``, width ``beta ** phi``, resolution ``gamma ** phi`` with alpha = 1.2,
beta = 1.1, gamma = 1.15 found by a grid search so that alpha * beta^2 * gamma^2 ~ 2, i.e. each
step of phi about doubles the FLOPs. The released B1-B7 are not exactly ``alpha ** phi``: their
rows (below, from the official code) were rounded by hand; ``compound_scaling(phi)`` gives the
rule itself and ``scaling_table()`` sets the two side by side.

Layout and shapes are torchvision's ``efficientnet_b*``; channels round to multiples of 8 and
block counts round up, as the official code does.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from ..layers.helpers import make_divisible, round_repeats
from ..layers.squeeze_excite import SqueezeExcite
from ..registry import DefaultCfg, ModelCard, register_model
from ._mobile import MobileNet

# Table 1 of the paper, the B0 baseline after its 3x3 stem of 32 channels, one row per stage:
# (MBConv expansion ratio, kernel, stride of the first block, output channels, blocks).
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM = 32
HEAD = 1280  # Table 1's final 1x1 conv
SE_RATIO = 0.25  # of the block's *input* width, not of the expanded width (official code)
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # Section 3.3, Eq. 3: depth, width, resolution bases
BASE_RESOLUTION = 224


@dataclass(frozen=True)
class Scaling:
    width: float
    depth: float
    resolution: int


def compound_scaling(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA,
                     base_resolution: int = BASE_RESOLUTION) -> Scaling:
    """The compound scaling rule of Section 3.3 (Eq. 3) for coefficient ``phi``."""
    return Scaling(width=beta ** phi, depth=alpha ** phi,
                   resolution=int(round(base_resolution * gamma ** phi)))


def efficientnet(width_mult: float = 1.0, depth_mult: float = 1.0, num_classes: int = 1000,
                 in_chans: int = 3, img_size: int = BASE_RESOLUTION, drop_rate: float = 0.2,
                 drop_path_rate: float = 0.2, act_layer="swish", bn_eps: float = 1e-3,
                 bn_momentum: float = 0.01, **kwargs) -> MobileNet:
    """B0's table scaled by ``width_mult`` and ``depth_mult``; ``img_size`` is the resolution the
    variant is meant to see (the network itself takes any size).

    BN eps 1e-3 and momentum 0.01 are the official TF settings (decay 0.99); torchvision's
    B0-B4 weights were trained in PyTorch with eps 1e-5: pass ``bn_eps=1e-5`` to match them
    exactly. ``drop_path_rate`` is the official drop-connect rate, 0.2 for every variant.
    """
    width = partial(_round_width, width_mult=width_mult)
    cin = width(STEM)
    stages = []
    for t, k, s, c, n in B0_STAGES:
        out = width(c)
        blocks = []
        for j in range(round_repeats(n, depth_mult)):
            se = partial(SqueezeExcite, rd_channels=max(1, int(cin * SE_RATIO)),
                         act_layer=act_layer, gate_layer="sigmoid")
            blocks.append(dict(in_chs=cin, out_chs=out, mid_chs=make_divisible(cin * t, 8),
                               kernel_size=k, stride=s if j == 0 else 1, act_layer=act_layer,
                               se_layer=se, bn_eps=bn_eps, bn_momentum=bn_momentum))
            cin = out
        stages.append(blocks)
    model = MobileNet(stages, stem_chs=width(STEM), head_chs=width(HEAD), act_layer=act_layer,
                      num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                      drop_path_rate=drop_path_rate, bn_eps=bn_eps, bn_momentum=bn_momentum,
                      **kwargs)
    model.input_size = (img_size, img_size)
    return model


def _round_width(chs: int, width_mult: float) -> int:
    return make_divisible(chs * width_mult, 8)


def efficientnet_from_phi(phi: float, **kwargs) -> MobileNet:
    """A custom-phi EfficientNet built by the rule alone (not one of the hand-rounded rows)."""
    s = compound_scaling(phi)
    kwargs.setdefault("img_size", s.resolution)
    return efficientnet(s.width, s.depth, **kwargs)


@dataclass(frozen=True)
class EfficientNetVariant:
    name: str
    width: float
    depth: float
    resolution: int
    dropout: float
    top1: float
    top1_source: str


_TABLE2 = ("Table 2 (latest arXiv version; v1 printed lower B0-B6 figures), single crop at the "
           "model's resolution, ImageNet val")
# The official rows (tensorflow/tpu efficientnet_builder.py, efficientnet_params): one line each.
VARIANTS = (
    EfficientNetVariant("efficientnet_b0", 1.0, 1.0, 224, 0.2, 77.1, _TABLE2),
    EfficientNetVariant("efficientnet_b1", 1.0, 1.1, 240, 0.2, 79.1, _TABLE2),
    EfficientNetVariant("efficientnet_b2", 1.1, 1.2, 260, 0.3, 80.1, _TABLE2),
    EfficientNetVariant("efficientnet_b3", 1.2, 1.4, 300, 0.3, 81.6, _TABLE2),
    EfficientNetVariant("efficientnet_b4", 1.4, 1.8, 380, 0.4, 82.9, _TABLE2),
    EfficientNetVariant("efficientnet_b5", 1.6, 2.2, 456, 0.4, 83.6, _TABLE2),
    EfficientNetVariant("efficientnet_b6", 1.8, 2.6, 528, 0.5, 84.0, _TABLE2),
    EfficientNetVariant("efficientnet_b7", 2.0, 3.1, 600, 0.5, 84.3,
                        _TABLE2 + " (84.3 also in the abstract; 84.4 in v1)"),
)


def scaling_table() -> list[dict]:
    """Each official row beside what the bare rule gives for phi = 0..7."""
    rows = []
    for phi, v in enumerate(VARIANTS):
        s = compound_scaling(phi)
        rows.append(dict(name=v.name, phi=phi, width=v.width, rule_width=round(s.width, 3),
                         depth=v.depth, rule_depth=round(s.depth, 3), resolution=v.resolution,
                         rule_resolution=s.resolution))
    return rows


def _crop_pct(resolution: int) -> float:
    # The official evaluation resizes to resolution + 32 and center-crops (CROP_PADDING = 32 in
    # the TF preprocessing); timm's tf_efficientnet crop_pct values are these, rounded.
    return resolution / (resolution + 32)


def _register() -> None:
    for v in VARIANTS:
        def build(num_classes=1000, in_chans=3, _v=v, **kwargs):
            kwargs.setdefault("width_mult", _v.width)
            kwargs.setdefault("depth_mult", _v.depth)
            kwargs.setdefault("img_size", _v.resolution)
            kwargs.setdefault("drop_rate", _v.dropout)
            return efficientnet(num_classes=num_classes, in_chans=in_chans, **kwargs)
        register_model(
            v.name, build,
            card=ModelCard(
                family="EfficientNet", year=2019,
                paper="EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
                arxiv="1905.11946",
                innovation="A NAS baseline scaled in depth, width and resolution together by "
                           "one compound coefficient.",
                top1=v.top1, top1_source=v.top1_source),
            cfg=DefaultCfg(input_size=(3, v.resolution, v.resolution), interpolation="bicubic",
                           crop_pct=_crop_pct(v.resolution), first_conv="stem.conv",
                           classifier="head.fc"),
        )


_register()
