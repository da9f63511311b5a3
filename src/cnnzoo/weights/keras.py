"""Keras application weights, read with h5py alone (no TensorFlow, no Keras at run time).

Two file formats:

- the legacy weights-only ``.h5`` that ``keras.applications`` downloads: one group per layer,
  named as the layer (``conv_dw_3_bn``), its ``weight_names`` in Keras's legacy order;
- Keras 3's ``.weights.h5``: layers under ``layers/<class>_<n>/vars/<i>``, named by class and
  creation order only, so they are matched by kind and order.

A family's *plan* (``keras_families.py``) lists our modules in Keras's layer order with the
Keras layer each takes its weights from. Kernels are transposed to torch's layout, BatchNorm gets Keras's epsilon, and what
Keras does differently is set on the model, not hidden in it:

- TF's 'same' padding pads a stride-2 conv (0, 1) on an even input where torch pads (1, 1): those
  convs become :class:`TfSameConv2d` (an ``nn.Conv2d`` that pads as TF does);
- Keras's 3x3 average pools in Inception branches leave padding out of the mean:
  ``count_include_pad=False``;
- the preprocessing (``caffe``: BGR, mean subtracted, no scaling -- the first conv is flipped to
  take RGB; ``tf``: [-1, 1]; ``torch``: ImageNet mean and std; EfficientNet's normalisation layer
  inside the model) becomes ``default_cfg`` mean and std for images scaled to [0, 1].
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from .keras_families import family

CAFFE_MEAN_RGB = (123.68 / 255, 116.779 / 255, 103.939 / 255)
MODES = {  # Keras preprocess_input mode -> (mean, std) for images in [0, 1]
    "tf": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "torch": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "caffe": (CAFFE_MEAN_RGB, (1 / 255, 1 / 255, 1 / 255)),
    "tf128": ((128 / 255,) * 3, (128 / 255,) * 3),  # EfficientNetV2's x / 128 - 1, a layer
}


class TfSameConv2d(nn.Conv2d):
    """``nn.Conv2d`` padded as TensorFlow's 'same': the odd pixel of padding goes after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        x = F.pad(x, (*pads[1], *pads[0]))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


@dataclass
class KerasWeights:
    """The arrays of a Keras file: by layer name (legacy .h5) and by kind in layer order."""

    named: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    by_kind: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    legacy: bool = True


_KIND_OF_CLASS = {"conv2d": "conv", "depthwise_conv2d": "dw", "batch_normalization": "bn",
                  "dense": "dense", "normalization": "norm"}
_VAR_NAMES = {"conv": ("kernel", "bias"), "dw": ("kernel", "bias"), "dense": ("kernel", "bias"),
              "norm": ("mean", "variance", "count")}


def read_keras(path: str | os.PathLike) -> KerasWeights:
    """Every layer's arrays from a legacy ``.h5`` or a Keras 3 ``.weights.h5`` file."""
    try:
        import h5py
    except ImportError:
        raise WeightsError("reading Keras weights needs h5py: pip install h5py") from None
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" in root.attrs:
                return _read_legacy(root)
            if "layers" in root:
                return _read_keras3(root["layers"])
    except OSError as exc:
        raise WeightsError(f"cannot read {path} as HDF5: {exc}") from None
    raise WeightsError(f"{path} is an HDF5 file but not Keras weights")


def _text(v) -> str:
    return v.decode("utf8") if isinstance(v, bytes) else str(v)


def _read_legacy(root) -> KerasWeights:
    out = KerasWeights()
    for name in (_text(n) for n in root.attrs["layer_names"]):
        group = root[name]
        names = [_text(w) for w in group.attrs.get("weight_names", [])]
        if names:
            # 'conv1/kernel:0' (Keras 2) or 'conv1/kernel' (Keras 3): the last part names it.
            out.named[layer_key(name)] = {w.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[w])
                               for w in names}
    return out


def layer_key(name: str) -> str:
    """A layer name as Keras 2 and 3 both spell it: 'Conv_1/BatchNorm' (Keras 2's MobileNetV3)
    is Keras 3's 'conv_1_bn', 'conv1/bn' (Keras 2's DenseNet) its 'conv1_bn'."""
    return name.replace("/BatchNorm", "_bn").replace("/", "_").lower()


