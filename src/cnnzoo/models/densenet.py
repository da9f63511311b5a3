"""DenseNet (Huang, Liu, van der Maaten, Weinberger 2016, 'Densely Connected Convolutional Networks',
arXiv 1608.06993).

Inside a dense block every layer receives the concatenation of all earlier maps of the block and
adds ``growth_rate`` new ones (Section 3). DenseNet-BC layers are bottlenecks,
BN-ReLU-Conv(1x1, 4k)-BN-ReLU-Conv(3x3, k); transitions between blocks are BN-ReLU-Conv(1x1)-AvgPool
with compression 0.5. Table 1 gives the four ImageNet networks; DenseNet-161 (k=48, 96 stem
channels) is the wider one the authors released with their code.

``memory_efficient=True`` (Pleiss et al. 2017, 'Memory-Efficient Implementation of DenseNets',
arXiv 1707.06990) recomputes each layer's concatenation + BN + ReLU + 1x1 in the backward pass
instead of storing them, which turns the block's quadratic activation memory linear; outputs and
gradients are unchanged. Unlike torchvision's, the recomputation leaves BN running statistics
alone, so they too match ``memory_efficient=False`` after training.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.utils.checkpoint as cp
from torch import nn

from ..layers.classifier import ClassifierHead
from ..registry import DefaultCfg, ModelCard, register_model
from .base import ZooNet


@contextmanager
def _frozen_running_stats(bn: nn.BatchNorm2d):
    """The backward pass re-runs BN in train mode; momentum 0 keeps it from updating twice."""
    momentum, tracked = bn.momentum, bn.num_batches_tracked.clone()
    bn.momentum = 0.0
    try:
        yield
    finally:
        bn.momentum = momentum
        bn.num_batches_tracked.copy_(tracked)


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 (bottleneck to ``bn_size * growth_rate``) then BN-ReLU-3x3 (``growth_rate``)."""

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0,
                 memory_efficient: bool = False):
        super().__init__()
        mid = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, growth_rate, 3, padding=1, bias=False)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.memory_efficient = memory_efficient

    def bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act1(self.norm1(torch.cat(features, 1))))

    def _checkpoint_contexts(self):
        return nullcontext(), _frozen_running_stats(self.norm1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and any(f.requires_grad for f in features):
            x = cp.checkpoint(self.bottleneck, *features, use_reentrant=False,
                              context_fn=self._checkpoint_contexts)
        else:
            x = self.bottleneck(*features)
        return self.drop(self.conv2(self.act2(self.norm2(x))))


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; the output is the input concatenated with every layer's maps."""

    def __init__(self, num_layers: int, in_chs: int, growth_rate: int, **layer_kwargs):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"layer{i + 1}",
                            DenseLayer(in_chs + i * growth_rate, growth_rate, **layer_kwargs))
        self.out_channels = in_chs + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (compression) then 2x2 average pool: halves the grid between blocks."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__(OrderedDict(
            norm=nn.BatchNorm2d(in_chs),
            act=nn.ReLU(inplace=True),
            conv=nn.Conv2d(in_chs, out_chs, 1, bias=False),
            pool=nn.AvgPool2d(2, 2),
        ))


class DenseNet(ZooNet):
    """Stem (7x7/2 conv, 3x3/2 max pool), four dense blocks joined by transitions, final BN-ReLU."""

    def __init__(self, growth_rate: int = 32, block_config: tuple[int, ...] = (6, 12, 24, 16),
                 stem_width: int = 64, num_classes: int = 1000, in_chans: int = 3,
                 bn_size: int = 4, compression: float = 0.5, drop_rate: float = 0.0,
                 layer_drop_rate: float = 0.0, memory_efficient: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False),
            norm=nn.BatchNorm2d(stem_width),
            act=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(3, 2, padding=1),
        ))
        self.feature_info = [dict(num_chs=stem_width, reduction=2, module="stem.act")]
        stages, cin, reduction = [], stem_width, 4
        for i, depth in enumerate(block_config):
            stage = OrderedDict()
            if i > 0:
                out = int(cin * compression)
                stage["transition"] = Transition(cin, out)
                cin, reduction = out, reduction * 2
            stage["block"] = DenseBlock(depth, cin, growth_rate, bn_size=bn_size,
                                        drop_rate=layer_drop_rate,
                                        memory_efficient=memory_efficient)
            cin = stage["block"].out_channels
            stages.append(nn.Sequential(stage))
            if i < len(block_config) - 1:
                self.feature_info.append(dict(num_chs=cin, reduction=reduction,
                                              module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        # The last block's output is only used after this BN-ReLU, so that is the deepest map.
        self.final_norm = nn.Sequential(OrderedDict(norm=nn.BatchNorm2d(cin),
                                                    act=nn.ReLU(inplace=True)))
        self.feature_info.append(dict(num_chs=cin, reduction=reduction, module="final_norm"))
        self.num_features = cin
        self.head = ClassifierHead(cin, num_classes, drop_rate=drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    feature_chain = ("stem", "stages", "final_norm")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm(self.stages(self.stem(x)))


@dataclass(frozen=True)
class DenseNetVariant:
    name: str
    growth_rate: int
    block_config: tuple[int, int, int, int]
    stem_width: int
    top1: float | None
    top1_source: str


# Table 1 of the paper (k = 32, stem 2k = 64); DenseNet-161: k = 48, stem 96, from the authors' code.
VARIANTS = (
    DenseNetVariant("densenet121", 32, (6, 12, 24, 16), 64, 74.98,
                    "Table 3: single crop 224, ILSVRC-2012 val top-1 error 25.02% (10-crop 23.61%)"),
    DenseNetVariant("densenet169", 32, (6, 12, 32, 32), 64, 76.20,
                    "Table 3: single crop 224, val top-1 error 23.80% (10-crop 22.08%)"),
    DenseNetVariant("densenet201", 32, (6, 12, 48, 32), 64, 77.42,
                    "Table 3: single crop 224, val top-1 error 22.58% (10-crop 21.46%)"),
    DenseNetVariant("densenet161", 48, (6, 12, 36, 24), 96, None,
                    "not in the paper (Table 3 has 121/169/201/264); the authors' README gives "
                    "22.2% top-1 error, single crop 224"),
)


def _register() -> None:
    card = dict(family="DenseNet", year=2016, paper="Densely Connected Convolutional Networks",
                arxiv="1608.06993",
                innovation="Each layer takes the concatenated maps of all earlier layers in its block.")
    for v in VARIANTS:
        def build(num_classes=1000, in_chans=3, _v=v, **kwargs):
            return DenseNet(_v.growth_rate, _v.block_config, _v.stem_width,
                            num_classes=num_classes, in_chans=in_chans, **kwargs)
        register_model(v.name, build,
                       card=ModelCard(**card, top1=v.top1, top1_source=v.top1_source),
                       cfg=DefaultCfg(first_conv="stem.conv", classifier="head.fc"))


_register()
