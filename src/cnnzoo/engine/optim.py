"""Optimizers and learning-rate schedules, as the classic papers trained.

Weight decay skips norm weights and biases (every one-dimensional parameter): decaying a
BatchNorm scale only fights the normalisation, as Goyal et al. 2017 ("ImageNet in 1 hour") and
every recipe since note. Schedules are per step with an optional linear warmup, so they work the
same for any number of steps per epoch and resume from the scheduler's ``last_epoch``.
The update runs on torch's fused kernel where it has one (SGD, AdamW), on CPU and GPU alike.
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from ..errors import CnnzooError

OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "onecycle")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def fast_optimizer(cls: type[torch.optim.Optimizer], groups: list[dict], *,
                   scaled: bool = False, **kwargs) -> torch.optim.Optimizer:
    """``cls(groups, **kwargs)`` on the fastest update torch has for the parameters' device.

    Fused where the class has it: the whole update is one kernel over every tensor, where the
    default walks the parameters in Python, several small ops each (resnet50 has 161 tensors).
    Otherwise foreach off the CPU (one op per update step over all tensors; on a CPU it is the
    same loop). Not fused on a CPU under fp16 loss scaling: in torch 2.14 the fused CPU SGD step
    that follows a skipped (overflowed) step turned resnet18's weights to inf where the plain
    one did not. The math is the same update; only the rounding order may differ.
    """
    params = [p for g in groups for p in g["params"]]
    device = params[0].device if params else torch.device("cpu")
    accepted = inspect.signature(cls).parameters
    if "fused" in accepted and not (scaled and device.type == "cpu"):
        try:
            return cls(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
            pass
    if "foreach" in accepted and device.type != "cpu":
        return cls(groups, foreach=True, **kwargs)
    return cls(groups, **kwargs)


def build_optimizer(model: nn.Module, name: str, *, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9, nesterov: bool = False) -> torch.optim.Optimizer:
    """Every parameter is given to the optimizer, frozen or not: ``--unfreeze-at`` then needs no
    new optimizer, and frozen ones (``grad is None``) are skipped by every step."""
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return fast_optimizer(torch.optim.SGD, groups, lr=lr, momentum=momentum,
                              nesterov=nesterov and momentum > 0)
    if name == "adamw":
        return fast_optimizer(torch.optim.AdamW, groups, lr=lr)
    if name == "rmsprop":
        # EfficientNet (Tan & Le 2019, Section 5.2): RMSProp with decay 0.9 and momentum 0.9; TF's
        # epsilon of 1e-3 sits inside the square root there, outside here (torch's RMSprop).
        return fast_optimizer(torch.optim.RMSprop, groups, lr=lr, alpha=0.9, eps=1e-3,
                              momentum=momentum)
    raise CnnzooError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def lr_factor(step: int, *, schedule: str, total_steps: int, warmup_steps: int = 0,
              steps_per_epoch: int = 1, step_epochs: int = 30, gamma: float = 0.1) -> float:
    """The learning-rate multiplier at ``step`` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        # AlexNet/VGG/ResNet: divide by 10 every `step_epochs` epochs.
        return gamma ** (step // (step_epochs * steps_per_epoch))
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "onecycle":
        # Smith & Topin 2017: up to the peak over the first 30%, then cosine annealing to ~0.
        peak = 0.3
        if warmup_steps == 0 and progress < peak:
            return 0.04 + 0.96 * 0.5 * (1 - math.cos(math.pi * progress / peak))
        tail = (progress - peak) / (1 - peak) if warmup_steps == 0 else progress
        return max(1e-4, 0.5 * (1 + math.cos(math.pi * max(0.0, tail))))
    raise CnnzooError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, *, epochs: int,
                    steps_per_epoch: int, warmup_epochs: float = 0.0, step_epochs: int = 30,
                    gamma: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    if schedule not in SCHEDULES:
        raise CnnzooError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    total = epochs * steps_per_epoch
    warmup = int(round(warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        return lr_factor(step, schedule=schedule, total_steps=total, warmup_steps=warmup,
                         steps_per_epoch=steps_per_epoch, step_epochs=step_epochs, gamma=gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
