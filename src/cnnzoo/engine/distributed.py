"""torchrun integration: one process per device, DistributedDataParallel, rank-0 side effects.

``cnnzoo train`` needs no flag to run distributed: under ``torchrun`` the environment carries
RANK/WORLD_SIZE/LOCAL_RANK and the rendezvous address, and this module joins the group (NCCL on
GPUs, gloo on CPU). Multi-node runs use torchrun's usual ``--nnodes``/``--rdzv_*`` flags.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = _device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, dev)


def _device(name: str) -> torch.device:
    """A device this machine has, or one clear error."""
    from ..errors import CnnzooError

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise CnnzooError(f"unknown --device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CnnzooError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise CnnzooError(f"--device {name}: this machine has {count} GPU(s), "
                              f"cuda:0 to cuda:{count - 1}")
    elif dev.type not in ("cpu", "mps"):
        raise CnnzooError(f"--device {name}: cnnzoo runs on cpu, cuda or mps")
    return dev


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_sum(info: DistInfo, values: list[float]) -> list[float]:
    """Sum of each value over all processes (float64, so means over ranks stay exact)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64,
                     device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def all_sum_tensor(info: DistInfo, t: torch.Tensor) -> torch.Tensor:
    """Sum over all processes, on the tensor's own device. NCCL reduces only CUDA tensors, so
    a CPU tensor makes the trip to this process's GPU and back."""
    if not info.enabled:
        return t
    where = info.device if info.device.type == "cuda" else torch.device("cpu")
    out = t.to(where, copy=True)
    dist.all_reduce(out)
    return out.to(t.device)

