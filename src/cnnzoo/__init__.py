"""cnnzoo: classic image CNNs, from LeNet-5 to EfficientNetV2, behind one API."""
from .registry import (DefaultCfg, ModelCard, create_model, default_cfg, is_model, list_models,
                       model_card, register_model)

from .inspect.summary import summary
from .perf import optimize

__version__ = "0.1.0"
__all__ = ["DefaultCfg", "ModelCard", "create_model", "default_cfg", "is_model", "list_models",
           "model_card", "optimize", "register_model", "summary"]
