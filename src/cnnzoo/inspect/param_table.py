"""Parameter counts of every registered model at its defaults, for ``cnnzoo list``.

Counting builds the model (on the meta device: no weights, yet every module is constructed),
and for every registered model that was most of the time ``cnnzoo list`` took (5.5 -> 2.1 s
on 2 Xeon cores). So the counts are written down here, and ``tests/test_param_table.py``
checks each against a real build: a model changed or added without running
``python -m cnnzoo.inspect.param_table`` fails the suite. Anything not in the table (a model
registered by a user) is counted by building it.
"""
from __future__ import annotations

from pathlib import Path

PARAM_COUNTS: dict[str, int] = {
    "lenet5": 61706,
    "alexnet": 61100840,
    "alexnet_original": 60965224,
    "googlenet": 6624904,
    "vgg11": 132863336,
    "vgg11_bn": 132868840,
    "vgg13": 133047848,
    "vgg13_bn": 133053736,
    "vgg16": 138357544,
    "vgg16_bn": 138365992,
    "vgg19": 143667240,
    "vgg19_bn": 143678248,
    "bn_inception": 11194984,
    "inception_v3": 23834568,
    "resnet18": 11689512,
    "resnet34": 21797672,
    "resnet50": 25557032,
    "resnet50_v1": 25583592,
    "resnet101": 44549160,
    "resnet101_v1": 44601832,
    "resnet152": 60192808,
    "resnet152_v1": 60268520,
    "densenet121": 7978856,
    "densenet161": 28681000,
    "densenet169": 14149480,
    "densenet201": 20013928,
    "inception_resnet_v2": 55843464,
    "inception_v4": 42679816,
    "resnext50_32x4d": 25028904,
    "resnext101_32x8d": 88791336,
    "wide_resnet50_2": 68883240,
    "drn_c_26": 21126584,
    "mobilenet_v1": 4231976,
    "mobilenet_v1_025": 470072,
    "mobilenet_v1_050": 1331592,
    "mobilenet_v1_075": 2585560,
    "nl_resnet50": 32915496,
    "se_inception_v3": 25496188,
    "senet154": 115088984,
    "seresnet50": 28088024,
    "seresnet101": 49326872,
    "seresnext50_32x4d": 27559896,
    "cbam_resnet50": 28089624,
    "dcn_resnet50": 26428295,
    "mobilenet_v2": 3504872,
    "efficientnet_b0": 5288548,
    "efficientnet_b1": 7794184,
    "efficientnet_b2": 9109994,
    "efficientnet_b3": 12233232,
    "efficientnet_b4": 19341616,
    "efficientnet_b5": 30389784,
    "efficientnet_b6": 43040704,
    "efficientnet_b7": 66347960,
    "mobilenet_v3_large": 5483032,
    "mobilenet_v3_small": 2542856,
    "efficientnet_v2_l": 118515272,
    "efficientnet_v2_m": 54139356,
    "efficientnet_v2_s": 21458488,
}


def listed_param_count(name: str) -> int:
    """The default build's parameter count: from the table, or counted when not in it."""
    count = PARAM_COUNTS.get(name)
    if count is None:
        from .counts import registered_param_count
        count = registered_param_count(name)
    return count


def table_source() -> str:
    """This file's text with the table of every registered model, counted now."""
    from ..registry import list_models
    from .counts import registered_param_count
    rows = "".join(f'    "{n}": {registered_param_count(n)},\n' for n in list_models())
    text = Path(__file__).read_text()
    head, rest = text.split("PARAM_COUNTS: dict[str, int] = {\n", 1)
    return head + "PARAM_COUNTS: dict[str, int] = {\n" + rows + rest[rest.index("}\n"):]


if __name__ == "__main__":
    Path(__file__).write_text(table_source())
    print(f"wrote {Path(__file__)}")
