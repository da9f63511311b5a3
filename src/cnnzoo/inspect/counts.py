"""Parameter counts without paying for the weights."""
from __future__ import annotations

import torch
from torch import nn

from ..registry import create_model


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def registered_param_count(name: str, **kwargs) -> int:
    """Parameter count of a registered model, built on the meta device.

    Meta tensors have shapes but no storage, so even VGG-19's 144M parameters cost nothing to
    count and no initialiser runs.
    """
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    return count_params(model)
