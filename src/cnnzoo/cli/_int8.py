"""The int8 options shared by `eval`, `export` and `bench`, and the calibration images they use."""
from __future__ import annotations

import argparse

from ._types import positive_int

INT8_BACKENDS = ("auto", "onnxruntime", "inductor")


def add_int8_options(p: argparse.ArgumentParser, calib_help: str, calib_metavar: str = "N",
                     calib_type=positive_int, default_calib=256) -> None:
    p.add_argument("--int8", action="store_true",
                   help="quantize to int8 first (cnnzoo.quantize: static, weights per channel, "
                        "activations per tensor, CPU)")
    p.add_argument("--calib", type=calib_type, default=default_calib, metavar=calib_metavar,
                   help=calib_help)
    p.add_argument("--int8-backend", choices=INT8_BACKENDS, default="auto",
                   help="auto: build ONNX Runtime's and PyTorch's (PT2E + inductor) int8 models "
                        "and keep the faster; or name one")


def calibration_loader(source, cfg, count: int, *, held_out: list[int] | None = None,
                       seed: int = 0, batch_size: int = 32):
    """``count`` training images of ``source`` as evaluation transforms them: a seeded choice
    among those not in ``held_out`` (the run's held-out split), or the first ``count`` of shards."""
    import torch

    from ..data import build_transform, eval_view, make_loader
    from ..data.shards import ShardSet

    tf = build_transform(cfg, train=False, kind=source.kind)
    base = source.train
    chosen = None
    if not isinstance(base, ShardSet):
        held = set(held_out or ())
        pool = [i for i in range(len(base)) if i not in held]
        if not pool:
            from ..errors import DataError
            raise DataError(f"{source.spec} has no training images to calibrate on")
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
        chosen = sorted(pool[i] for i in order[:count].tolist())
    return make_loader(eval_view(base, chosen, tf), batch_size=min(count, batch_size),
                       train=False, seed=seed)
