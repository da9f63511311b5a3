"""Weights: safe checkpoint I/O and loading pretrained weights into registered models."""
from __future__ import annotations

import os

from torch import nn

from ..errors import WeightsError
from .io import atomic_write, load_state_dict, save_state_dict

__all__ = ["atomic_write", "load_into", "load_pretrained", "load_state_dict", "save_state_dict"]


def load_into(model: nn.Module, state: dict, *, source: str = "weights") -> list[str]:
    """Load ``state`` into ``model``; a classifier of another size is left freshly initialised.

    Returns the names of the tensors that were not loaded (the re-initialised classifier), so
    the caller can tell the user. Any other missing, unexpected or misshapen tensor means the file
    is for another architecture, and that is an error, not a warning.
    """
    own = model.state_dict()
    classifier = getattr(getattr(model, "default_cfg", None), "classifier", None)
    skipped = []
    for key, value in list(state.items()):
        if key in own and own[key].shape != value.shape:
            if classifier and key.startswith(classifier + "."):
                skipped.append(key)
                del state[key]
    missing = [k for k in own if k not in state and k not in skipped]
    unexpected = [k for k in state if k not in own]
    bad_shape = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        detail = (f"missing {missing[:3]}" if missing else
                  f"unexpected {unexpected[:3]}" if unexpected else f"shape mismatch {bad_shape[:3]}")
        name = getattr(model, "model_name", type(model).__name__)
        raise WeightsError(f"{source} does not fit {name}: {detail}"
                           f"{' ...' if len(missing + unexpected + bad_shape) > 3 else ''}")
    model.load_state_dict(state, strict=False)
    return skipped


def load_pretrained(model: nn.Module, source: str, name: str | None = None) -> list[str]:
    """Load weights from a local file (``.safetensors`` or a weights-only ``.pth``)."""
    if os.path.exists(source) or os.sep in source or source.endswith((".safetensors", ".pth", ".pt")):
        return load_into(model, load_state_dict(source), source=source)
    raise WeightsError(f"unknown weights source {source!r} for {name or 'the model'}: "
                       f"give a path to a .safetensors or .pth file")
