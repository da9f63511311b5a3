"""Where a model comes from: one resolver for ``create_model`` and every command that takes a model.

A source is

- a registered name (``'resnet50'``), with ``pretrained=`` naming its weights if any;
- a training run folder (its best weights, else its last) or one of its checkpoints;
- a saved-model folder (``save_pretrained``: config.json + model.safetensors);
- ``'hf-hub:ORG/NAME[@REVISION]'``, a saved model on the Hugging Face Hub;
- a weights file (.safetensors, .pth, Keras .h5 / .weights.h5) or an http(s) URL of one, given
  with the architecture it holds (``create_model('resnet50', pretrained=FILE)``; on the command
  line ``cnnzoo CMD resnet50 --weights FILE``).

``resolve`` turns it into a :class:`Resolved`: the architecture, its builder arguments, the
weights to load, the preprocessing and the class names; ``build`` then builds the model once and
loads the weights once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .errors import CnnzooError, WeightsError
from .registry import _entry, _instantiate, default_cfg, is_model

URL_SCHEMES = ("http://", "https://")
KERAS_SUFFIXES = (".h5", ".hdf5")


@dataclass
class Resolved:
    """What a source says about the model it holds; ``None`` leaves the architecture's own."""

    arch: str
    num_classes: int | None = None
    in_chans: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: Any = None  # what ``weights.load_pretrained`` takes: a source name, path, state
    cfg: dict[str, Any] = field(default_factory=dict)  # preprocessing and class names it fixes
    bn_eps: float | None = None
    keras: dict | None = None  # what Keras computes differently, for weights that came from it
    run_config: dict | None = None  # the training run's config.json, for a run
    origin: str | None = None  # the source as the user wrote it, for messages


def resolve(source: str | os.PathLike, *, pretrained=None, weights: str | None = None,
            num_classes: int | None = None, in_chans: int | None = None,
            img_size: int | None = None, **kwargs: Any) -> Resolved:
    """The model ``source`` stands for (see the module); keywords override what it says.

    ``pretrained`` initialises a registered architecture from a source (its classifier
    re-initialised for another ``num_classes``); ``weights`` (the command line's ``--weights``)
    are that architecture's own trained weights, so their classifier sets ``num_classes``.
    """
    text = os.fspath(source)
    if is_model(text):
        res = Resolved(text, weights=pretrained or None, origin=text)
        if _is_folder_source(pretrained):
            # A saved model or run initialises this one: its weights, with the preprocessing,
            # BN epsilon and Keras padding they were trained with (a new head drops its names).
            found = _located(os.fspath(pretrained), arch=None)
            res.weights, res.cfg, res.bn_eps, res.keras = \
                found.weights, found.cfg, found.bn_eps, found.keras
        if weights is not None:
            res = _located(weights, arch=text)
            if res.arch != text:
                raise CnnzooError(f"{weights} holds a {res.arch}, not a {text}")
    else:
        if pretrained:
            raise WeightsError(f"{text} brings its own weights; pretrained= is for a registered "
                               f"model name")
        res = _located(text, arch=None)
    if num_classes is not None:
        res.num_classes = int(num_classes)
    if in_chans is not None:
        res.in_chans = int(in_chans)
    res.kwargs.update(kwargs)
    if img_size is not None:
        _set_img_size(res, img_size)
    return res


def build(res: Resolved, *, features_only: bool = False,
          out_indices: tuple[int, ...] | None = None) -> nn.Module:
    """The model ``res`` describes, built once, its weights loaded once."""
    model = _instantiate(res.arch, res.num_classes, res.in_chans, res.kwargs)
    if res.keras:
        from .weights.keras import apply_fixups
        apply_fixups(model, res.keras)
        model.default_cfg = model.default_cfg.replace(
            extra={**model.default_cfg.extra, "keras": dict(res.keras)})
    if res.weights is not None:
        from .weights import load_pretrained
        load_pretrained(model, res.weights, name=res.arch)
    if res.bn_eps is not None:
        from .weights.saved import set_bn_eps
        set_bn_eps(model, res.bn_eps)
    if res.cfg:
        model.default_cfg = model.default_cfg.replace(**_fitting(res.cfg, model.default_cfg))
    if features_only:
        from .models.base import FeatureExtractor
        model = FeatureExtractor(model, out_indices)
    return model


def load(source, **kwargs) -> tuple[nn.Module, Resolved]:
    """``(model, what was resolved)``: the commands' way in, which also want the run's config."""
    res = resolve(source, **kwargs)
    return build(res), res


def _fitting(cfg: dict, current) -> dict:
    """The source's preprocessing, fitted to the model as built (another in_chans, headless)."""
    cfg = dict(cfg)
    chans = current.input_size[0]
    if "input_size" in cfg:
        cfg["input_size"] = (chans, *tuple(cfg["input_size"])[1:])
    for key in ("mean", "std"):
        if key in cfg and len(cfg[key]) != chans:
            del cfg[key]
    names = cfg.get("label_names")
    if names is not None and len(names) != current.num_classes:
        cfg["label_names"] = None  # a new head: the old names no longer apply
    return cfg


