"""Models and data for a run, built from its configuration, and rebuilt later from its folder."""
from __future__ import annotations

import warnings

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CnnzooError, InputSizeError
from ..registry import create_model, default_cfg


@dataclass
class TrainConfig:
    """Everything that decides a run's result; stored as config.json in its folder."""

    model: str
    data: str = "digits"
    val_data: str | None = None  # held-out images from another source (--val-data)
    data_root: str | None = None
    download: bool = False
    epochs: int = 10
    batch_size: int = 64  # global: split evenly over the processes of a distributed run
    lr: float | None = None  # None: the optimizer's usual value (0.1 SGD, 1e-3 AdamW, 0.016 RMSprop)
    opt: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    sched: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: int = 30
    gamma: float = 0.1
    label_smoothing: float = 0.0
    amp: str = "none"  # 'bf16' (CPU or GPU) or 'fp16' (GPU, with a gradient scaler)
    channels_last: bool = False
    # perf.for_training: conv twins with faster weight gradients, NHWC on a CPU (--plain: off).
    train_speedups: bool = True
    compile: bool = False
    clip_grad: float | None = None
    ema_decay: float | None = None
    val_split: float | None = None  # None: the source's own test split, else 0.2
    seed: int = 0
    deterministic: bool = False
    workers: int | None = None  # None: min(cores, 8) for photos, 0 for in-memory glyphs
    check_images: bool = False  # decode every image before training (else: where it is read)
    skip_bad_shards: bool = False
    img_size: int | None = None
    in_chans: int | None = None
    augment: bool = True
    pretrained: str | None = None
    freeze: str | None = None
    unfreeze_at: int | None = None
    limit_batches: int | None = None  # train on the first N batches of each epoch (smoke runs)
    save_every: int = 0  # also checkpoint every N steps inside an epoch (0: at epoch ends only)
    device: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """One clear error for a value no run can use, before anything is built or written."""
        def need(ok: bool, flag: str, rule: str, value) -> None:
            if not ok:
                raise CnnzooError(f"--{flag} must be {rule}, got {value}")

        finite = lambda v: v == v and v not in (float("inf"), float("-inf"))  # noqa: E731
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            need(v >= 1, name.replace("_", "-"), "at least 1", v)
        for name in ("img_size", "in_chans", "limit_batches"):
            v = getattr(self, name)
            need(v is None or v >= 1, name.replace("_", "-"), "at least 1", v)
        need(self.workers is None or self.workers >= 0, "workers", "0 or more", self.workers)
        need(self.save_every >= 0, "save-every", "0 (epoch ends only) or more", self.save_every)
        need(self.step_epochs >= 1, "step-epochs", "at least 1", self.step_epochs)
        need(self.lr is None or (finite(self.lr) and self.lr > 0), "lr", "a positive number",
             self.lr)
        for name in ("momentum", "weight_decay", "warmup_epochs"):
            v = getattr(self, name)
            need(finite(v) and v >= 0, name.replace("_", "-"), "0 or more", v)
        need(finite(self.label_smoothing) and 0 <= self.label_smoothing < 1, "label-smoothing",
             "in [0, 1)", self.label_smoothing)
        need(self.clip_grad is None or (finite(self.clip_grad) and self.clip_grad > 0),
             "clip-grad", "a positive number", self.clip_grad)
        need(self.ema_decay is None or 0 < self.ema_decay < 1, "ema", "in (0, 1)", self.ema_decay)
        need(self.val_split is None or 0 < self.val_split < 1, "val-split", "between 0 and 1",
             self.val_split)
        need(self.unfreeze_at is None or self.unfreeze_at >= 1, "unfreeze-at", "at least 1",
             self.unfreeze_at)
        if self.img_size is not None:
            check_img_size(self.model, self.img_size)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3, "rmsprop": 0.016}


def model_kwargs(name: str, img_size: int | None, extra: dict | None = None) -> dict:
    """Builder keywords: networks with a fixed input (LeNet-5, AlexNet 2012) take ``img_size``."""
    kwargs = dict(extra or {})
    if img_size is not None:
        check_img_size(name, img_size)
    if img_size is not None and default_cfg(name).fixed_size:
        kwargs["img_size"] = img_size
    return kwargs


def check_img_size(name: str, img_size: int) -> None:
    """Refuse, in one line, a side too small for the network's strides and valid convolutions."""
    least = default_cfg(name).min_size
    if img_size < least:
        raise InputSizeError(f"{name} needs images of at least {least}x{least}, got --img-size "
                             f"{img_size}")


def with_input_size(model: nn.Module, img_size: int | None) -> nn.Module:
    """Networks with global pooling take any size: record the one this run feeds them."""
    if img_size is not None and tuple(model.default_cfg.input_size[1:]) != (img_size, img_size):
        model.default_cfg = model.default_cfg.replace(
            input_size=(model.default_cfg.input_size[0], img_size, img_size))
    return model


def build_model(cfg: TrainConfig, num_classes: int,
                load_pretrained: bool = True) -> tuple[nn.Module, list[str]]:
    """The run's model with ``num_classes`` outputs; with ``--pretrained`` every tensor but a
    classifier of another size is loaded (a new head, as fine-tuning wants). Returns the model and
    the loader's notes for the user (a re-initialised head, adapted input channels)."""
    from ..weights import PretrainedWarning

    kwargs = model_kwargs(cfg.model, cfg.img_size, cfg.model_kwargs)
    # Through the one resolver: named sources, URLs, files in our, torchvision's, timm's or
    # Keras's naming, saved models, runs and the Hub. The trainer reports what was
    # re-initialised itself.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PretrainedWarning)
        model = create_model(cfg.model, num_classes=num_classes, in_chans=cfg.in_chans,
                             pretrained=cfg.pretrained if load_pretrained else None, **kwargs)
    notes = [str(w.message) for w in caught if issubclass(w.category, PretrainedWarning)]
    return with_input_size(model, cfg.img_size), notes


def load_run_model(run: Path, weights: Path | None = None) -> tuple[nn.Module, dict]:
    """Rebuild a trained model from its run folder (config.json) and load its weights."""
    from ..resolve import load

    model, resolved = load(str(weights or run))
    return model, resolved.run_config


def check_choice(value: str, choices, what: str) -> None:
    if value not in choices:
        raise CnnzooError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
