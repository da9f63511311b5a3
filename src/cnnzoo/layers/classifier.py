"""Classifier heads: global pooling + linear, or the fixed-size MLP of the pre-2014 networks."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx, nn

from ..errors import InputSizeError
from .activations import ActLike, create_act


def _make_fc(in_features: int, num_classes: int) -> nn.Module:
    # num_classes=0 gives a headless model whose output is the pooled features, as timm does.
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


def _check_map(x: torch.Tensor, expected: tuple[int, ...], hint: str) -> None:
    """A wrong image size fails here in one line, not as a matmul shape error."""
    if tuple(x.shape[1:]) != expected:
        raise InputSizeError(
            f"the classifier expects a {'x'.join(map(str, expected))} feature map but got "
            f"{'x'.join(map(str, x.shape[1:]))}. {hint}".strip())


# One call in an fx graph: the check reads a shape, which symbolic tracing cannot.
fx.wrap("_check_map")


class ClassifierHead(nn.Module):
    """Global pool -> flatten -> dropout -> fc (``pool_type`` 'avg', 'max' or '' for none)."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "avg",
                 drop_rate: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.pool_type = pool_type
        if pool_type == "avg":
            self.global_pool: nn.Module = nn.AdaptiveAvgPool2d(1)
        elif pool_type == "max":
            self.global_pool = nn.AdaptiveMaxPool2d(1)
        elif pool_type == "":
            self.global_pool = nn.Identity()
        else:
            raise ValueError(f"unknown pool_type {pool_type!r}")
        self.flatten = nn.Flatten(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = _make_fc(in_features, num_classes)

    def reset(self, num_classes: int) -> None:
        self.fc = _make_fc(self.in_features, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.flatten(self.global_pool(x)))
        return x if pre_logits else self.fc(x)


class MLPHead(nn.Module):
    """The fully-connected classifier of LeNet, AlexNet and VGG.

    ``pool_size`` adapts any feature map to the size the first dense layer was built for (what
    torchvision does for AlexNet/VGG); ``pool_size=None`` keeps the paper's fixed input size and
    ``expected`` is checked so a wrong image size fails with ``size_hint`` instead of a matmul
    shape error. ``drop_first`` puts dropout before each hidden dense layer (torchvision's
    AlexNet) instead of after its activation (the AlexNet paper and VGG).
    """

    def __init__(self, in_chs: int, hidden: Sequence[int], num_classes: int,
                 pool_size: tuple[int, int] | None = None,
                 expected: tuple[int, int, int] | None = None, size_hint: str = "",
                 act_layer: ActLike = "relu", drop_rate: float = 0.0, drop_first: bool = False):
        super().__init__()
        if pool_size is None and expected is None:
            raise ValueError("MLPHead needs pool_size or the expected feature size")
        self.pool = nn.AdaptiveAvgPool2d(pool_size) if pool_size is not None else nn.Identity()
        self.expected = None if pool_size is not None else tuple(expected)
        self.size_hint = size_hint
        self.flatten = nn.Flatten(1)
        if pool_size is not None:
            flat = in_chs * pool_size[0] * pool_size[1]
        else:
            flat = expected[0] * expected[1] * expected[2]
        for i, width in enumerate(hidden, start=1):
            if drop_first and drop_rate > 0:
                self.add_module(f"drop{i}", nn.Dropout(drop_rate))
            self.add_module(f"fc{i}", nn.Linear(flat, width))
            self.add_module(f"act{i}", create_act(act_layer))
            if not drop_first and drop_rate > 0:
                self.add_module(f"drop{i}", nn.Dropout(drop_rate))
            flat = width
        self.num_hidden = len(hidden)
        self.in_features = flat
        self.fc = _make_fc(flat, num_classes)

    def reset(self, num_classes: int) -> None:
        self.fc = _make_fc(self.in_features, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.expected is not None:
            _check_map(x, self.expected, self.size_hint)
        x = self.flatten(self.pool(x))
        for name, module in self.named_children():
            if name in ("pool", "flatten", "fc"):
                continue
            x = module(x)
        return x if pre_logits else self.fc(x)
