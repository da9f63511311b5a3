"""Which Keras layer each of our modules takes its weights from, family by family.

A family's *plan* lists our modules in Keras's layer order (Keras sorts a functional model's
layers by depth, so a ResNet block's shortcut conv sits beside its last 1x1), each with the Keras
layer name it reads in a legacy ``.h5`` (None where Keras numbers its layers, as InceptionV3's
``conv2d_N``: those are taken in creation order). ``keras.py`` reads the files and converts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import WeightsError

KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Family:
    plan: Callable[[nn.Module], list]  # -> [(our prefix, kind, Keras name or None)], Keras's order
    mode: str  # preprocessing: a key of MODES, or 'model' (EfficientNet's normalisation layer)
    bn_eps: float = 1e-3
    same_padding: bool = False  # stride-2 convs padded as TF 'same'
    exclude_pad_pools: bool = False  # 3x3 average pools leave padding out of the mean
    auto_names: bool = False  # Keras names its layers conv2d_N: matched in creation order


def _blocks(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules() if re.fullmatch(r"stages\.\d+\.blocks\.\d+", n)]


def _cna(prefix: str, keras: str, bn: str, kind: str = "conv") -> list:
    return [(f"{prefix}.conv", kind, keras), (f"{prefix}.bn", "bn", bn)]


def _plan_mobilenet_v1(model):
    plan = _cna("stem", "conv1", "conv1_bn")
    for i, b in enumerate(_blocks(model), 1):
        plan += _cna(f"{b}.conv_dw", f"conv_dw_{i}", f"conv_dw_{i}_bn", "dw")
        plan += _cna(f"{b}.conv_pw", f"conv_pw_{i}", f"conv_pw_{i}_bn")
    return plan + [("head.fc", "dense_conv", "conv_preds")]


def _plan_mobilenet_v2(model):
    plan = _cna("stem", "Conv1", "bn_Conv1")
    for i, b in enumerate(_blocks(model)):
        k = f"block_{i}_" if i else "expanded_conv_"
        if i:
            plan += _cna(f"{b}.conv_pw", f"{k}expand", f"{k}expand_BN")
        plan += _cna(f"{b}.conv_dw", f"{k}depthwise", f"{k}depthwise_BN", "dw")
        plan += _cna(f"{b}.conv_pwl", f"{k}project", f"{k}project_BN")
    return plan + _cna("conv_head", "Conv_1", "Conv_1_bn") + [("head.fc", "dense", "predictions")]


def _plan_resnet_v1(model):
    plan = _cna("stem", "conv1_conv", "conv1_bn")
    for name, _ in model.named_modules():
        m = re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)", name)
        if not m:
            continue
        k = f"conv{int(m.group(1)) + 2}_block{int(m.group(2)) + 1}_"
        units = [(f"{name}.conv{i}", f"{k}{i}_") for i in (1, 2, 3)]
        if hasattr(model.get_submodule(name).downsample, "conv"):
            # Keras orders layers by depth: the shortcut's conv and BN sit beside the 3rd 1x1's.
            units.insert(2, (f"{name}.downsample", f"{k}0_"))
        for prefix, keras in units:
            plan += _cna(prefix, f"{keras}conv", f"{keras}bn")
    return plan + [("head.fc", "dense", "predictions")]


def _plan_densenet(model):
    plan = [("stem.conv", "conv", "conv1_conv"), ("stem.norm", "bn", "conv1_bn")]
    for name, module in model.named_modules():
        m = re.fullmatch(r"stages\.(\d+)\.(block\.layer(\d+)|transition)", name)
        if not m:
            continue
        s = int(m.group(1))
        if m.group(2) == "transition":
            plan += [(f"{name}.norm", "bn", f"pool{s + 1}_bn"),
                     (f"{name}.conv", "conv", f"pool{s + 1}_conv")]
        else:
            k = f"conv{s + 2}_block{m.group(3)}_"
            plan += [(f"{name}.norm1", "bn", f"{k}0_bn"), (f"{name}.conv1", "conv", f"{k}1_conv"),
                     (f"{name}.norm2", "bn", f"{k}1_bn"), (f"{name}.conv2", "conv", f"{k}2_conv")]
    return plan + [("final_norm.norm", "bn", "bn"), ("head.fc", "dense", "predictions")]


def _plan_vgg(model):
    plan = []
    for name, _ in model.named_modules():
        m = re.fullmatch(r"stages\.(\d+)\.conv(\d+)", name)
        if m:
            plan.append((f"{name}.conv", "conv", f"block{int(m.group(1)) + 1}_conv{m.group(2)}"))
    return plan + [("head.fc1", "dense_hwc", "fc1"), ("head.fc2", "dense", "fc2"),
                   ("head.fc", "dense", "predictions")]


def _plan_auto(model):
    """Inception: every conv and BN in our module order, which is Keras's creation order."""
    plan = []
    for name, m in model.named_modules():
        if name.startswith("head") or name.startswith("aux"):
            continue
        if isinstance(m, nn.Conv2d):
            plan.append((name, "conv", None))
        elif isinstance(m, nn.BatchNorm2d):
            plan.append((name, "bn", None))
    return plan + [("head.fc", "dense", "predictions")]


