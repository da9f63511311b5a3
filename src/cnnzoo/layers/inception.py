"""The Inception idea as reusable blocks: parallel towers whose outputs are concatenated.

- :class:`Towers` is the general form (Szegedy et al. 2014, 'Going Deeper with Convolutions',
  arXiv 1409.4842, Figure 2): any set of named branches that see the same input and are joined
  along channels. Inception v3/v4 and Inception-ResNet build every module from it, the n x 1 /
  1 x n splits of Inception v3's last modules included (a tower whose last step is itself Towers).
- :class:`InceptionModule` is the classic module of GoogLeNet (Table 1 columns: #1x1,
  #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), with the 5x5 tower as a 5x5, as the single 3x3
  of torchvision's GoogLeNet, or factorised into two 3x3 as BN-Inception does.
- :class:`AuxClassifier` and :class:`InceptionOutputs` are the auxiliary heads and what a model
  with them returns in training mode.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import fx, nn

from ..errors import InputSizeError
from .attention import AttnLike, create_attn
from .conv_norm_act import ConvNormAct
from .init import restore_block_init


class BasicConv(ConvNormAct):
    """Conv -> BN -> ReLU with BN eps 1e-3: the TF-trained Inception networks (and the torchvision
    and timm ports of them) normalise with eps 0.001, not PyTorch's 1e-5."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size=1, stride: int = 1, padding=None,
                 **kwargs):
        kwargs.setdefault("bn_eps", 1e-3)
        super().__init__(in_chs, out_chs, kernel_size, stride=stride, padding=padding, **kwargs)


def out_channels(module: nn.Module, in_chs: int) -> int:
    """Channels a tower produces: its last layer's, or ``in_chs`` for a pooling pass-through."""
    if hasattr(module, "out_channels"):
        return module.out_channels
    if isinstance(module, nn.Sequential):
        for child in reversed(list(module)):
            if hasattr(child, "out_channels") or isinstance(child, nn.Sequential):
                return out_channels(child, in_chs)
    return in_chs


class Towers(nn.Module):
    """Named branches on one input, concatenated along channels; optional attention on the result.

    The SE paper (Hu et al., arXiv 1709.01507, Fig. 2) places SE on an Inception module's output,
    which is where ``attn`` sits.
    """

    def __init__(self, in_chs: int, branches: Mapping[str, nn.Module], attn: AttnLike = None):
        super().__init__()
        self.branch_names = list(branches)
        for name, branch in branches.items():
            self.add_module(name, branch)
        self.in_channels = in_chs
        self.out_channels = sum(out_channels(b, in_chs) for b in branches.values())
        self.attn = create_attn(attn, self.out_channels) or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([getattr(self, name)(x) for name in self.branch_names], 1)
        return self.attn(out)


def seq(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


class InceptionModule(Towers):
    """The Inception module of GoogLeNet: 1x1, 1x1 -> 3x3, 1x1 -> 5x5 and pool -> 1x1 towers.

    ``five`` picks the third tower: ``'5x5'`` as the GoogLeNet paper, ``'3x3'`` as torchvision's
    GoogLeNet (its pretrained weights have a 3x3 there), ``'double_3x3'`` as BN-Inception (two
    stacked 3x3 see the same 5x5 window with fewer weights). With ``stride=2`` it is BN-Inception's
    grid reduction: the last conv of each tower strides, ``c1x1=0`` drops the 1x1 tower and
    ``pool_proj=0`` passes the pooled input straight through.
    """

    def __init__(self, in_chs: int, c1x1: int, c3x3_red: int, c3x3: int, c5x5_red: int,
                 c5x5: int, pool_proj: int, *, five: str = "5x5", pool: str = "max",
                 stride: int = 1, attn: AttnLike = None, conv=BasicConv):
        branches: dict[str, nn.Module] = OrderedDict()
        if c1x1:
            branches["branch1x1"] = conv(in_chs, c1x1, 1)
        branches["branch3x3"] = seq(conv(in_chs, c3x3_red, 1), conv(c3x3_red, c3x3, 3, stride))
        if five == "5x5":
            branches["branch5x5"] = seq(conv(in_chs, c5x5_red, 1), conv(c5x5_red, c5x5, 5, stride))
        elif five == "3x3":
            branches["branch5x5"] = seq(conv(in_chs, c5x5_red, 1), conv(c5x5_red, c5x5, 3, stride))
        elif five == "double_3x3":
            branches["branch3x3dbl"] = seq(conv(in_chs, c5x5_red, 1), conv(c5x5_red, c5x5, 3),
                                           conv(c5x5, c5x5, 3, stride))
        else:
            raise ValueError(f"five must be '5x5', '3x3' or 'double_3x3', got {five!r}")
        if pool == "max":
            # ceil_mode as torchvision's GoogLeNet; with stride 1 and padding 1 it changes nothing.
            pooling: nn.Module = nn.MaxPool2d(3, stride, padding=1, ceil_mode=stride == 1)
        elif pool == "avg":
            pooling = nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)
        else:
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        branches["branch_pool"] = seq(pooling, conv(in_chs, pool_proj, 1)) if pool_proj else pooling
        super().__init__(in_chs, branches, attn=attn)