def _set_img_size(res: Resolved, img_size: int) -> None:
    """Networks with dense layers of a fixed size are built for it; the rest only record it."""
    least = default_cfg(res.arch).min_size
    if img_size < least:
        from .errors import InputSizeError
        raise InputSizeError(f"{res.arch} needs images of at least {least}x{least}, got "
                             f"{img_size}")
    if default_cfg(res.arch).fixed_size:
        res.kwargs["img_size"] = img_size
    res.cfg["input_size"] = (0, img_size, img_size)  # channels: whatever the model is built with


def _is_folder_source(pretrained) -> bool:
    if not isinstance(pretrained, (str, os.PathLike)):
        return False
    text = os.fspath(pretrained)
    return text.startswith("hf-hub:") or Path(text).expanduser().is_dir()


def _located(text: str, arch: str | None) -> Resolved:
    """A source that is not a registered name: a Hub model, a URL, a folder or a file."""
    text = os.fspath(text)
    if text.startswith("hf-hub:"):
        from .weights.hub import download
        res = _saved(download(text))
        res.origin = text
        return res
    if text.startswith(URL_SCHEMES):
        from .weights.sources import fetch_url
        path = fetch_url(text)
    else:
        path = Path(text).expanduser()
    from .engine.run_dir import is_run
    from .weights.saved import is_saved
    if path.is_dir():
        if is_saved(path):
            return _saved(path)
        if is_run(path):
            return _run(path, None)
        raise WeightsError(f"{path} is neither a saved model (config.json + model.safetensors) "
                           f"nor a training run folder")
    if path.is_file():
        if is_saved(path.parent) and path.name.endswith(".safetensors"):
            return _saved(path.parent, path)
        if is_run(path.parent) and path.suffix == ".safetensors":
            return _run(path.parent, path)
        if arch is None:
            raise WeightsError(f"{path} does not say which architecture it holds: give the "
                               f"model name too (create_model(NAME, pretrained=FILE), or "
                               f"`cnnzoo COMMAND NAME --weights FILE`)")
        return _bare_file(path, arch)
    if os.sep in text or text.startswith((".", "~")) or Path(text).suffix in _FILE_SUFFIXES:
        raise WeightsError(f"weights file or folder not found: {path}")
    _entry(text)  # no path either: the unknown-name error, with the closest names
    raise AssertionError("unreachable")


def _saved(folder: Path, weights: Path | None = None) -> Resolved:
    from .weights.saved import WEIGHTS, read_saved
    config = read_saved(folder)
    arch = config["architecture"]
    if not is_model(arch):
        raise WeightsError(f"{folder} holds a {arch}, which this cnnzoo does not have "
                           f"(saved by cnnzoo {config.get('cnnzoo_version', '?')})")
    cfg = {k: tuple(v) if isinstance(v, list) else v
           for k, v in (config.get("pretrained_cfg") or {}).items() if k in _CFG_FIELDS}
    if config.get("label_names") is not None:
        cfg["label_names"] = tuple(config["label_names"])
    return Resolved(arch, num_classes=config.get("num_classes"), in_chans=config.get("in_chans"),
                    kwargs=dict(config.get("model_args") or {}),
                    weights=str(weights or folder / WEIGHTS), cfg=cfg,
                    bn_eps=config.get("bn_eps"), keras=config.get("keras"), origin=str(folder))


def _run(folder: Path, weights: Path | None) -> Resolved:
    from .engine.run_dir import require_run
    config = require_run(folder)
    train = config.get("train") or {}
    arch = train.get("model")
    if not isinstance(arch, str) or not is_model(arch):
        raise WeightsError(f"{folder / 'config.json'} names no registered model ({arch!r})")
    if weights is None:
        weights = next((folder / n for n in ("best.safetensors", "last.safetensors")
                        if (folder / n).exists()), None)
        if weights is None:
            raise WeightsError(f"run folder {folder} holds no weights yet")
    classes = config.get("classes") or []
    res = Resolved(arch, num_classes=len(classes) or None, in_chans=train.get("in_chans"),
                   kwargs=dict(train.get("model_kwargs") or {}), weights=str(weights),
                   cfg={"label_names": tuple(classes)} if classes else {},
                   run_config=config, origin=str(folder))
    if train.get("img_size"):
        _set_img_size(res, int(train["img_size"]))
    return res


def _bare_file(path: Path, arch: str) -> Resolved:
    """A file of weights alone: its classifier's rows say how many classes it was trained for."""
    from .weights.io import load_state_dict
    if path.name.endswith(KERAS_SUFFIXES):
        return Resolved(arch, weights=str(path), origin=str(path))
    state = load_state_dict(path)
    key = default_cfg(arch).classifier + ".weight"
    rows = int(state[key].shape[0]) if key in state and state[key].dim() >= 1 else None
    return Resolved(arch, num_classes=rows, weights=state, origin=str(path))


_CFG_FIELDS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode",
               "first_conv", "classifier")

_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".h5", ".hdf5")
