"""The model contract every family implements, and feature extraction on top of it.

A family subclasses :class:`ZooNet`, builds ``self.head`` (a layers.classifier head) and
``self.feature_info``, and writes ``forward_features``. Everything else of the contract
(``forward``, ``forward_head``, ``get_classifier``, ``reset_classifier``, ``features_only``)
then holds without more code.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputSizeError


class ZooNet(nn.Module):
    """Base class: ``forward(x) == forward_head(forward_features(x))``.

    ``feature_info`` lists the maps a detection or segmentation user may take: one dict per map
    with ``num_chs``, ``reduction`` (its stride relative to the input) and ``module`` (the
    readable name of the module whose output it is), shallow to deep.
    """

    feature_info: list[dict]
    num_classes: int
    num_features: int
    head: nn.Module
    # The children ``forward_features`` applies one after another, where it does nothing else;
    # a plain Sequential among them stands for its children. ``perf.optimize`` uses it to run
    # the first pieces, on the largest maps, a few samples at a time and the rest on the batch.
    feature_chain: tuple[str, ...] = ()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def feature_pieces(self) -> list[nn.Module]:
        """The modules ``forward_features`` runs in turn; [] where it is no plain chain."""
        pieces: list[nn.Module] = []
        for name in self.feature_chain:
            module = getattr(self, name)
            pieces.extend(module.children() if type(module) is nn.Sequential else [module])
        return pieces

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def pretrained_cfg(self):
        """timm's name for ``default_cfg``: timm's data helpers read this one."""
        return getattr(self, "default_cfg", None)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last layer with a fresh one (``0`` drops it: the model returns features)."""
        self.head.reset(num_classes)
        self.num_classes = num_classes
        if hasattr(self, "default_cfg"):
            self.default_cfg = self.default_cfg.replace(num_classes=num_classes)


class _StopForward(Exception):
    """Raised by the last needed hook so layers past the deepest requested map never run."""


class FeatureExtractor(nn.Module):
    """Returns the maps of ``model.feature_info`` selected by ``out_indices``, shallow to deep.

    Hooks make this work on every family without each one writing its own feature path; the
    classifier is dropped so its parameters don't count.
    """

    def __init__(self, model: ZooNet, out_indices: Sequence[int] | None = None):
        super().__init__()
        info = list(model.feature_info)
        if out_indices is None:
            out_indices = tuple(range(len(info)))
        out_indices = tuple(i if i >= 0 else len(info) + i for i in out_indices)
        bad = [i for i in out_indices if not 0 <= i < len(info)]
        if bad:
            raise InputSizeError(f"out_indices {bad} out of range: the model has {len(info)} "
                                 f"feature maps (0..{len(info) - 1})")
        model.reset_classifier(0)
        self.model = model
        self.out_indices = out_indices
        self.feature_info = [info[i] for i in out_indices]
        self.default_cfg = getattr(model, "default_cfg", None)
        self.pretrained_cfg = self.default_cfg
        self.card = getattr(model, "card", None)
        self.model_name = getattr(model, "model_name", None)
        self._modules_wanted = [info[i]["module"] for i in out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        found: dict[str, torch.Tensor] = {}
        wanted = list(dict.fromkeys(self._modules_wanted))
        handles = []

        def make_hook(name: str):
            def hook(_module, _inputs, output):
                found[name] = output
                if len(found) == len(wanted):
                    raise _StopForward
            return hook

        for name in wanted:
            handles.append(self.model.get_submodule(name).register_forward_hook(make_hook(name)))
        try:
            self.model.forward_features(x)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return [found[name] for name in self._modules_wanted]
