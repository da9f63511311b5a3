"""Training, evaluation and prediction: loops, optimizers, checkpoints, distributed runs.

The names below load on first use: the training loop pulls in the data pipeline (torchvision's
transforms, about 2 s), which ``import cnnzoo`` (``optimize``, ``bench`` and the optimizers they
share) does not need.
"""
from importlib import import_module

_WHERE = {"TrainConfig": "build", "build_model": "build", "load_run_model": "build",
          "EvalResult": "evaluate", "evaluate": "evaluate",
          "Trainer": "trainer", "compute_loss": "trainer", "train": "trainer"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
