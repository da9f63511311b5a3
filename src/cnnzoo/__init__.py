"""cnnzoo: classic image CNNs, from LeNet-5 to EfficientNetV2, behind one API."""
import os as _os
import sys as _sys

# Set before torch's allocator first runs, so before torch is imported, this makes torch back each
# tensor of 2 MiB or more with transparent huge pages: one page fault per 2 MiB instead of per
# 4 KiB. A CNN's big activations are new memory on every call, and where faults are dear (a VM)
# eager CPU inference ran 1.3-1.6x faster, with the same numbers bit for bit. A user's own
# THP_MEM_ALLOC_ENABLE (0 turns it off) is kept. perf/memory.py says whether it took effect.
if "torch" not in _sys.modules:
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .perf.memory import keep_heap as _keep_heap

# glibc's heap thresholds fixed where its adaptive ones fail torch (perf/memory.py); any time
# will do, unlike huge pages. CNNZOO_KEEP_HEAP=0 leaves them alone.
_keep_heap()

from .registry import (DefaultCfg, ModelCard, create_model, default_cfg, is_model, list_models,
                       model_card, register_model)

from .inspect.summary import summary
from .perf import optimize
from .weights.hub import push_to_hub
from .weights.saved import save_pretrained

__version__ = "0.1.0"
__all__ = ["DefaultCfg", "ModelCard", "create_model", "default_cfg", "is_model", "list_models",
           "model_card", "optimize", "push_to_hub", "register_model", "save_pretrained",
           "summary"]
