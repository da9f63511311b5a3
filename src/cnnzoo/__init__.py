"""cnnzoo: classic image CNNs, from LeNet-5 to EfficientNetV2, behind one API.

Importing it changes nothing outside the package: no environment variable, allocator setting or
thread count. The names below load on first use, so ``import cnnzoo`` does not start torch, and a program
can still make the memory call (:func:`cnnzoo.memory.tune_memory`) before torch allocates.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "DefaultCfg": "registry", "ModelCard": "registry", "create_model": "registry",
    "default_cfg": "registry", "is_model": "registry", "list_models": "registry",
    "model_card": "registry", "register_model": "registry",
    "summary": "inspect.summary",
    "optimize": "perf.optimize", "for_training": "perf.training", "quantize": "perf.quantize",
    "push_to_hub": "weights.hub", "save_pretrained": "weights.saved",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    try:  # a subpackage asked for as an attribute: cnnzoo.models, cnnzoo.perf, ...
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
