"""Weights: safe checkpoint I/O and pretrained weights from torchvision, timm, files and URLs.

``load_pretrained(model, source)`` takes

- ``'torchvision'`` or ``'timm'`` (the peer's default ImageNet weights), or with a tag,
  ``'torchvision:IMAGENET1K_V1'``: resolved through ``sources.json`` to the official URL and
  checksum, read from (or downloaded into) the torch hub cache;
- a local ``.safetensors`` file, or a ``.pth``/``.pt`` read with ``torch.load(weights_only=True)``
  only (a pickle cannot run code here);
- an ``http(s)://`` URL, cached like torch.hub caches it;
- ``'keras'`` (keras.applications' ImageNet file of the model, from its official URL) or a Keras
  ``.h5`` / ``.weights.h5`` file, converted by ``keras.py`` (h5py only).

Whatever the file's naming (ours, torchvision's or timm's), ``to_ours`` renames it through the
tables of ``mapping.py``. A file for another architecture is an error; a classifier of another
size is left freshly initialised and the user is warned; the rest must fit exactly.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import WeightsError
from .io import atomic_write, load_state_dict, save_state_dict
from .mapping import peers_of, rename_keys
from .sources import WeightsSource, available, fetch_source, fetch_url, is_named_source, resolve

__all__ = ["PretrainedWarning", "atomic_write", "available", "load_into", "load_pretrained",
           "load_state_dict", "resolve", "save_state_dict", "to_ours"]


class PretrainedWarning(UserWarning):
    """Weights were loaded, but not all of them: the user should know which part is fresh."""


def _skippable(key: str, classifier: str | None) -> bool:
    return bool(classifier) and key.startswith(classifier + ".")


def load_into(model: nn.Module, state: dict, *, source: str = "weights") -> list[str]:
    """Load ``state`` into ``model``; a classifier of another size is left freshly initialised.

    Returns the names of the tensors that were not loaded (the re-initialised classifier, or the
    classifier of a headless ``num_classes=0`` model), so the caller can tell the user. Any other
    missing, unexpected or misshapen tensor means the file is for another architecture, and that
    is an error, not a warning. BatchNorm's ``num_batches_tracked`` counters, absent from
    checkpoints older than PyTorch 0.4.1 (torchvision's V1 ResNets), may be missing.
    """
    own = model.state_dict()
    # Integer or boolean values for floating-point weights are no weights at all (a file of
    # indices or a corrupted dtype); half precision converts on load and is fine.
    wrong = [k for k, v in state.items()
             if k in own and own[k].is_floating_point() and not v.is_floating_point()]
    if wrong:
        raise WeightsError(f"{source} holds {state[wrong[0]].dtype} values for floating-point "
                           f"weights ({', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''})")
    classifier = getattr(getattr(model, "default_cfg", None), "classifier", None)
    skipped = []
    for key, value in list(state.items()):
        mismatch = key in own and own[key].shape != value.shape
        if _skippable(key, classifier) and (mismatch or key not in own):
            skipped.append(key)
            del state[key]
    missing = [k for k in own if k not in state and k not in skipped
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    bad_shape = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        detail = (f"missing {missing[:3]}" if missing else
                  f"unexpected {unexpected[:3]}" if unexpected else f"shape mismatch {bad_shape[:3]}")
        name = getattr(model, "model_name", type(model).__name__)
        raise WeightsError(f"{source} does not fit {name}: {detail}"
                           f"{' ...' if len(missing + unexpected + bad_shape) > 3 else ''}")
    model.load_state_dict(state, strict=False)
    return skipped


def to_ours(model: nn.Module, name: str | None, state: Mapping[str, torch.Tensor],
            prefer: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """``state`` renamed to our keys, and which naming it was in ('cnnzoo', 'torchvision', 'timm').

    Every naming this model has a table for is tried (``prefer`` first); the one whose keys are
    exactly ours wins, else the closest, so that ``load_into`` names what does not fit.
    """
    own = model.state_dict()
    classifier = getattr(getattr(model, "default_cfg", None), "classifier", None)
    wanted = {k for k in own if not k.endswith("num_batches_tracked")
              and not _skippable(k, classifier)}
    candidates = [("cnnzoo", dict(state))]
    for source, peer in sorted(peers_of(name or "").items(), key=lambda sp: sp[0] != prefer):
        candidates.append((source, rename_keys(state, peer.layout, own)))
    if prefer == "cnnzoo":
        candidates.sort(key=lambda c: c[0] != "cnnzoo")

    def fit(item) -> tuple[bool, int]:
        keys = {k for k in item[1] if not k.endswith("num_batches_tracked")
                and not _skippable(k, classifier)}
        return keys == wanted, len(keys & wanted) - len(keys - wanted)

    best = max(candidates, key=fit)  # max keeps the first of equals: the preferred naming
    return best[1], best[0]


def _adapt_first_conv(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """RGB weights into a model built for ``in_chans`` other than 3, as timm adapts them."""
    cfg = getattr(model, "default_cfg", None)
    key = f"{cfg.first_conv}.weight" if cfg else None
    own = model.state_dict().get(key) if key else None
    w = state.get(key) if key else None
    if own is None or w is None or w.dim() != 4 or own.shape[1] == w.shape[1] or w.shape[1] != 3:
        return None
    chans = own.shape[1]
    if chans == 1:
        state[key] = w.sum(dim=1, keepdim=True)  # a grey image is R = G = B
    else:
        reps = -(-chans // 3)
        state[key] = w.repeat(1, reps, 1, 1)[:, :chans] * (3 / chans)
    return f"{key} adapted from 3 to {chans} input channels"


def _set_bn_eps(model: nn.Module, peer) -> None:
    if peer is None or peer.bn_eps is None:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = peer.bn_eps


def _apply_preprocessing(model: nn.Module, src: WeightsSource) -> None:
    cfg = getattr(model, "default_cfg", None)
    if cfg is None:
        return
    changes: dict = dict(interpolation=src.interpolation, crop_pct=src.crop_pct,
                         extra={**cfg.extra, "pretrained": dict(
                             source=src.spec, url=src.url, resize_size=src.resize_size,
                             top1=src.top1)})
    if len(src.mean) == cfg.input_size[0]:
        changes.update(mean=src.mean, std=src.std)
    if not cfg.fixed_size:
        changes["input_size"] = (cfg.input_size[0], *src.input_size[1:])
    model.default_cfg = cfg.replace(**changes)


def default_source(name: str) -> str:
    """torchvision's weights where it has them (pretrained=True), else timm's."""
    sources = {r.source for r in available(name)}
    if not sources:
        raise WeightsError(f"{name} has no torchvision or timm weights; pass a weights file")
    return "torchvision" if "torchvision" in sources else sorted(sources)[0]


def load_pretrained(model: nn.Module, source: str | bool | os.PathLike | Mapping[str, torch.Tensor],
                    name: str | None = None) -> list[str]:
    """Load weights from a named source, a URL, a local file or an in-memory state dict.

    Returns the keys that were not loaded (a classifier of another size), after warning.
    """
    name = name or getattr(model, "model_name", None)
    src: WeightsSource | None = None
    keras = False
    if isinstance(source, Mapping):  # e.g. a torchvision model's state_dict(), already in memory
        state, described = dict(source), "the given state dict"
    else:
        path = _locate(source, name, model)
        if isinstance(path, WeightsSource):
            src, path = path, fetch_source(path)
        keras = str(path).endswith(KERAS_SUFFIXES)
        if keras:  # named by Keras's layers: converted by the family's plan, not renamed
            from .keras import load_keras
            state, described = load_keras(model, path, name), str(path)
        else:
            state, described = load_state_dict(path), src.spec if src else str(path)
    state, naming = (state, "keras") if keras else \
        to_ours(model, name, state, prefer=src.source if src else None)
    notes = [n for n in [_adapt_first_conv(model, state)] if n]
    classifier = getattr(getattr(model, "default_cfg", None), "classifier", None)
    theirs = state.get(f"{classifier}.weight") if classifier else None
    skipped = load_into(model, state, source=f"{described} ({naming} naming)")
    _set_bn_eps(model, peers_of(name or "").get(naming))
    if src:
        _apply_preprocessing(model, src)
    if skipped:
        had = f"{theirs.shape[0]}" if theirs is not None else "another number of"
        notes.append(f"classifier {classifier} not loaded: the model is headless" if
                     not getattr(model, "num_classes", 1) else
                     f"classifier {classifier} re-initialised for {model.num_classes} classes "
                     f"(the weights have {had})")
    if notes:
        warnings.warn(f"{name or 'model'}: {'; '.join(notes)}; the rest loaded from {described}",
                      PretrainedWarning, stacklevel=3)
    return skipped


KERAS_SUFFIXES = (".h5", ".hdf5")


def _locate(source, name: str | None, model: nn.Module | None = None) -> WeightsSource | str:
    """A named source's table row, or the local path of a file or (downloaded) URL."""
    if source is True:
        source = default_source(name or "")
    if source == "keras":  # keras.applications' own ImageNet file, cached as the others
        from .keras_families import keras_url
        return str(fetch_url(keras_url(name or "", model)))
    if not isinstance(source, (str, os.PathLike)):
        raise WeightsError(f"pretrained must be a source name, a path, a URL or a state dict, "
                           f"got {type(source).__name__}")
    source = os.fspath(source)
    if is_named_source(source) and not os.path.exists(source):
        return resolve(name or "", source)
    if source.startswith(("http://", "https://")):
        return str(fetch_url(source))
    if os.path.exists(source) or os.sep in source or \
            source.endswith((".safetensors", ".pth", ".pt", ".bin", *KERAS_SUFFIXES)):
        return source
    raise WeightsError(f"unknown weights source {source!r} for {name or 'the model'}: give "
                       f"'torchvision', 'timm', 'keras', a URL or a .safetensors/.pth/.h5 file")
