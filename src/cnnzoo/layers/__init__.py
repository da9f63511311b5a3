"""The shared building blocks every family is made of.

Families import from the submodules directly (``from ..layers.conv_norm_act import ConvNormAct``)
so adding a block never means editing a central list; the names below are the public ones.
"""
from .activations import activation_names, create_act, get_act_layer
from .attention import attn_names, create_attn, get_attn, register_attn
from .classifier import ClassifierHead, MLPHead
from .conv_norm_act import ConvNormAct
from .drop import DropPath, drop_path
from .helpers import make_divisible, round_repeats, same_padding
from .norm import get_norm_layer, lrn
from .squeeze_excite import SqueezeExcite

__all__ = [
    "ClassifierHead", "ConvNormAct", "DropPath", "MLPHead", "SqueezeExcite", "activation_names",
    "attn_names", "create_act", "create_attn", "drop_path", "get_act_layer", "get_attn",
    "get_norm_layer", "lrn", "make_divisible", "register_attn", "round_repeats", "same_padding",
]