def _check_grid(x: torch.Tensor, min_grid: int) -> None:
    if min(x.shape[-2:]) < min_grid:
        raise InputSizeError(
            f"the auxiliary classifier needs at least a {min_grid}x{min_grid} map after its "
            f"pooling but got {x.shape[-2]}x{x.shape[-1]}: use the model's default input size, "
            f"or aux_logits=False")


# One call in an fx graph: the check reads a shape, which symbolic tracing cannot.
fx.wrap("_check_grid")


class AuxClassifier(nn.Module):
    """An auxiliary classifier on an intermediate map (GoogLeNet Section 5, Inception v3 Section 4).

    ``pool`` shrinks the map, ``convs`` is a list of ``(out_chs, kernel)``, then either a hidden
    dense layer (GoogLeNet: 1024 units, dropout 0.7) on the flattened map, or a global average
    pool (Inception v3) before the final linear layer.
    """

    def __init__(self, in_chs: int, num_classes: int, pool: nn.Module,
                 convs: list[tuple[int, int]], flat_size: int = 1, hidden: int | None = None,
                 drop_rate: float = 0.0, conv=BasicConv):
        super().__init__()
        self.pool = pool
        layers, cin = [], in_chs
        for out_chs, k in convs:
            layers.append(conv(cin, out_chs, k, padding=0))
            cin = out_chs
        self.convs = nn.Sequential(*layers)
        self.min_grid = max((k for _, k in convs), default=1)
        self.global_pool = nn.AdaptiveAvgPool2d(1) if flat_size == 1 else nn.Identity()
        self.flatten = nn.Flatten(1)
        features = cin * flat_size
        if hidden:
            self.fc1 = nn.Linear(features, hidden)
            self.act = nn.ReLU(inplace=True)
            features = hidden
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.in_features = features
        self.fc = nn.Linear(features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        _check_grid(x, self.min_grid)
        x = self.flatten(self.global_pool(self.convs(x)))
        if hasattr(self, "fc1"):
            x = self.act(self.fc1(x))
        return self.fc(self.drop(x))


class InceptionOutputs(NamedTuple):
    """What a model with auxiliary heads returns in training mode.

    ``aux_logits`` runs shallow to deep, one per head, matching ``model.aux_loss_weights``; a
    training loop adds ``sum(w * loss(a) for w, a in zip(model.aux_loss_weights, aux_logits))``.
    """

    logits: torch.Tensor
    aux_logits: tuple[torch.Tensor, ...]


def run_with_aux(blocks: nn.Sequential, x: torch.Tensor,
                 aux_heads: Mapping[str, nn.Module]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``blocks`` in order; the output of each block named in ``aux_heads`` feeds its head."""
    aux = []
    for name, block in blocks.named_children():
        x = block(x)
        if name in aux_heads:
            aux.append(aux_heads[name](x))
    return x, aux


class AuxHeadsMixin:
    """Training-mode aux outputs for a ZooNet made of ``stem``, ``blocks`` and ``aux_heads``.

    ``aux_heads`` is a ModuleDict keyed by the name of the block each head reads, so the head's
    position is visible in its name (``aux_heads.inception_4a.fc``). In eval mode, or with no
    heads, ``forward`` is the plain ``forward_head(forward_features(x))`` of the contract.
    """

    aux_heads: nn.ModuleDict
    aux_loss_weights: tuple[float, ...]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor):
        if self.training and len(self.aux_heads):
            x, aux = run_with_aux(self.blocks, self.stem(x), self.aux_heads)
            return InceptionOutputs(self.forward_head(x), tuple(aux))
        return super().forward(x)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        for head in self.aux_heads.values():
            head.reset(num_classes)


def init_weights(model: nn.Module) -> None:
    """He init for convs (each is followed by BN and ReLU), small normal for linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.01, a=-0.02, b=0.02)
            nn.init.zeros_(m.bias)
    restore_block_init(model)  # attn='nl' etc. must keep their identity start


def init_trunc_normal(model: nn.Module, std: float) -> None:
    """torchvision's GoogLeNet (std 0.01) and Inception3 (std 0.1, as timm's InceptionV3): every
    conv and dense weight truncated normal at +-2, i.e. barely truncated; biases keep torch's
    default; BN identity. Callers set the per-layer exceptions afterwards."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2.0, b=2.0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    restore_block_init(model)


def init_tf_slim(model: nn.Module, he_convs: bool) -> None:
    """The initialisation of the authors' TF-slim code (models/research/slim/nets).

    ``he_convs``: inception_utils.inception_arg_scope (Inception-v4) gives convs
    variance_scaling_initializer(), He fan-in as a normal of std sqrt(1.3 * 2 / fan_in) redrawn
    beyond 2 std (the 1.3 undoes the truncation's shrinkage). Otherwise (Inception-ResNet-v2's own
    arg scope sets no initializer) convs keep slim's default, Xavier uniform. Dense layers are
    always slim.fully_connected's default, Xavier uniform; biases zero; BN identity (slim's BN
    has no scale).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and he_convs:
            fan_in = m.weight[0].numel()
            std = (1.3 * 2.0 / fan_in) ** 0.5
            nn.init.trunc_normal_(m.weight, std=std, a=-2.0 * std, b=2.0 * std)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)
    restore_block_init(model)
