"""How torchvision's and timm's state dicts name our tensors: key-rename tables, one per layout.

A *layout* is the naming scheme of one source family (torchvision's ResNet: ``layer1.0.bn2``;
ours: ``stages.0.blocks.0.conv2.bn``). It is a tuple of rules, tried in order on every source key;
the first that matches the start of the key rewrites that part and keeps the rest (a layout of
several passes, a tuple of such tuples, applies them one after the other):

- ``Rename(pattern, template)``: a regular expression on the key's start and the text that
  replaces it. Named groups fill ``{name}`` in the template; ``{name-1}`` and ``{name+1}``
  shift a number (torchvision counts ``layer1..4``, we count ``stages.0..3``). ``template=None``
  drops the key; an ``optional=True`` rule applies only where our model has the target, else the
  next rules are tried (an auxiliary classifier the user did not ask for is then dropped).
- ``InOrder(source, ours)``: for flat ``nn.Sequential`` stacks whose indices depend on the
  variant (VGG's ``features.0, 1, 3, 4, 7...``): the source modules matching ``source`` are
  paired, in order, with our modules matching ``ours``. Shapes are checked on load, so a
  misaligned pairing fails loudly.

A tensor stored as a convolution where we hold a dense layer (timm's VGG) is reshaped on the way.
``PEERS`` says which registered model has which peer in which source, under which layout. The
tests build every peer with random weights and check that ours computes the same function, so an
entry here is a promise that is checked, not a hope.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

@dataclass(frozen=True)
class Rename:
    pattern: str
    template: str | None
    optional: bool = False  # applies only where our model has the target; else the next rule


@dataclass(frozen=True)
class InOrder:
    source: str
    ours: str


Rule = Rename | InOrder

# torchvision and timm name ResNet, ResNeXt and Wide ResNet alike (timm kept torchvision's names);
# timm's SE-ResNets add `se` in each block.
_RESNET_BODY = (
    Rename(r"layer(?P<s>\d)\.(?P<b>\d+)\.conv(?P<n>\d)\.", "stages.{s-1}.blocks.{b}.conv{n}.conv."),
    Rename(r"layer(?P<s>\d)\.(?P<b>\d+)\.bn(?P<n>\d)\.", "stages.{s-1}.blocks.{b}.conv{n}.bn."),
    Rename(r"layer(?P<s>\d)\.(?P<b>\d+)\.downsample\.0\.",
           "stages.{s-1}.blocks.{b}.downsample.conv."),
    Rename(r"layer(?P<s>\d)\.(?P<b>\d+)\.downsample\.1\.",
           "stages.{s-1}.blocks.{b}.downsample.bn."),
    Rename(r"layer(?P<s>\d)\.(?P<b>\d+)\.se\.", "stages.{s-1}.blocks.{b}.attn."),
    Rename(r"fc\.", "head.fc."),
)
_RESNET = (Rename(r"conv1\.", "stem.conv."), Rename(r"bn1\.", "stem.bn."), *_RESNET_BODY)
# timm's 'legacy_senet154' is the SENet authors' Caffe network (its stem max-pools with
# ceil_mode, as ours does); timm's newer 'senet154' pools with padding and computes another function.
_LEGACY_SENET = (
    Rename(r"layer0\.conv(?P<n>[123])\.", "stem.conv{n}.conv."),
    Rename(r"layer0\.bn(?P<n>[123])\.", "stem.conv{n}.bn."),
    Rename(r"layer(?P<s>\d)\.(?P<b>\d+)\.se_module\.", "stages.{s-1}.blocks.{b}.attn."),
    Rename(r"last_linear\.", "head.fc."),
    *_RESNET_BODY,
)

# VGG's convolutions (and their BNs) are numbered through one Sequential, pools included.
_VGG_FEATURES = InOrder(r"features\.\d+\.", r"stages\.\d+\.conv\d+\.(?:conv|bn)\.")

# GoogLeNet: torchvision numbers the four branches; we name them by their widest kernel.
_GOOGLENET = (
    Rename(r"conv(?P<n>[123])\.", "stem.conv{n}."),
    Rename(r"inception(?P<b>\d[a-e])\.branch1\.", "blocks.inception_{b}.branch1x1."),
    Rename(r"inception(?P<b>\d[a-e])\.branch2\.", "blocks.inception_{b}.branch3x3."),
    Rename(r"inception(?P<b>\d[a-e])\.branch3\.", "blocks.inception_{b}.branch5x5."),
    Rename(r"inception(?P<b>\d[a-e])\.branch4\.", "blocks.inception_{b}.branch_pool."),
    Rename(r"aux1\.conv\.", "aux_heads.inception_4a.convs.0.", optional=True),
    Rename(r"aux1\.fc1\.", "aux_heads.inception_4a.fc1.", optional=True),
    Rename(r"aux1\.fc2\.", "aux_heads.inception_4a.fc.", optional=True),
    Rename(r"aux2\.conv\.", "aux_heads.inception_4d.convs.0.", optional=True),
    Rename(r"aux2\.fc1\.", "aux_heads.inception_4d.fc1.", optional=True),
    Rename(r"aux2\.fc2\.", "aux_heads.inception_4d.fc.", optional=True),
    Rename(r"aux[12]\.", None),
    Rename(r"fc\.", "head.fc."),
)

# Inception v3 (torchvision, and timm's port of it): 'Mixed_7b.branch3x3dbl_3a' is our
# 'blocks.mixed_7b.branch3x3dbl.2.a' (its n-th conv counted from 1, the a/b halves of a split).
_INCEPTION_V3 = (
    Rename(r"Conv2d_(?P<n>\d[ab])_\d+x\d+\.", "stem.conv{n}."),
    Rename(r"Mixed_(?P<b>\d[a-e])\.branch(?P<k>[0-9a-z]+)_(?P<i>\d)(?P<h>[ab])\.",
           "blocks.mixed_{b}.branch{k}.{i-1}.{h}."),
    Rename(r"Mixed_(?P<b>\d[a-e])\.branch(?P<k>[0-9a-z]+)_(?P<i>\d)\.",
           "blocks.mixed_{b}.branch{k}.{i-1}."),
    Rename(r"Mixed_(?P<b>\d[a-e])\.branch_pool\.", "blocks.mixed_{b}.branch_pool.1."),
    Rename(r"Mixed_(?P<b>\d[a-e])\.", "blocks.mixed_{b}."),
    Rename(r"AuxLogits\.conv(?P<i>[01])\.", "aux_heads.mixed_6e.convs.{i}.", optional=True),
    Rename(r"AuxLogits\.fc\.", "aux_heads.mixed_6e.fc.", optional=True),
    Rename(r"AuxLogits\.", None),
    Rename(r"fc\.", "head.fc."),
)

# DenseNet: torchvision's files predate PyTorch 0.4 and spell 'norm1' as 'norm.1'; both load.
_DENSENET = (
    Rename(r"features\.conv0\.", "stem.conv."),
    Rename(r"features\.norm0\.", "stem.norm."),
    Rename(r"features\.denseblock(?P<s>\d)\.denselayer(?P<l>\d+)\.(?P<k>norm|conv)\.?(?P<i>[12])\.",
           "stages.{s-1}.block.layer{l}.{k}{i}."),
    Rename(r"features\.transition(?P<t>\d)\.", "stages.{t}.transition."),
    Rename(r"features\.norm5\.", "final_norm.norm."),
    Rename(r"classifier\.", "head.fc."),
)

# timm's Inception v4 is one flat Sequential; ours names the stem's and the stages' blocks.
# Second pass: its split convolutions 'branch1_1a' are our 'branch1.1.a'.
_INCEPTION_V4 = (
    (InOrder(r"features\.\d+\.",
             r"stem\.[^.]+\.|stages\.inception_[abc]\.\d+\.|stages\.reduction_[ab]\."),
     Rename(r"last_linear\.", "head.fc.")),
    (Rename(r"(?P<p>.+\.branch\d)_(?P<i>\d)(?P<h>[ab])\.", "{p}.{i}.{h}."),
     Rename(r"(?P<p>.+\.branch\d)_(?P<i>\d)\.", "{p}.{i}.")),
)

# timm's Inception-ResNet-v2: 'repeat', 'repeat_1', 'repeat_2' are the 10 x block35,
# 20 x block17 and the first 9 block8 (the 10th, without ReLU, stands alone as 'block8').
_INCEPTION_RESNET_V2 = (
    (Rename(r"conv2d_7b\.", "stages.conv7b."),
     Rename(r"conv2d_(?P<n>\d[ab])\.", "stem.conv{n}."),
     Rename(r"mixed_5b\.", "stem.mixed_5b."),
     Rename(r"mixed_(?P<n>6a|7a)\.", "stages.mixed_{n}."),
     Rename(r"repeat\.(?P<i>\d+)\.", "stages.block35.{i}."),
     Rename(r"repeat_1\.(?P<i>\d+)\.", "stages.block17.{i}."),
     Rename(r"repeat_2\.(?P<i>\d+)\.", "stages.block8.{i}."),
     Rename(r"block8\.", "stages.block8.9."),
     Rename(r"classif\.", "head.fc.")),
    (Rename(r"(?P<p>stages\.block(?:35|17|8)\.\d+\.)branch", "{p}towers.branch"),
     Rename(r"(?P<p>stages\.block(?:35|17|8)\.\d+\.)conv2d\.", "{p}up.")),
)

# MobileNet V2/V3 and EfficientNet V1/V2 in torchvision number the layers inside each block by
# position ('block.1' is the depthwise conv, or the SE when there is no expansion), so their
# convolutions, norms and SE layers are paired with ours in network order, module by module.
_TV_MBCONV_BODY = InOrder(r"features\.(?:\w+\.)+", r"(?:stem|stages|conv_head)\.(?:\w+\.)+")

# timm's MobileNets and EfficientNets name layers by role. Its first stage holds depthwise-
# separable blocks (conv_dw, bn1, se, conv_pw, bn2: the 'pw' there is our projection 'pwl');
# later stages hold inverted residuals (conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3).
_B = r"blocks\.(?P<s>\d+)\.(?P<b>\d+)\."
_TIMM_MBCONV_BODY = (
    Rename(r"conv_stem\.", "stem.conv."),
    Rename(r"bn1\.", "stem.bn."),
    Rename(r"blocks\.0\.(?P<b>\d+)\.conv_dw\.", "stages.0.blocks.{b}.conv_dw.conv."),
    Rename(r"blocks\.0\.(?P<b>\d+)\.bn1\.", "stages.0.blocks.{b}.conv_dw.bn."),
    Rename(r"blocks\.0\.(?P<b>\d+)\.conv_pw\.", "stages.0.blocks.{b}.conv_pwl.conv."),
    Rename(r"blocks\.0\.(?P<b>\d+)\.bn2\.", "stages.0.blocks.{b}.conv_pwl.bn."),
    Rename(_B + r"conv_pw\.", "stages.{s}.blocks.{b}.conv_pw.conv."),
    Rename(_B + r"bn1\.", "stages.{s}.blocks.{b}.conv_pw.bn.", optional=True),
    Rename(_B + r"conv_dw\.", "stages.{s}.blocks.{b}.conv_dw.conv."),
    Rename(_B + r"bn2\.", "stages.{s}.blocks.{b}.conv_dw.bn."),
    Rename(_B + r"conv_pwl\.", "stages.{s}.blocks.{b}.conv_pwl.conv."),
    Rename(_B + r"bn3\.", "stages.{s}.blocks.{b}.conv_pwl.bn."),
    Rename(_B + r"se\.conv_reduce\.", "stages.{s}.blocks.{b}.se.fc1."),
    Rename(_B + r"se\.conv_expand\.", "stages.{s}.blocks.{b}.se.fc2."),
)
_TIMM_MBCONV = (
    *_TIMM_MBCONV_BODY,
    Rename(r"conv_head\.", "conv_head.conv."),
    Rename(r"bn2\.", "conv_head.bn."),
    Rename(r"classifier\.", "head.fc."),
)
# timm's MobileNetV3 ends its blocks with the 1x1 conv + BN we call conv_head, and its own
# 'conv_head' is the biased 1280-wide layer after pooling, our head.fc1.
_TIMM_MOBILENET_V3 = (
    *_TIMM_MBCONV_BODY,
    Rename(r"blocks\.\d+\.0\.conv\.", "conv_head.conv."),
    Rename(r"blocks\.\d+\.0\.bn1\.", "conv_head.bn."),
    Rename(r"conv_head\.", "head.fc1."),
    Rename(r"classifier\.", "head.fc."),
)
# timm's MobileNet V1: every block depthwise-separable, and its pointwise conv is our conv_pw.
_TIMM_MOBILENET_V1 = (
    Rename(r"conv_stem\.", "stem.conv."),
    Rename(r"bn1\.", "stem.bn."),
    Rename(_B + r"conv_dw\.", "stages.{s}.blocks.{b}.conv_dw.conv."),
    Rename(_B + r"bn1\.", "stages.{s}.blocks.{b}.conv_dw.bn."),
    Rename(_B + r"conv_pw\.", "stages.{s}.blocks.{b}.conv_pw.conv."),
    Rename(_B + r"bn2\.", "stages.{s}.blocks.{b}.conv_pw.bn."),
    Rename(r"classifier\.", "head.fc."),
)

# One pass (a tuple of rules) or several (a tuple of tuples), applied one after the other.
LAYOUTS: dict[str, tuple] = {
    "resnet": _RESNET,
    "timm_legacy_senet": _LEGACY_SENET,
    "tv_alexnet": (
        InOrder(r"features\.\d+\.", r"features\.conv\d\.conv\."),
        Rename(r"classifier\.1\.", "head.fc1."),
        Rename(r"classifier\.4\.", "head.fc2."),
        Rename(r"classifier\.6\.", "head.fc."),
    ),
    "tv_vgg": (
        _VGG_FEATURES,
        Rename(r"classifier\.0\.", "head.fc1."),
        Rename(r"classifier\.3\.", "head.fc2."),
        Rename(r"classifier\.6\.", "head.fc."),
    ),
    # timm's VGG holds the two hidden dense layers as 7x7 and 1x1 convolutions (reshaped on load).
    "timm_vgg": (
        _VGG_FEATURES,
        Rename(r"pre_logits\.fc(?P<n>[12])\.", "head.fc{n}."),
    ),
    "tv_mbconv": (_TV_MBCONV_BODY, Rename(r"classifier\.1\.", "head.fc.")),
    "tv_mobilenet_v3": (_TV_MBCONV_BODY, Rename(r"classifier\.0\.", "head.fc1."),
                        Rename(r"classifier\.3\.", "head.fc.")),
    "timm_mbconv": _TIMM_MBCONV,
    "timm_mobilenet_v1": _TIMM_MOBILENET_V1,
    "timm_mobilenet_v3": _TIMM_MOBILENET_V3,
    "googlenet": _GOOGLENET,
    "inception_v3": _INCEPTION_V3,
    "densenet": _DENSENET,
    "timm_inception_v4": _INCEPTION_V4,
    "timm_inception_resnet_v2": _INCEPTION_RESNET_V2,
}


def _passes(layout: str) -> tuple[tuple[Rule, ...], ...]:
    rules = LAYOUTS[layout]
    return rules if isinstance(rules[0], tuple) else (rules,)


@dataclass(frozen=True)
class Peer:
    source: str  # 'torchvision' or 'timm'
    ours: str
    name: str  # the peer's own model name
    layout: str
    # BatchNorm's epsilon the peer's weights were trained with, where it differs from ours: it is
    # no tensor, so it travels with the weights as data and is set when they are loaded.
    bn_eps: float | None = None


def _peers(source: str, layout: str, names: Mapping[str, str] | Iterable[str],
           bn_eps: float | None = None) -> list[Peer]:
    pairs = names.items() if isinstance(names, Mapping) else ((n, n) for n in names)
    return [Peer(source, ours, theirs, layout, bn_eps) for ours, theirs in pairs]


_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
            "resnext101_32x8d", "wide_resnet50_2")
_VGGS = tuple(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn"))
_EFFICIENTNETS = tuple(f"efficientnet_b{i}" for i in range(8)) + tuple(
    f"efficientnet_v2_{s}" for s in "sml")
_DENSENETS = ("densenet121", "densenet161", "densenet169", "densenet201")
# timm's 'legacy_se*' ports of the SENet authors' Caffe models are left out: their stem pools
# with ceil_mode, so they compute another function than the paper's network at most sizes.
_SE_RESNETS = ("seresnet50", "seresnet101", "seresnext50_32x4d")

PEERS: tuple[Peer, ...] = tuple(
    _peers("torchvision", "tv_alexnet", ["alexnet"])
    + _peers("torchvision", "tv_vgg", _VGGS)
    + _peers("timm", "timm_vgg", _VGGS)
    + _peers("torchvision", "googlenet", ["googlenet"])
    + _peers("torchvision", "inception_v3", ["inception_v3"])
    + _peers("timm", "inception_v3", ["inception_v3"])
    + _peers("torchvision", "resnet", _RESNETS)
    + _peers("timm", "resnet", _RESNETS + _SE_RESNETS)
    + _peers("timm", "timm_legacy_senet", {"senet154": "legacy_senet154"})
    + _peers("torchvision", "densenet", _DENSENETS)
    + _peers("timm", "densenet", _DENSENETS)
    + _peers("torchvision", "tv_mbconv", ["mobilenet_v2", *_EFFICIENTNETS[5:]])
    # torchvision trained B0-B4 itself with PyTorch's BN epsilon; B5-B7 and V2 are TF's 1e-3.
    + _peers("torchvision", "tv_mbconv", _EFFICIENTNETS[:5], bn_eps=1e-5)
    + _peers("torchvision", "tv_mobilenet_v3", ["mobilenet_v3_large", "mobilenet_v3_small"],
             bn_eps=1e-3)
    + _peers("timm", "timm_mbconv", {"mobilenet_v2": "mobilenetv2_100"})
    + _peers("timm", "timm_mbconv", _EFFICIENTNETS[:8], bn_eps=1e-5)
    + _peers("timm", "timm_mobilenet_v1", {"mobilenet_v1": "mobilenetv1_100"})
    + _peers("timm", "timm_mobilenet_v3", {"mobilenet_v3_large": "mobilenetv3_large_100",
                                           "mobilenet_v3_small": "mobilenetv3_small_100"},
             bn_eps=1e-5)
    + _peers("timm", "timm_inception_v4", ["inception_v4"])
    + _peers("timm", "timm_inception_resnet_v2", ["inception_resnet_v2"])
)


def peers_of(name: str) -> dict[str, Peer]:
    """The peers of one registered model, by source."""
    return {p.source: p for p in PEERS if p.ours == name}


_SHIFT = re.compile(r"\{(\w+)([+-]\d+)?\}")


def _fill(template: str, groups: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        value = groups[m.group(1)]
        return str(int(value) + int(m.group(2))) if m.group(2) else value
    return _SHIFT.sub(sub, template)


def _prefixes(keys: Iterable[str], pattern: str) -> list[str]:
    found = dict.fromkeys(m.group(0) for k in keys if (m := re.match(pattern, k)))
    return list(found)


def _natural(key: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key))


def rename_keys(state: Mapping[str, torch.Tensor], layout: str,
                own: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with its keys in our names (keys no rule matches are kept as they are).

    ``own`` is our model's state dict: ``InOrder`` rules pair against its order, and a tensor
    stored as a 1x1 or kxk convolution where we hold a dense layer (or back) is reshaped.
    """
    for rules in _passes(layout):
        orders: dict[str, str] = {}
        for rule in rules:
            if isinstance(rule, InOrder):
                src = sorted(_prefixes(state, rule.source), key=_natural)
                dst = _prefixes(own, rule.ours)
                if len(src) == len(dst):
                    orders.update(zip(src, dst))
        renamed = {}
        for key, value in state.items():
            new = _rename(key, rules, orders, own)
            if new is not None:
                renamed[new] = value
        state = renamed
    out: dict[str, torch.Tensor] = {}
    for new, value in state.items():
        target = own.get(new)
        if (target is not None and target.shape != value.shape and target.numel() == value.numel()
                and target.dim() >= 2 and value.dim() >= 2 and target.shape[0] == value.shape[0]):
            value = value.reshape(target.shape)
        out[new] = value
    return out


def _rename(key: str, rules: tuple[Rule, ...], orders: dict[str, str],
            own: Mapping[str, torch.Tensor]) -> str | None:
    for rule in rules:
        if isinstance(rule, InOrder):
            m = re.match(rule.source, key)
            if m and m.group(0) in orders:
                return orders[m.group(0)] + key[m.end():]
            continue
        m = re.match(rule.pattern, key)
        if m:
            if rule.template is None:
                return None
            new = _fill(rule.template, m.groupdict()) + key[m.end():]
            if rule.optional and new not in own:
                continue
            return new
    return key
