"""The model registry: every architecture under one name, with its card and default config.

A family file registers each variant once (``register_model``), usually from a table, and users
get models with ``create_model(name, ...)``. The registry holds no model code; it imports the
``models`` package lazily the first time it is asked, so importing ``cnnzoo.registry`` stays cheap.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .errors import UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Inception v3/v4 and the TF-trained models normalise to [-1, 1].
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelCard:
    """Where a model comes from: what a learner reads next to the code."""

    family: str
    year: int
    paper: str
    arxiv: str | None
    innovation: str
    top1: float | None  # paper-reported ImageNet top-1 (%), None where the paper gives none
    top1_source: str  # where in the paper the number stands, and its protocol

    @property
    def url(self) -> str | None:
        return f"https://arxiv.org/abs/{self.arxiv}" if self.arxiv else None


@dataclass(frozen=True)
class DefaultCfg(Mapping):
    """Input and head conventions of a model, as timm's pretrained_cfg and torchvision's weights.

    Read as attributes (``cfg.mean``) or, as timm reads its own, as a mapping (``cfg["mean"]``,
    ``cfg.get("crop_mode")``): ``timm.data.resolve_data_config({}, model=m)`` then finds our
    preprocessing instead of silently falling back to its defaults.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    first_conv: str = "stem.conv"
    classifier: str = "head.fc"
    # Smallest square input the network accepts (its strides and valid convolutions allow no less).
    min_size: int = 32
    # Whether the network takes any resolution >= min_size, or only input_size (fixed dense layers).
    fixed_size: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # The class names of the outputs, where the weights come with them (a saved model, a run).
    label_names: tuple[str, ...] | None = None
    # timm's name for the resize-then-centre-crop our eval transform does.
    crop_mode: str = "center"

    def replace(self, **changes: Any) -> "DefaultCfg":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    card: ModelCard
    cfg: DefaultCfg


_REGISTRY: dict[str, ModelEntry] = {}
_LOADED = False


def register_model(name: str, builder: Callable[..., nn.Module], *, card: ModelCard,
                   cfg: DefaultCfg | None = None) -> Callable[..., nn.Module]:
    """Register ``builder(num_classes=, in_chans=, **kwargs) -> nn.Module`` under ``name``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, builder, card, cfg or DefaultCfg())
    return builder


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from . import models  # noqa: F401  (registers every family)


def _entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `cnnzoo list` shows them all"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell wildcard (``'resnet*'``), sorted by year then name."""
    _ensure_loaded()
    names = [n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)]
    return sorted(names, key=lambda n: (_REGISTRY[n].card.year, _natural_key(n)))


def _natural_key(name: str) -> tuple:
    # resnet18 < resnet34 < resnet101, as a person reads them.
    import re
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def model_card(name: str) -> ModelCard:
    return _entry(name).card


def default_cfg(name: str) -> DefaultCfg:
    return _entry(name).cfg


def is_model(name: str) -> bool:
    _ensure_loaded()
    return name in _REGISTRY


def create_model(source: str, *, num_classes: int | None = None, in_chans: int | None = None,
                 pretrained: Any = None, features_only: bool = False,
                 out_indices: tuple[int, ...] | None = None, **kwargs: Any) -> nn.Module:
    """Build a model from wherever it comes from (``cnnzoo.resolve``).

    ``source`` is a registered name, a saved-model folder (``save_pretrained``), a training run
    folder, or ``'hf-hub:ORG/NAME[@REVISION]'``. ``num_classes`` and ``in_chans`` default to the
    source's (1000 and 3 for ImageNet models, 10 and 1 for LeNet-5). ``pretrained`` is a weights
    source for a registered name (see ``cnnzoo.weights``): with a different ``num_classes`` the
    classifier is re-initialised and everything else loaded. ``features_only=True`` returns the
    multi-scale feature maps of ``out_indices`` instead of logits. Any other keyword goes to the
    family's builder (``attn='se'``, ``drop_path_rate``...).
    """
    from .resolve import build, resolve
    return build(resolve(source, num_classes=num_classes, in_chans=in_chans,
                         pretrained=pretrained, **kwargs),
                 features_only=features_only, out_indices=out_indices)


def _instantiate(name: str, num_classes: int | None, in_chans: int | None,
                 kwargs: dict[str, Any]) -> nn.Module:
    """The registered architecture ``name``, freshly initialised, with its cfg and card."""
    entry = _entry(name)
    cfg = entry.cfg
    num_classes = cfg.num_classes if num_classes is None else int(num_classes)
    in_chans = cfg.input_size[0] if in_chans is None else int(in_chans)
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    model = entry.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    input_size = getattr(model, "input_size", cfg.input_size[1:])
    model.default_cfg = cfg.replace(num_classes=num_classes,
                                    input_size=(in_chans, *input_size))
    model.card = entry.card
    model.model_name = name
    model.model_args = dict(kwargs)  # what save_pretrained writes down to rebuild it
    return model