def _plan_mobilenet_v3(model):
    plan = _cna("stem", "conv", "conv_bn")
    for i, b in enumerate(_blocks(model)):
        k = f"expanded_conv_{i}_" if i else "expanded_conv_"
        block = model.get_submodule(b)
        if isinstance(getattr(block.conv_pw, "conv", None), nn.Conv2d):
            plan += _cna(f"{b}.conv_pw", f"{k}expand", f"{k}expand_bn")
        plan += _cna(f"{b}.conv_dw", f"{k}depthwise", f"{k}depthwise_bn", "dw")
        if hasattr(block.se, "fc1"):
            plan += [(f"{b}.se.fc1", "conv", f"{k}squeeze_excite_conv"),
                     (f"{b}.se.fc2", "conv", f"{k}squeeze_excite_conv_1")]
        plan += _cna(f"{b}.conv_pwl", f"{k}project", f"{k}project_bn")
    # Keras's head is two 1x1 convs after the pooling; ours two Linear layers.
    return plan + _cna("conv_head", "conv_1", "conv_1_bn") + [
        ("head.fc1", "dense_conv", "conv_2"), ("head.fc", "dense_conv", "logits")]


def _plan_efficientnet(model):
    plan = _cna("stem", "stem_conv", "stem_bn")
    for name, block in model.named_modules():
        m = re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)", name)
        if not m:
            continue
        k = f"block{int(m.group(1)) + 1}{chr(ord('a') + int(m.group(2)))}_"
        if hasattr(block, "conv_pw") and isinstance(getattr(block.conv_pw, "conv", None),
                                                     nn.Conv2d):
            plan += _cna(f"{name}.conv_pw", f"{k}expand_conv", f"{k}expand_bn")
        plan += _cna(f"{name}.conv_dw", f"{k}dwconv", f"{k}bn", "dw")
        plan += [(f"{name}.se.fc1", "conv", f"{k}se_reduce"),
                 (f"{name}.se.fc2", "conv", f"{k}se_expand")]
        plan += _cna(f"{name}.conv_pwl", f"{k}project_conv", f"{k}project_bn")
    return plan + _cna("conv_head", "top_conv", "top_bn") + [("head.fc", "dense", "predictions")]


def _plan_efficientnet_v2(model):
    plan = _cna("stem", "stem_conv", "stem_bn")
    for name, block in model.named_modules():
        m = re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)", name)
        if not m:
            continue
        k = f"block{int(m.group(1)) + 1}{chr(ord('a') + int(m.group(2)))}_"
        fused = hasattr(block, "conv_exp") and isinstance(getattr(block.conv_exp, "conv", None),
                                                          nn.Conv2d)
        has_pwl = isinstance(getattr(block.conv_pwl, "conv", None), nn.Conv2d)
        if fused:  # Keras names a fused block's only conv 'project' when it does not expand
            plan += _cna(f"{name}.conv_exp", f"{k}expand_conv" if has_pwl else f"{k}project_conv",
                         f"{k}expand_bn" if has_pwl else f"{k}project_bn")
        else:
            if isinstance(getattr(block.conv_pw, "conv", None), nn.Conv2d):
                plan += _cna(f"{name}.conv_pw", f"{k}expand_conv", f"{k}expand_bn")
            plan += _cna(f"{name}.conv_dw", f"{k}dwconv2", f"{k}bn", "dw")
        if hasattr(block.se, "fc1"):
            plan += [(f"{name}.se.fc1", "conv", f"{k}se_reduce"),
                     (f"{name}.se.fc2", "conv", f"{k}se_expand")]
        if has_pwl:
            plan += _cna(f"{name}.conv_pwl", f"{k}project_conv", f"{k}project_bn")
    return plan + _cna("conv_head", "top_conv", "top_bn") + [("head.fc", "dense", "predictions")]