def _read_keras3(layers) -> KerasWeights:
    out = KerasWeights(legacy=False)
    found = []
    for key in layers:
        m = re.fullmatch(r"([a-z0-9_]+?)(?:_(\d+))?", key)
        kind = _KIND_OF_CLASS.get(m.group(1)) if m else None
        if kind is None or "vars" not in layers[key]:
            continue
        arrays = [np.asarray(layers[key]["vars"][str(i)]) for i in range(len(layers[key]["vars"]))]
        found.append((kind, int(m.group(2) or 0), _by_position(kind, arrays)))
    for kind, _, arrays in sorted(found, key=lambda t: (t[0], t[1])):
        out.by_kind.setdefault(kind, []).append(arrays)
    return out


def _by_position(kind: str, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    if kind == "bn":  # trainable first (gamma if scaled, beta if centred), then the statistics
        names = ("gamma", "beta", "moving_mean", "moving_variance")[4 - len(arrays):]
        return dict(zip(names, arrays))
    return dict(zip(_VAR_NAMES[kind], arrays))


# -- converting arrays to our tensors -------------------------------------------------------------

def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).float()


def _kernel(w: dict) -> np.ndarray:
    return w.get("kernel", w.get("depthwise_kernel"))


def convert(kind: str, w: dict, module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """One Keras layer's arrays as our module's state, named under ``prefix``."""
    out: dict[str, torch.Tensor] = {}
    if kind in ("conv", "dw"):
        k = _kernel(w)
        out["weight"] = _t(k.transpose(3, 2, 0, 1) if kind == "conv" else
                           k.transpose(2, 3, 0, 1).reshape(-1, 1, *k.shape[:2]))
    elif kind in ("dense", "dense_conv"):
        k = _kernel(w)
        k = k.reshape(-1, k.shape[-1])  # a 1x1 conv classifier (MobileNet's conv_preds) too
        fc_in = module.in_features
        if k.shape[0] != fc_in:
            raise WeightsError(f"{prefix}: Keras has {k.shape[0]} inputs, ours {fc_in}")
        out["weight"] = _t(k.T)
    elif kind == "dense_hwc":
        # Keras flattens VGG's last 7x7 map as (H, W, C), torch as (C, H, W).
        k = _kernel(w)
        c = module.in_features // 49
        out["weight"] = _t(k.reshape(7, 7, c, -1).transpose(3, 2, 0, 1).reshape(-1, 49 * c))
    elif kind == "bn":
        n = w["moving_mean"].shape[0]
        out["weight"] = _t(w["gamma"]) if "gamma" in w else torch.ones(n)
        out["bias"] = _t(w["beta"]) if "beta" in w else torch.zeros(n)
        out["running_mean"] = _t(w["moving_mean"])
        out["running_var"] = _t(w["moving_variance"])
    if "bias" in w and kind != "bn":
        out["bias"] = _t(w["bias"])
    elif kind != "bn" and getattr(module, "bias", None) is not None:
        out["bias"] = torch.zeros(module.bias.shape)  # Keras had none where ours has one
    return {f"{prefix}.{k}": v for k, v in out.items()}


def keras_state(model: nn.Module, name: str, weights: KerasWeights):
    """Our state dict from a Keras file, by the family's plan, and the (mean, variance) of
    the normalisation layer inside the model where Keras has one (EfficientNet), else None."""
    fam = family(name)
    plan = fam.plan(model)
    queues = {k: list(v) for k, v in weights.by_kind.items()}
    if fam.auto_names and not weights.legacy:
        raise WeightsError(f"{name}: a Keras 3 .weights.h5 file names its layers by class and "
                           f"Keras's depth order, which interleaves Inception's branches; save "
                           f"the legacy .h5 instead (the format keras.applications downloads)")
    if weights.legacy and fam.auto_names:
        queues = _auto_named(weights.named)
    state: dict[str, torch.Tensor] = {}
    for prefix, kind, keras_name in plan:
        if prefix.startswith("head.") and getattr(model, "num_classes", 1) == 0:
            continue
        module = model.get_submodule(prefix)
        if weights.legacy and keras_name is not None:
            w = weights.named.get(layer_key(keras_name))
        else:
            # Keras 3 files hold layers by class in Keras's order, the order of the plan.
            queue = queues.get({"dense_hwc": "dense", "dense_conv": "conv"}.get(kind, kind), [])
            w = queue.pop(0) if queue else None
        if w is None:
            raise WeightsError(f"the Keras file has no layer {keras_name or kind} for our "
                               f"{prefix}: it holds another architecture than {name}")
        state.update(convert(kind, w, module, prefix))
    norm = weights.named.get("normalization") or (weights.by_kind.get("norm") or [None])[0]
    if norm is not None:
        norm = (_t(norm["mean"].reshape(-1)), _t(norm["variance"].reshape(-1)))
    return state, norm


def _auto_named(named: dict) -> dict[str, list]:
    """Layers Keras named ``conv2d_N`` / ``batch_normalization_N``, per kind, in creation order."""
    out: dict[str, list] = {}
    for kind, stem in (("conv", "conv2d"), ("bn", "batch_normalization")):
        found = [(int(m.group(1) or 0), w) for n, w in named.items()
                 if (m := re.fullmatch(rf"{stem}(?:_(\d+))?", n))]
        out[kind] = [w for _, w in sorted(found, key=lambda t: t[0])]
    return out


def load_keras(model: nn.Module, path: str | os.PathLike, name: str) -> dict[str, torch.Tensor]:
    """``model``'s state from a Keras file, after setting what Keras computes differently
    (module docstring); returns the state for the shared loader to load."""
    fam = family(name)
    state, norm = keras_state(model, name, read_keras(path))
    apply_fixups(model, {"same_padding": fam.same_padding,
                         "exclude_pad_pools": fam.exclude_pad_pools})
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = fam.bn_eps
    cfg = model.default_cfg
    first = f"{cfg.first_conv}.weight"
    if fam.mode == "caffe" and first in state and state[first].shape[1] == 3:
        state[first] = state[first].flip(1)  # Keras's caffe mode feeds BGR
    if fam.mode == "model":
        mean, var = norm if norm is not None else (torch.zeros(3), torch.ones(3))
        std = var.sqrt()
        if torch.allclose(var, torch.tensor(MODES["torch"][1]), atol=1e-6):
            # Keras's ImageNet EfficientNets hold the std where the variance belongs; the model
            # Keras builds for them divides once more, by sqrt(std), so the std is what applies.
            std = var
        mean_std = (tuple(mean.tolist()), tuple(std.tolist()))
    else:
        mean_std = MODES[fam.mode]
    extra = {**cfg.extra, "keras": {"file": str(Path(path).name), "mode": fam.mode,
                                    "same_padding": fam.same_padding,
                                    "exclude_pad_pools": fam.exclude_pad_pools}}
    changes = dict(extra=extra, interpolation="bilinear")
    if cfg.input_size[0] == 3:
        changes.update(mean=mean_std[0], std=mean_std[1])
    model.default_cfg = cfg.replace(**changes)
    return state


def apply_fixups(model: nn.Module, keras: dict) -> None:
    """TF padding and pools as the Keras file's family needs them (also on a saved model)."""
    if keras.get("same_padding"):
        for name, m in list(model.named_modules()):
            if type(m) is not TfSameConv2d and isinstance(m, nn.Conv2d) and \
                    max(m.stride) > 1 and max(m.kernel_size) > 1:
                _swap_conv(model, name, m)
    if keras.get("exclude_pad_pools"):
        for m in model.modules():
            if isinstance(m, nn.AvgPool2d) and m.stride in (1, (1, 1)):
                m.count_include_pad = False


def _swap_conv(model: nn.Module, name: str, conv: nn.Conv2d) -> None:
    new = TfSameConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                       0, conv.dilation, conv.groups, conv.bias is not None,
                       device=conv.weight.device, dtype=conv.weight.dtype)
    new.load_state_dict(conv.state_dict())
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
