"""Passes over models on the meta device (counting, tracing shapes) without torch's slow paths.

torch computes a BatchNorm's result on the meta device by running its Python decomposition,
about 1.5 ms a call: a third of the whole atlas's time went into the 8,000 BatchNorms of its 55
models, whose output is only ever the input's shape. :func:`meta_norms` answers them at once.
"""
from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Both return (output, saved mean, saved inverse std); in inference the saved ones are empty.
_NORMS = {aten.native_batch_norm.default, aten._native_batch_norm_legit_no_training.default}


class _MetaNorms(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _NORMS:
            x = args[0]
            training = args[5] if func is aten.native_batch_norm.default else False
            if x.device.type == "meta" and not training:
                empty = x.new_empty((0,))
                return torch.empty_like(x), empty, empty.clone()
        return func(*args, **kwargs)


def meta_norms(device: torch.device | str):
    """Within it, inference BatchNorm on meta tensors costs nothing; elsewhere a no-op."""
    return _MetaNorms() if torch.device(device).type == "meta" else contextlib.nullcontext()


# In-place initialisers and the arithmetic torch's own init functions do on a weight (trunc_normal_
# is uniform_, erfinv_, mul_, add_, clamp_). On a meta tensor each only returns its input, but
# through a Python decomposition at about 2 ms a call: 4,700 of them made `cnnzoo list` (55
# models built to count their parameters) take 14 s.
_INIT = frozenset(("normal_", "uniform_", "bernoulli_", "exponential_", "random_", "log_normal_",
                   "cauchy_", "geometric_", "fill_", "zero_", "erfinv_", "mul_", "add_", "sub_",
                   "div_", "clamp_", "clamp_min_", "clamp_max_", "copy_"))


class _MetaInit(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func.overloadpacket.__name__ in _INIT and args and isinstance(args[0], torch.Tensor)
                and args[0].device.type == "meta"):
            return args[0]
        return func(*args, **kwargs)


@contextlib.contextmanager
def on_meta():
    """Build models on the meta device without paying for the initialisers that cannot run
    there anyway: shapes, parameter counts and module structure are those of a real build."""
    with torch.device("meta"), _MetaInit():
        yield
