"""Convolution variants: deformable (v1, v2), dilated ResNets (output_stride) and the DRN paper's network."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cnnzoo import create_model
from cnnzoo.inspect.counts import registered_param_count
from cnnzoo.layers.deform_conv import DeformConv2d
from cnnzoo.perf.precision import deform_in_float32
from cnnzoo.models.drn import DRNBlock


def _conv_twin(deform: DeformConv2d) -> nn.Conv2d:
    conv = nn.Conv2d(deform.in_channels, deform.out_channels, deform.kernel_size,
                     stride=deform.stride, padding=deform.padding, dilation=deform.dilation,
                     groups=deform.groups, bias=deform.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(deform.weight)
        if deform.bias is not None:
            conv.bias.copy_(deform.bias)
    return conv


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("stride,dilation,groups,bias", [(1, 1, 1, False), (2, 1, 4, True),
                                                         (1, 2, 2, False)])
def test_deformable_conv_with_zero_offsets_and_unit_masks_is_a_plain_conv(
        modulated, stride, dilation, groups, bias):
    torch.manual_seed(0)
    deform = DeformConv2d(8, 12, 3, stride=stride, dilation=dilation, groups=groups, bias=bias,
                          modulated=modulated)
    conv = _conv_twin(deform)
    x = torch.randn(2, 8, 11, 10)
    with torch.no_grad():
        expected = conv(x)
        h, w = expected.shape[-2:]
        offset = torch.zeros(2, 2 * 9, h, w)
        mask = torch.ones(2, 9, h, w) if modulated else None
        torch.testing.assert_close(deform.deform(x, offset, mask), expected, rtol=0, atol=1e-5)
        # Zero-initialised predictor (both papers): v1 starts as the conv, v2 at half of it
        # (modulation sigmoid(0) = 0.5, DCNv2 Section 3.1).
        fresh = deform(x)
    torch.testing.assert_close(fresh, expected * (0.5 if modulated else 1.0), rtol=0,
                               atol=1e-5)


def test_deformable_conv_moves_its_samples_when_offsets_are_not_zero():
    torch.manual_seed(0)
    deform = DeformConv2d(4, 4, 3, modulated=False)
    x = torch.randn(1, 4, 8, 8)
    # Every sample moved one pixel right (dx, the second of each (dy, dx) pair) equals the plain
    # conv of the image moved left, except in column 0, whose left samples are padding only there.
    offset = torch.zeros(1, 18, 8, 8)
    offset[:, 1::2] = 1.0
    shifted = torch.zeros_like(x)
    shifted[..., :-1] = x[..., 1:]
    with torch.no_grad():
        moved, expected = deform.deform(x, offset), _conv_twin(deform)(shifted)
    torch.testing.assert_close(moved[..., 1:], expected[..., 1:], rtol=0, atol=1e-5)
    assert not torch.allclose(moved, _conv_twin(deform)(x), atol=1e-3)
    assert deform.conv_offset.out_channels == 18
    assert DeformConv2d(4, 4, 3).conv_offset.out_channels == 27  # v2: 2*9 offsets + 9 masks


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_deformable_conv_runs_in_low_precision_on_a_cpu(dtype):
    # torchvision's CPU kernel has no bf16 (fp16 it has, in its own precision): the plain
    # layer fails there, and the perf pass's twin computes in float32 and hands back the
    # input's dtype, cast weights (optimize's bf16 model) and autocast alike.
    torch.manual_seed(0)
    deform = DeformConv2d(4, 6, 3, bias=True)
    nn.init.normal_(deform.conv_offset.weight, std=0.1)
    if dtype == torch.bfloat16:
        with torch.no_grad(), pytest.raises((RuntimeError, NotImplementedError)):
            copy.deepcopy(deform).to(dtype)(torch.randn(2, 4, 8, 8, dtype=dtype))
    assert deform_in_float32(deform) == 1
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        ref = deform(x)
        low = copy.deepcopy(deform).to(dtype)(x.to(dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = deform(x.to(torch.bfloat16))
    assert low.dtype == dtype and auto.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.02, atol=0.02 * ref.abs().max())
    torch.testing.assert_close(auto.float(), ref, rtol=0.02, atol=0.02 * ref.abs().max())


def test_dcn_resnet50_makes_the_3x3s_of_conv3_to_conv5_deformable_and_loads_resnet50():
    with torch.device("meta"):
        model = create_model("dcn_resnet50")
    kinds = [[isinstance(b.conv2.conv, DeformConv2d) for b in s.blocks] for s in model.stages]
    assert kinds == [[False] * 3, [True] * 4, [True] * 6, [True] * 3]
    # Only the offset/mask predictors are new (DCNv2 Section 3.1): width -> 3*9, 3x3, with bias.
    widths = [128] * 4 + [256] * 6 + [512] * 3
    extra = sum(w * 27 * 9 + 27 for w in widths)
    assert registered_param_count("dcn_resnet50") == registered_param_count("resnet50") + extra
    base = create_model("resnet50")
    dcn = create_model("dcn_resnet50")
    result = dcn.load_state_dict(base.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all("conv_offset" in k for k in result.missing_keys)
    assert torch.count_nonzero(dcn.stages[2].blocks[0].conv2.conv.conv_offset.weight) == 0


@pytest.mark.parametrize("output_stride,size", [(8, 28), (16, 14), (32, 7)])
def test_resnet50_output_stride_sets_the_final_map_and_keeps_the_parameters(output_stride, size):
    with torch.device("meta"):
        model = create_model("resnet50", output_stride=output_stride)
        out = model.forward_features(torch.empty(1, 3, 224, 224))
    assert out.shape == (1, 2048, size, size)
    assert model.feature_info[-1]["reduction"] == output_stride
    assert (registered_param_count("resnet50", output_stride=output_stride)
            == registered_param_count("resnet50"))


def test_output_stride_8_dilates_the_last_stages_and_runs():
    model = create_model("resnet50", output_stride=8)
    assert model.stages[2].blocks[1].conv2.conv.dilation == (2, 2)
    assert model.stages[3].blocks[1].conv2.conv.dilation == (4, 4)
    assert model.stages[3].blocks[0].conv2.conv.stride == (1, 1)
    # SENet-154's 3x3 projections stay 3x3 (dilated), so its weights still load.
    assert (registered_param_count("senet154", output_stride=8)
            == registered_param_count("senet154"))
    small = create_model("resnet18", output_stride=8, num_classes=2).eval()
    with torch.no_grad():
        assert small.forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == 8
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        create_model("resnet50", output_stride=4)


def test_drn_c_26_keeps_a_28x28_map_and_has_the_papers_size():
    with torch.device("meta"):
        model = create_model("drn_c_26")
        out = model.forward_features(torch.empty(1, 3, 224, 224))
    assert out.shape == (1, 512, 28, 28)
    # DRN-C-26: 21.1M parameters (authors' README, fyu/drn; the paper's Table 1 network).
    assert round(registered_param_count("drn_c_26") / 1e6, 1) == 21.1
    dilations = [s.blocks[0].conv1.conv.dilation[0] for s in model.stages]
    assert dilations == [1, 1, 1, 1, 2, 4, 2, 1]
    assert [s.blocks[0].residual for s in model.stages] == [True] * 6 + [False] * 2


def test_drn_degridding_blocks_have_no_shortcut():
    torch.manual_seed(0)
    block = DRNBlock(8, 8, dilation=2, residual=False).eval()
    x = torch.randn(1, 8, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(block.conv2(block.conv1(x))))
        residual = DRNBlock(8, 8, dilation=2).eval()
        residual.load_state_dict(block.state_dict())
        torch.testing.assert_close(residual(x), torch.relu(block.conv2(block.conv1(x)) + x))
