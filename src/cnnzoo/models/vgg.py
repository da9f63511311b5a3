"""VGG (Simonyan & Zisserman 2014, 'Very Deep Convolutional Networks for Large-Scale Image
Recognition', arXiv 1409.1556).

Stacks of 3x3 convolutions (two 3x3 see what one 5x5 sees, with fewer weights and one more ReLU)
in five stages closed by 2x2 max-pooling, then three dense layers. The classifier keeps
torchvision's adaptive 7x7 pooling, which is exactly the paper's network at 224x224 and lets
the same weights run on other sizes, as the paper's own 'dense evaluation' (Section 3.2) does.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..layers.attention import AttnLike, create_attn
from ..layers.classifier import MLPHead
from ..layers.conv_norm_act import ConvNormAct
from ..registry import DefaultCfg, ModelCard, register_model
from ..layers.init import restore_block_init
from .base import ZooNet

# Table 1 of the paper: the widths of the 3x3 convolutions of each of the five stages.
# (Config C's 1x1 convolutions are not among the registered networks.)
VGG_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "E": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class VGG(ZooNet):
    def __init__(self, config: str = "D", num_classes: int = 1000, in_chans: int = 3,
                 batch_norm: bool = False, drop_rate: float = 0.5, attn: AttnLike = None):
        super().__init__()
        self.num_classes = num_classes
        stages = []
        cin = in_chans
        self.feature_info = []
        for i, widths in enumerate(VGG_CONFIGS[config]):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for j, width in enumerate(widths, start=1):
                # With BN the conv keeps its bias, as torchvision's vgg*_bn (weight compatibility).
                layers[f"conv{j}"] = ConvNormAct(cin, width, 3, padding=1, bias=True,
                                                 norm_layer=nn.BatchNorm2d if batch_norm else None)
                cin = width
            # ``attn``: VGG has no residual branch, so the block recalibrates each stage's output
            # before its pooling, as the SE paper does for non-residual networks (its Section 4:
            # the block follows a whole transformation). Absent unless asked for, so the plain
            # networks keep torchvision's weight names.
            block = create_attn(attn, cin)
            if block is not None:
                layers["attn"] = block
            layers["pool"] = nn.MaxPool2d(2, 2)
            stages.append(nn.Sequential(layers))
            self.feature_info.append(dict(num_chs=cin, reduction=2 ** (i + 1), module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = 4096
        self.head = MLPHead(cin, (4096, 4096), num_classes, pool_size=(7, 7), drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        # The paper initialised the deep configs from config A; random init as torchvision does
        # (Kaiming for ReLU convs, N(0, 0.01) for dense layers) trains them from scratch instead.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        restore_block_init(self)

    feature_chain = ("stages",)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


_PAPER = "Very Deep Convolutional Networks for Large-Scale Image Recognition"
# (name, config, layers, paper top-1 %, where): Table 3 of the paper, single-scale test,
# training scale S jittered in [256, 512], test scale Q = 384 (the configs' best single-scale row).
_VARIANTS = (
    ("vgg11", "A", 11, 70.4, "Table 3: config A, S=256, Q=256, top-1 error 29.6%"),
    ("vgg13", "B", 13, 71.3, "Table 3: config B, S=256, Q=256, top-1 error 28.7%"),
    ("vgg16", "D", 16, 74.4, "Table 3: config D, S=[256;512], Q=384, top-1 error 25.6%"),
    ("vgg19", "E", 19, 74.5, "Table 3: config E, S=[256;512], Q=384, top-1 error 25.5%"),
)


def _register() -> None:
    for name, config, depth, top1, where in _VARIANTS:
        for bn in (False, True):
            def build(num_classes=1000, in_chans=3, _config=config, _bn=bn, **kw):
                return VGG(_config, num_classes=num_classes, in_chans=in_chans, batch_norm=_bn, **kw)
            register_model(
                name + ("_bn" if bn else ""), build,
                card=ModelCard(
                    family="VGG", year=2014, paper=_PAPER, arxiv="1409.1556",
                    innovation=f"{depth} weight layers of small 3x3 convolutions"
                               + (" (+ batch norm, added after the paper)" if bn else "") + ".",
                    top1=None if bn else top1,
                    top1_source=("BN was not in the paper (added later, Ioffe & Szegedy 2015)"
                                 if bn else where)),
                cfg=DefaultCfg(first_conv="stages.0.conv1.conv", classifier="head.fc"),
            )


_register()
