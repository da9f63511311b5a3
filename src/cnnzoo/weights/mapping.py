"""How torchvision's and timm's state dicts name our tensors: key-rename tables, one per layout.

A *layout* is the naming scheme of one source family (torchvision's ResNet: ``layer1.0.bn2``;
ours: ``stages.0.blocks.0.conv2.bn``). It is a tuple of rules, tried in order on every source key;
the first that matches the start of the key rewrites that part and keeps the rest:

- ``Rename(pattern, template)``: a regular expression on the key's start and the text that
  replaces it. Named groups fill ``{name}`` in the template; ``{name-1}`` and ``{name+1}``
  shift a number (torchvision counts ``layer1..4``, we count ``stages.0..3``). ``template=None``
  drops the key (an auxiliary head we do not build).
- ``InOrder(source, ours)``: for flat ``nn.Sequential`` stacks whose indices depend on the
  variant (VGG's ``features.0, 1, 3, 4, 7...``): the source modules matching ``source`` are
  paired, in order, with our modules matching ``ours``.

``PEERS`` says which registered model has which peer in which source, under which layout. The
tests build every peer with random weights and check that ours computes the same function, so an
entry here is a promise that is checked, not a hope.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

SOURCES = ("torchvision", "timm")


@dataclass(frozen=True)
class Rename:
    pattern: str
    template: str | None


@dataclass(frozen=True)
class InOrder:
    source: str
    ours: str


Rule = Rename | InOrder

# torchvision and timm name ResNet, ResNeXt and Wide ResNet alike (timm kept torchvision's names).
_RESNET = (
    Rename(r"conv1\.", "stem.conv."),
    Rename(r"bn1\.", "stem.bn."),
    Rename(r"layer(?P<s>\d)\.(?P<b>\d+)\.conv(?P<n>\d)\.", "stages.{s-1}.blocks.{b}.conv{n}.conv."),
    Rename(r"layer(?P<s>\d)\.(?P<b>\d+)\.bn(?P<n>\d)\.", "stages.{s-1}.blocks.{b}.conv{n}.bn."),
    Rename(r"layer(?P<s>\d)\.(?P<b>\d+)\.downsample\.0\.",
           "stages.{s-1}.blocks.{b}.downsample.conv."),
    Rename(r"layer(?P<s>\d)\.(?P<b>\d+)\.downsample\.1\.",
           "stages.{s-1}.blocks.{b}.downsample.bn."),
    Rename(r"fc\.", "head.fc."),
)

# VGG's convolutions (and their BNs) are numbered through one Sequential, pools included.
_VGG_FEATURES = InOrder(r"features\.\d+\.", r"stages\.\d+\.conv\d+\.(?:conv|bn)\.")

LAYOUTS: dict[str, tuple[Rule, ...]] = {
    "resnet": _RESNET,
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
}


@dataclass(frozen=True)
class Peer:
    source: str  # 'torchvision' or 'timm'
    ours: str
    name: str  # the peer's own model name
    layout: str


def _peers(source: str, layout: str, names: Mapping[str, str] | Iterable[str]) -> list[Peer]:
    pairs = names.items() if isinstance(names, Mapping) else ((n, n) for n in names)
    return [Peer(source, ours, theirs, layout) for ours, theirs in pairs]


_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
            "resnext101_32x8d", "wide_resnet50_2")
_VGGS = tuple(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn"))

PEERS: tuple[Peer, ...] = tuple(
    _peers("torchvision", "tv_alexnet", ["alexnet"])
    + _peers("torchvision", "tv_vgg", _VGGS)
    + _peers("timm", "timm_vgg", _VGGS)
    + _peers("torchvision", "resnet", _RESNETS)
    + _peers("timm", "resnet", _RESNETS)
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
    rules = LAYOUTS[layout]
    orders: dict[str, str] = {}
    for rule in rules:
        if isinstance(rule, InOrder):
            src = sorted(_prefixes(state, rule.source), key=_natural)
            dst = _prefixes(own, rule.ours)
            if len(src) == len(dst):
                orders.update(zip(src, dst))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _rename(key, rules, orders)
        if new is None:
            continue
        target = own.get(new)
        if (target is not None and target.shape != value.shape and target.numel() == value.numel()
                and target.dim() >= 2 and value.dim() >= 2 and target.shape[0] == value.shape[0]):
            value = value.reshape(target.shape)
        out[new] = value
    return out


def _rename(key: str, rules: tuple[Rule, ...], orders: dict[str, str]) -> str | None:
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
            return _fill(rule.template, m.groupdict()) + key[m.end():]
    return key
