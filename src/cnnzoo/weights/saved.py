"""A saved model: a folder anyone can load, with or without cnnzoo, as timm shares its models.

    config.json         architecture, its builder arguments (num_classes and in_chans included),
                        the preprocessing (timm's ``pretrained_cfg`` keys), class names, version
    model.safetensors   the weights, in our naming

``save_pretrained`` writes the pair into a fresh folder and renames it into place, so a crash
never leaves half a model under the real name; an existing folder is replaced only with
``overwrite=True``. ``read_saved`` is the other half, used by the resolver (``cnnzoo.resolve``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import WeightsError
from .io import save_state_dict

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
# The preprocessing a loader needs, under timm's pretrained_cfg names.
CFG_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "first_conv",
            "classifier")


def saved_config(model: nn.Module, classes=None) -> dict[str, Any]:
    """config.json's content for ``model`` (a model from ``create_model``)."""
    from .. import __version__

    name = getattr(model, "model_name", None)
    cfg = getattr(model, "default_cfg", None)
    if not name or cfg is None or not hasattr(model, "model_args"):
        raise WeightsError(f"{type(model).__name__} was not built by cnnzoo.create_model, so its "
                           f"architecture cannot be written down; save a registered model")
    if type(model).__name__ == "FeatureExtractor":
        raise WeightsError("a features_only model cannot be saved: save the model it wraps")
    classes = list(classes) if classes is not None else \
        (list(cfg.label_names) if cfg.label_names else None)
    num_classes = getattr(model, "num_classes", cfg.num_classes)
    if classes is not None and len(classes) != num_classes:
        raise WeightsError(f"{len(classes)} class names for a model with {num_classes} outputs")
    config = {"architecture": name, "num_classes": num_classes, "in_chans": cfg.input_size[0],
              "model_args": dict(model.model_args),
              "pretrained_cfg": {k: _plain(cfg[k]) for k in CFG_KEYS},
              "label_names": classes, "cnnzoo_version": __version__}
    keras = cfg.extra.get("keras")
    if keras:  # TF padding and pools the weights were trained with, re-applied on loading
        config["keras"] = {k: keras[k] for k in ("same_padding", "exclude_pad_pools", "mode")}
    eps = {m.eps for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if len(eps) == 1:  # another framework's weights may have brought their own (Keras: 1e-3)
        config["bn_eps"] = eps.pop()
    try:
        json.dumps(config)
    except TypeError as exc:
        raise WeightsError(f"{name}'s builder arguments cannot be written as JSON ({exc}); "
                           f"build it with plain values") from None
    return config


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def save_pretrained(model: nn.Module, directory: str | os.PathLike, classes=None, *,
                    overwrite: bool = False) -> Path:
    """Write ``model`` as config.json + model.safetensors in ``directory`` (see the module)."""
    target = Path(directory).expanduser()
    if target.exists() and not target.is_dir():
        raise WeightsError(f"{target} exists and is a file; give a folder to save the model in")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise WeightsError(f"{target} already holds files; pass overwrite=True to replace the "
                           f"model in it")
    config = saved_config(model, classes)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_state_dict({k: v.to("cpu") for k, v in state.items()}, fresh / WEIGHTS,
                        metadata={"format": "pt"})
        (fresh / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        os.chmod(fresh, 0o777 & ~_umask())
        _swap_in(fresh, target)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return target


def _swap_in(fresh: Path, target: Path) -> None:
    """Rename ``fresh`` onto ``target``; files of the old folder that are not ours move along."""
    if not target.exists() or not any(target.iterdir()):
        if target.exists():
            target.rmdir()
        os.replace(fresh, target)
        return
    for entry in target.iterdir():
        if entry.name not in (CONFIG, WEIGHTS):
            os.replace(entry, fresh / entry.name)
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    os.replace(fresh, target)
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_saved(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def read_saved(path: Path) -> dict[str, Any]:
    """A saved folder's config.json, checked, or one line saying what is wrong with it."""
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"cannot read {path / CONFIG}: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise WeightsError(f"{path / CONFIG} names no architecture: not a saved cnnzoo model")
    return config


def set_bn_eps(model: nn.Module, eps: float | None) -> None:
    if eps is None:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = float(eps)

