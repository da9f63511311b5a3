"""The evolution of the block: each family's defining block, from the registered model's module.

Every block is drawn from the traced module of a registered model (so the picture is the code),
counted at the input it receives inside that model, and, where it replaced an earlier design,
set against that design built at the same widths from ``nn.Conv2d`` or the family's own block
class. Only the sentences are written by hand; every number is counted on the meta device.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..registry import create_model, model_card
from .counts import count_macs, count_params
from .draw import build_view, to_dot
from .graph import module_input_size, trace_module
from .meta import on_meta


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int


@dataclass(frozen=True)
class Comparison:
    """``ours`` against ``theirs``: what the block spends on a part, or saves against a rival."""

    text: str          # what is compared, with the widths read from the block
    ours_label: str
    ours: Cost
    theirs_label: str
    theirs: Cost
    share: bool = False  # ours is a part of theirs (a gate inside its block), not a rival

    @property
    def params_ratio(self) -> float:
        return self.ours.params / self.theirs.params

    @property
    def macs_ratio(self) -> float:
        return self.ours.macs / self.theirs.macs


Compare = Callable[[nn.Module, nn.Module, str, tuple], list[Comparison]]


@dataclass(frozen=True)
class BlockSpec:
    key: str
    title: str
    model: str
    path: str
    idea: str
    compare: Compare | None = None
    settings: dict = field(default_factory=dict)   # a keyword of the model the block needs


@dataclass
class BlockRow:
    key: str
    title: str
    model: str
    path: str
    cls: str
    year: int
    family: str
    idea: str
    settings: dict
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    cost: Cost
    comparisons: list[Comparison]
    dot: str


def cost(module: nn.Module, input_shape: tuple[int, ...]) -> Cost:
    """Parameters and MACs of ``module`` on one input of ``input_shape`` (C, H, W)."""
    return Cost(count_params(module), count_macs(module, tuple(input_shape)))


def _built(make: Callable[[], nn.Module]) -> nn.Module:
    with on_meta():
        return make().eval()


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _out_hw(conv: nn.Conv2d, shape: tuple) -> tuple[int, int]:
    return tuple((s + 2 * p - d * (k - 1) - 1) // st + 1 for s, p, d, k, st in
                 zip(shape[1:], conv.padding, conv.dilation, conv.kernel_size, conv.stride))


# --- what each block is set against -------------------------------------------------------

def _double_3x3_vs_5x5(model, block, path, shape) -> list[Comparison]:
    # The tower (a child of the block) that holds two 3×3 convs in a row.
    a, b = next(pair for tower in block.children() for pair in [
        [c for c in _convs(tower) if c.kernel_size == (3, 3) and c.groups == 1]] if len(pair) == 2)
    in_shape = module_input_size(model, _path_of(model, a), None)
    pair = _built(lambda: nn.Sequential(
        nn.Conv2d(a.in_channels, a.out_channels, 3, padding=1, bias=False),
        nn.Conv2d(b.in_channels, b.out_channels, 3, padding=1, bias=False)))
    five = _built(lambda: nn.Conv2d(a.in_channels, b.out_channels, 5, padding=2, bias=False))
    c = b.out_channels
    wide_shape = (c, *in_shape[1:])
    pair_c = _built(lambda: nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False),
                                          nn.Conv2d(c, c, 3, padding=1, bias=False)))
    five_c = _built(lambda: nn.Conv2d(c, c, 5, padding=2, bias=False))
    return [Comparison(
        f"its two stacked 3×3 convs ({a.in_channels}→{a.out_channels}→{b.out_channels}) see the "
        f"same 5×5 window as the one 5×5 conv they replace, at {_hw(in_shape)}",
        "two 3×3", cost(pair, in_shape), "one 5×5", cost(five, in_shape)),
        Comparison(f"the same at equal width, {c}→{c}",
                   "two 3×3", cost(pair_c, wide_shape), "one 5×5", cost(five_c, wide_shape))]


def _bottleneck_vs_basic(model, block, path, shape) -> list[Comparison]:
    basic_cls = type(_built(lambda: create_model("resnet18")).stages[0].blocks[0])
    c = shape[0]
    basic = _built(lambda: basic_cls(c, c))
    return [Comparison(f"at equal width: {c} channels in and out at {_hw(shape)}, against "
                       f"ResNet-18/34's basic block of two 3×3 convs",
                       "bottleneck", cost(block, shape), "basic block", cost(basic, shape))]


def _grouped_vs_dense(model, block, path, shape) -> list[Comparison]:
    conv = next(c for c in _convs(block) if c.groups > 1)
    in_shape = module_input_size(model, _path_of(model, conv), None)
    dense = _built(lambda: nn.Conv2d(conv.in_channels, conv.out_channels, 3, conv.stride, 1,
                                     bias=False))
    grouped = _built(lambda: nn.Conv2d(conv.in_channels, conv.out_channels, 3, conv.stride, 1,
                                       groups=conv.groups, bias=False))
    return [Comparison(f"its 3×3 in {conv.groups} groups against one ungrouped 3×3 of the same "
                       f"{conv.in_channels} channels at {_hw(in_shape)}",
                       f"{conv.groups} groups", cost(grouped, in_shape), "ungrouped",
                       cost(dense, in_shape))]


def _dilated_vs_dense(model, block, path, shape) -> list[Comparison]:
    conv = next(c for c in _convs(block) if c.dilation[0] > 1)
    d = conv.dilation[0]
    reach = 2 * d + 1
    in_shape = module_input_size(model, _path_of(model, conv), None)
    dilated = _built(lambda: nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=d,
                                       dilation=d, bias=False))
    dense = _built(lambda: nn.Conv2d(conv.in_channels, conv.out_channels, reach,
                                     padding=reach // 2, bias=False))
    return [Comparison(f"a 3×3 conv at dilation {d} spans {reach}×{reach} pixels, as a dense "
                       f"{reach}×{reach} conv does ({conv.in_channels} channels at "
                       f"{_hw(in_shape)}), and the map keeps its size with no stride",
                       f"3×3 dilated {d}", cost(dilated, in_shape), f"dense {reach}×{reach}",
                       cost(dense, in_shape))]


def _separable_vs_full(model, block, path, shape) -> list[Comparison]:
    dw = next(c for c in _convs(block) if c.groups > 1)
    out = _convs(block)[-1].out_channels
    full = _built(lambda: nn.Conv2d(shape[0], out, 3, dw.stride, 1, bias=False))
    sep = _built(lambda: nn.Sequential(
        nn.Conv2d(shape[0], shape[0], 3, dw.stride, 1, groups=shape[0], bias=False),
        nn.Conv2d(shape[0], out, 1, bias=False)))
    return [Comparison(f"a depthwise 3×3 then a 1×1 against one full 3×3 conv, {shape[0]}→{out} "
                       f"channels at {_hw(shape)}, stride {dw.stride[0]}",
                       "depthwise-separable", cost(sep, shape), "full 3×3", cost(full, shape))]


def _depthwise_in_expanded(model, block, path, shape) -> list[Comparison]:
    dw = next(c for c in _convs(block) if c.groups > 1)
    in_shape = module_input_size(model, _path_of(model, dw), None)
    c = dw.in_channels
    full = _built(lambda: nn.Conv2d(c, c, 3, dw.stride, 1, bias=False))
    return [Comparison(f"the whole block against one full 3×3 conv at its expanded width "
                       f"({c} channels at {_hw(in_shape)}): the expansion only pays because "
                       f"the 3×3 is depthwise",
                       "inverted residual", cost(block, shape), f"full 3×3 at {c}",
                       cost(full, in_shape))]


def _part(name: str, attr: str) -> Compare:
    """What the block spends on one of its parts (an attention gate, an offset branch)."""
    def compare(model, block, path, shape) -> list[Comparison]:
        sub = f"{path}.{attr}"
        part = model.get_submodule(sub)
        part_shape = module_input_size(model, sub, None)
        return [Comparison(f"what the {name} costs inside this block",
                           name, cost(part, part_shape), "whole block", cost(block, shape),
                           share=True)]
    return compare


def _gate_vs_se(model, block, path, shape) -> list[Comparison]:
    out = _part("CBAM gate", "attn")(model, block, path, shape)
    se_model = _built(lambda: create_model("seresnet50"))
    se_shape = module_input_size(se_model, f"{path}.attn", None)
    out.append(Comparison("CBAM's channel-and-spatial gate against SENet's channel gate at the "
                          "same place", "CBAM gate", out[0].ours, "SE gate",
                          cost(se_model.get_submodule(f"{path}.attn"), se_shape)))
    return out


def _after_block(prev: str) -> Compare:
    def compare(model, block, path, shape) -> list[Comparison]:
        host_path = path.rsplit(".", 1)[0]
        host = model.get_submodule(host_path)
        host_shape = module_input_size(model, host_path, None)
        whole = cost(host, host_shape)
        mine = cost(block, shape)
        return [Comparison(f"what it adds to the {prev} it follows ({_hw(shape)})",
                           "non-local block", mine, f"{prev} with it", whole, share=True)]
    return compare


def _offsets(model, block, path, shape) -> list[Comparison]:
    # The deformable conv is not an nn.Conv2d: its only Conv2d is the one predicting offsets.
    offset = _convs(block)[0]
    out = block.conv.out_channels
    plain = _built(lambda: nn.Conv2d(shape[0], out, 3, offset.stride, 1, bias=False))
    return [Comparison(f"the deformable 3×3 (with the conv that predicts its "
                       f"{offset.out_channels} offset and mask channels) against a plain 3×3 of "
                       f"the same {shape[0]} channels at {_hw(shape)}",
                       "deformable 3×3", cost(block, shape), "plain 3×3", cost(plain, shape))]


def _fused_vs_mbconv(model, block, path, shape) -> list[Comparison]:
    exp = _convs(block)[0]
    c, mid = exp.in_channels, exp.out_channels
    fused = _built(lambda: nn.Conv2d(c, mid, 3, exp.stride, 1, bias=False))
    split = _built(lambda: nn.Sequential(nn.Conv2d(c, mid, 1, bias=False),
                                         nn.Conv2d(mid, mid, 3, exp.stride, 1, groups=mid,
                                                   bias=False)))
    return [Comparison(f"its one full 3×3 expansion ({c}→{mid}) against MBConv's 1×1 expansion "
                       f"and depthwise 3×3 at {_hw(shape)}: more MACs, but dense ones that "
                       f"accelerators run near their peak",
                       "fused 3×3", cost(fused, shape), "1×1 + depthwise 3×3",
                       cost(split, shape))]


def _path_of(model: nn.Module, target: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is target)


def _hw(shape: tuple) -> str:
    return "×".join(map(str, shape[-2:]))


# In the order the papers came; each is the registered model's own module.
BLOCKS: tuple[BlockSpec, ...] = (
    BlockSpec("inception", "Inception module", "googlenet", "blocks.inception_3a",
              "Four towers of 1×1, 3×3, 5×5 convs and a pool look at the same map at several "
              "scales, and 1×1 convs shrink the channels before the costly ones.",
              settings=dict(five="5x5")),
    BlockSpec("inception-bn", "Inception module with two 3×3s", "bn_inception",
              "blocks.inception_3a",
              "BN-Inception replaces each 5×5 by two stacked 3×3 convs, cheaper for the same "
              "window and one more non-linearity deep.", _double_3x3_vs_5x5),
    BlockSpec("basic", "Residual basic block", "resnet18", "stages.0.blocks.0",
              "Two 3×3 convs learn only a residual that is added to the input, so a deep stack "
              "can start as the identity and gradients reach the first layers."),
    BlockSpec("bottleneck", "Residual bottleneck", "resnet50", "stages.0.blocks.1",
              "A 1×1 conv narrows the channels four times, the 3×3 works on the narrow map, a "
              "1×1 widens it again: deep networks at the cost of shallow ones.",
              _bottleneck_vs_basic),
    BlockSpec("grouped", "Grouped bottleneck (ResNeXt)", "resnext50_32x4d", "stages.0.blocks.1",
              "The 3×3 is split into 32 parallel groups (cardinality), so the block can be "
              "wider for the same cost, and width in groups beats depth or width alone.",
              _grouped_vs_dense),
    BlockSpec("dense", "Dense block", "densenet121", "stages.0.block",
              "Every layer takes the concatenation of all the maps before it and adds 32 new "
              "channels (the growth rate): features are reused, not relearned."),
    BlockSpec("transition", "Dense transition", "densenet121", "stages.1.transition",
              "Between dense blocks a 1×1 conv halves the channels and a 2×2 average pool "
              "halves the map, keeping the concatenations affordable."),
    BlockSpec("dilated", "Dilated residual block (DRN)", "drn_c_26", "stages.5.blocks.0",
              "Instead of striding, the last stages dilate their 3×3 convs, so the map stays "
              "28×28 for dense prediction while the receptive field grows as before.",
              _dilated_vs_dense),
    BlockSpec("separable", "Depthwise-separable conv (MobileNet)", "mobilenet_v1",
              "stages.1.blocks.0",
              "A 3×3 conv per channel (depthwise) then a 1×1 that mixes channels replaces a "
              "full 3×3, for about 1/9 of its multiply-adds.", _separable_vs_full),
    BlockSpec("se", "Squeeze-and-excitation (SENet)", "seresnet50", "stages.0.blocks.1",
              "A global average pool and two small 1×1 convs compute one weight per channel "
              "that rescales the block's output: attention over channels.",
              _part("SE gate", "attn")),
    BlockSpec("nonlocal", "Non-local block", "nl_resnet50", "stages.1.blocks.1.nl",
              "Every position attends to every other (a softmax over all pairs of positions), "
              "so one layer sees the whole image; a residual adds the result back.",
              _after_block("bottleneck")),
    BlockSpec("cbam", "CBAM", "cbam_resnet50", "stages.0.blocks.1",
              "After SE's channel gate a 7×7 conv over pooled channel statistics gates each "
              "position too: where to look, as well as what.", _gate_vs_se),
    BlockSpec("deformable", "Deformable conv (DCNv2)", "dcn_resnet50", "stages.1.blocks.1.conv2",
              "A side conv predicts for every output pixel where each of the 9 taps should "
              "sample (and how much it counts), so the kernel's shape follows the object.",
              _offsets),
    BlockSpec("inverted", "Inverted residual (MobileNetV2)", "mobilenet_v2", "stages.1.blocks.1",
              "Expand the narrow input 6×, filter depthwise, project back linearly: the skip "
              "joins the thin ends, the opposite of the bottleneck.", _depthwise_in_expanded),
    BlockSpec("mbconv", "MBConv with SE (EfficientNet)", "efficientnet_b0", "stages.2.blocks.1",
              "MobileNetV2's inverted residual with an SE gate on the expanded channels and "
              "SiLU activations, the block EfficientNet scales.", _part("SE gate", "se")),
    BlockSpec("fused", "Fused-MBConv (EfficientNetV2)", "efficientnet_v2_s", "stages.1.blocks.1",
              "In the early, high-resolution stages one full 3×3 replaces the 1×1 expansion and "
              "the depthwise 3×3, which run far below a chip's peak.", _fused_vs_mbconv),
)


def measure_block(spec: BlockSpec) -> BlockRow:
    """One block: its diagram (DOT), its cost at the input it gets in the model, comparisons."""
    with on_meta():
        model = create_model(spec.model, **spec.settings)
    card = model_card(spec.model)
    graph = trace_module(model, spec.path)
    block = model.get_submodule(spec.path)
    shape = graph.input_size
    out = next((n.shape for n in reversed(graph.nodes) if n.op == "output"), None)
    variant = "".join(f", {k}={v!r}" for k, v in spec.settings.items())
    dot = to_dot(build_view(graph), f"{spec.model}{variant} · {spec.path}: {type(block).__name__}"
                                    f"  ({'×'.join(map(str, shape))} in)")
    comparisons = spec.compare(model, block, spec.path, shape) if spec.compare else []
    return BlockRow(spec.key, spec.title, spec.model, spec.path, type(block).__name__, card.year,
                    card.family, spec.idea, dict(spec.settings), tuple(shape), out,
                    cost(block, shape), comparisons, dot)


def evolution_of_the_block(specs: tuple[BlockSpec, ...] = BLOCKS) -> list[BlockRow]:
    """Every block of ``specs``, in the order of its paper's year."""
    order = {s.key: i for i, s in enumerate(specs)}
    with torch.no_grad():
        rows = [measure_block(s) for s in specs]
    return sorted(rows, key=lambda r: (r.year, order[r.key]))