def _plan_inception_resnet_v2(model):
    """Keras names the residual 'up' convs and the last conv, and numbers the rest."""
    plan = []
    for name, m in model.named_modules():
        up = re.fullmatch(r"stages\.(block35|block17|block8)\.(\d+)\.up", name)
        if up:
            plan.append((name, "conv", f"{up.group(1)}_{int(up.group(2)) + 1}_conv"))
        elif name.startswith("stages.conv7b.") and isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
            plan.append((name, "conv", "conv_7b") if isinstance(m, nn.Conv2d) else
                        (name, "bn", "conv_7b_bn"))
        elif isinstance(m, nn.Conv2d) and not name.startswith("head"):
            plan.append((name, "conv", None))
        elif isinstance(m, nn.BatchNorm2d):
            plan.append((name, "bn", None))
    return plan + [("head.fc", "dense", "predictions")]


FAMILIES: dict[str, Family] = {
    **{n: Family(_plan_mobilenet_v1, "tf", same_padding=True)
       for n in ("mobilenet_v1", "mobilenet_v1_075", "mobilenet_v1_050", "mobilenet_v1_025")},
    "mobilenet_v2": Family(_plan_mobilenet_v2, "tf", same_padding=True),
    # Keras rescales to [-1, 1] inside MobileNetV3: 'tf' mode as a layer.
    "mobilenet_v3_small": Family(_plan_mobilenet_v3, "tf", same_padding=True),
    "mobilenet_v3_large": Family(_plan_mobilenet_v3, "tf", same_padding=True),
    **{f"resnet{d}_v1": Family(_plan_resnet_v1, "caffe", bn_eps=1.001e-5)
       for d in (50, 101, 152)},
    **{f"densenet{d}": Family(_plan_densenet, "torch", bn_eps=1.001e-5) for d in (121, 169, 201)},
    "vgg16": Family(_plan_vgg, "caffe"),
    "vgg19": Family(_plan_vgg, "caffe"),
    "inception_v3": Family(_plan_auto, "tf", exclude_pad_pools=True, auto_names=True),
    **{f"efficientnet_b{i}": Family(_plan_efficientnet, "model", same_padding=True)
       for i in range(8)},
    **{f"efficientnet_v2_{s}": Family(_plan_efficientnet_v2, "tf128", same_padding=True)
       for s in "sml"},
    "inception_resnet_v2": Family(_plan_inception_resnet_v2, "tf", exclude_pad_pools=True,
                                  auto_names=True),
}


def keras_url(name: str, model: nn.Module) -> str:
    """The file ``keras.applications`` downloads for ``name`` with ``weights='imagenet'``."""
    family(name)  # a model Keras has no weights for fails here, in one line
    if name.startswith("mobilenet_v1"):
        alpha = getattr(model, "model_args", {}).get("alpha") or \
            {"mobilenet_v1": 1.0}.get(name) or int(name.rsplit("_", 1)[-1]) / 100
        text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}.get(round(alpha, 2))
        if text is None:
            raise WeightsError(f"Keras has MobileNet weights for alpha 1.0, 0.75, 0.5 and 0.25 "
                               f"only, not {alpha}")
        return f"{KERAS_BASE}mobilenet/mobilenet_{text}_224_tf.h5"
    if name == "mobilenet_v2":
        return (f"{KERAS_BASE}mobilenet_v2/"
                f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5")
    if name.startswith("mobilenet_v3_"):
        return f"{KERAS_BASE}mobilenet_v3/weights_mobilenet_v3_{name[13:]}_224_1.0_float.h5"
    if name.startswith("efficientnet_b"):
        return f"https://storage.googleapis.com/keras-applications/efficientnet{name[-2:]}.h5"
    if name.startswith("efficientnet_v2_"):
        return f"{KERAS_BASE}efficientnet_v2/efficientnetv2-{name[-1]}.h5"
    folder = "resnet" if name.startswith("resnet") else \
        "densenet" if name.startswith("densenet") else name
    return f"{KERAS_BASE}{folder}/{name.removesuffix('_v1')}_weights_tf_dim_ordering_tf_kernels.h5"


def family(name: str | None) -> Family:
    fam = FAMILIES.get(name or "")
    if fam is None:
        raise WeightsError(f"no Keras weights map for {name}: Keras files load into "
                           f"{', '.join(sorted(FAMILIES))}")
    return fam
