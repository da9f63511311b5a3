"""MobileNet V1/V2/V3 and the shared blocks of layers/mbconv.py."""
from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from cnnzoo import create_model
from cnnzoo.inspect.counts import count_params, registered_param_count
from cnnzoo.layers.conv_norm_act import ConvNormAct
from cnnzoo.layers.mbconv import DepthwiseSeparable, MBConv, build_stages
from cnnzoo.layers.squeeze_excite import SqueezeExcite


def test_depthwise_conv_example_of_the_seeds():
    # A 5x5 conv on an 8x8x1024 map: full 5*5*1024*1024 + 1024 biases, depthwise 5*5*1024 + 1024.
    x = torch.randn(1, 1024, 8, 8)
    full = ConvNormAct(1024, 1024, 5, norm_layer=None, act_layer=None)
    depthwise = ConvNormAct(1024, 1024, 5, groups=1024, norm_layer=None, act_layer=None)
    assert count_params(full) == 26_215_424 == 5 * 5 * 1024 * 1024 + 1024
    assert count_params(depthwise) == 26_624 == 5 * 5 * 1024 + 1024
    assert full(x).shape == depthwise(x).shape == (1, 1024, 8, 8)


# Table 1 of the MobileNetV1 paper, row by row after the stem: (stride of the dw conv, output
# channels of the pw conv). Written out flat here, independently of the family's grouped table.
V1_TABLE1 = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)] + [(1, 512)] * 5 + \
            [(2, 1024), (1, 1024)]


def _v1_count_from_table(alpha: float) -> int:
    bn = 2  # gamma and beta per channel
    c = int(32 * alpha)
    total = 3 * 3 * 3 * c + bn * c
    for _stride, out in V1_TABLE1:
        out = int(out * alpha)
        total += 3 * 3 * c + bn * c + c * out + bn * out
        c = out
    return total + c * 1000 + 1000


@pytest.mark.parametrize("name,alpha,paper_millions", [
    ("mobilenet_v1", 1.0, 4.2), ("mobilenet_v1_075", 0.75, 2.6),
    ("mobilenet_v1_050", 0.5, 1.3), ("mobilenet_v1_025", 0.25, 0.5)])
def test_mobilenet_v1_width_multiplier_counts_follow_the_paper_table(name, alpha, paper_millions):
    count = registered_param_count(name)
    assert count == _v1_count_from_table(alpha)
    assert count == registered_param_count("mobilenet_v1", alpha=alpha)
    assert round(count / 1e6, 1) == paper_millions  # Table 6's parameter column


def test_mobilenet_v1_has_no_residuals_and_relu6_everywhere():
    model = create_model("mobilenet_v1")
    blocks = [m for m in model.modules() if isinstance(m, DepthwiseSeparable)]
    assert len(blocks) == len(V1_TABLE1)
    assert all(isinstance(b.conv_dw.act, nn.ReLU6) and isinstance(b.conv_pw.act, nn.ReLU6)
               for b in blocks)
    assert [b.conv_dw.conv.stride[0] for b in blocks] == [s for s, _ in V1_TABLE1]


@pytest.mark.parametrize("width_mult", [0.5, 0.75, 1.4])
def test_mobilenet_v2_width_mult_matches_torchvision_count(width_mult):
    with torch.device("meta"):
        reference = torchvision.models.mobilenet_v2(width_mult=width_mult)
    assert registered_param_count("mobilenet_v2", width_mult=width_mult) == count_params(reference)


REFERENCES = {
    "mobilenet_v1": lambda: timm.create_model("mobilenetv1_100"),
    "mobilenet_v2": torchvision.models.mobilenet_v2,
    "mobilenet_v3_large": torchvision.models.mobilenet_v3_large,
    "mobilenet_v3_small": torchvision.models.mobilenet_v3_small,
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_state_dict_is_the_reference_layout_in_order(name):
    with torch.device("meta"):
        ours, ref = create_model(name), REFERENCES[name]()
    assert [tuple(t.shape) for t in ours.state_dict().values()] == \
           [tuple(t.shape) for t in ref.state_dict().values()]


def _load_positionally(ours: nn.Module, ref: nn.Module) -> None:
    """Give both the same random weights and BN statistics, matched by position."""
    g = torch.Generator().manual_seed(0)
    sd = ref.state_dict()
    for key, t in sd.items():
        if "running_var" in key:
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif t.is_floating_point() and ("running_mean" in key or key.endswith("bias")):
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    ours.load_state_dict(dict(zip(ours.state_dict(), sd.values())))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_same_weights_give_the_reference_outputs(name):
    torch.manual_seed(0)
    ref = REFERENCES[name]().eval()
    ours = create_model(name).eval()
    _load_positionally(ours, ref)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_module_names_are_readable():
    v2 = create_model("mobilenet_v2")
    assert isinstance(v2.get_submodule("stages.2.blocks.1.conv_dw.conv"), nn.Conv2d)
    # Table 2's third row: 32 channels expanded 6x.
    assert v2.get_submodule("stages.2.blocks.1.conv_dw.conv").groups == 192
    v3 = create_model("mobilenet_v3_large")
    assert isinstance(v3.get_submodule("stages.2.blocks.0.se"), SqueezeExcite)
    assert isinstance(v3.get_submodule("head.fc"), nn.Linear)


def test_mobilenet_v3_se_uses_hard_sigmoid_and_quarter_width():
    v3 = create_model("mobilenet_v3_small")
    se = v3.get_submodule("stages.4.blocks.1.se")  # expansion 576 -> squeeze 144
    assert isinstance(se.gate, nn.Hardsigmoid) and isinstance(se.act, nn.ReLU)
    assert se.fc1.out_channels == 144
    # Hard-swish only from the third stage on (Table 2: the first three bnecks use ReLU).
    assert isinstance(v3.get_submodule("stages.1.blocks.0.conv_dw.act"), nn.ReLU)
    assert isinstance(v3.get_submodule("stages.2.blocks.0.conv_dw.act"), nn.Hardswish)


def test_mbconv_with_expansion_one_has_no_expansion_conv():
    block = MBConv(32, 16, mid_chs=32)
    assert isinstance(block.conv_pw, nn.Identity)
    assert block.conv_dw.conv.groups == 32 and not block.has_skip
    assert block(torch.randn(2, 32, 8, 8)).shape == (2, 16, 8, 8)


def test_mbconv_skip_only_where_shapes_agree_and_projection_is_linear():
    assert MBConv(16, 16, mid_chs=64).has_skip
    assert not MBConv(16, 16, mid_chs=64, stride=2).has_skip
    assert not MBConv(16, 24, mid_chs=64).has_skip
    assert not hasattr(MBConv(16, 16, mid_chs=64).conv_pwl, "act")  # linear bottleneck


def test_fused_mbconv_merges_expansion_and_depthwise():
    fused = MBConv(24, 48, mid_chs=96, kernel_size=3, stride=2, fused=True)
    assert fused.conv_exp.conv.kernel_size == (3, 3) and fused.conv_exp.conv.groups == 1
    assert fused.conv_pwl.conv.kernel_size == (1, 1)
    single = MBConv(24, 24, mid_chs=24, fused=True)  # ratio 1: one full conv, with residual
    assert isinstance(single.conv_pwl, nn.Identity) and single.has_skip
    assert fused(torch.randn(1, 24, 16, 16)).shape == (1, 48, 8, 8)


def test_se_sits_on_the_expanded_map():
    block = MBConv(16, 16, mid_chs=64, se_layer=lambda c: SqueezeExcite(c, rd_channels=4))
    assert block.se.fc1.in_channels == 64 and block.se.fc2.out_channels == 64


def test_build_stages_schedules_drop_path_and_reports_one_map_per_stride():
    def stage(cin, cout, stride):
        return [dict(in_chs=cin, out_chs=cout, mid_chs=cin * 2, stride=stride),
                dict(in_chs=cout, out_chs=cout, mid_chs=cout * 2)]

    stages, info = build_stages([stage(8, 8, 1), stage(8, 16, 2), stage(16, 16, 1)],
                                drop_path_rate=0.3, reduction=2)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for s in stages for b in s.blocks]
    # Only residual blocks carry a DropPath; block i of 6 is scheduled at 0.3 * i / 6.
    assert rates == pytest.approx([0.0, 0.05, 0.0, 0.15, 0.2, 0.25])
    assert [(i["reduction"], i["module"]) for i in info] == [(2, "stages.0"), (4, "stages.2")]


def test_every_mobile_era_reference_row_names_a_registered_model():
    from conftest import read_reference

    from cnnzoo import list_models
    rows = [r[0] for r in read_reference("param_counts.tsv")
            if r[0].startswith(("mobilenet", "efficientnet"))]
    assert len(rows) >= 15
    assert set(rows) <= set(list_models())  # so test_param_counts checks each one exactly


def test_mobilenet_v1_resolution_multiplier_is_the_input_size():
    model = create_model("mobilenet_v1_050", img_size=160).eval()
    assert model.default_cfg.input_size == (3, 160, 160)
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 160, 160))
    assert feats.shape == (1, 512, 5, 5)  # alpha 0.5 of 1024 channels, 160 / 32


def test_mobilenet_v3_uses_the_tf_batchnorm_epsilon_in_every_layer_as_torchvision():
    import torchvision
    ours = {m.eps for m in create_model("mobilenet_v3_small").modules()
            if isinstance(m, torch.nn.BatchNorm2d)}
    peer = {m.eps for m in torchvision.models.mobilenet_v3_small().modules()
            if isinstance(m, torch.nn.BatchNorm2d)}
    assert ours == peer == {1e-3}


@pytest.mark.parametrize("act", ["relu", "sigmoid", "silu"])
def test_fused_ratio_one_block_trains_and_adds_in_place_only_in_inference(act):
    torch.manual_seed(0)
    block = MBConv(8, 8, 8, fused=True, act_layer=act).train()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    block(x).sum().backward()  # the activation's saved output must survive the residual add
    assert x.grad is not None and x.grad.abs().sum() > 0
    block.eval()
    with torch.no_grad():
        expected = block.conv_exp(x) + x
        torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "efficientnet_v2_s"])
def test_convs_start_at_he_normal_on_the_tf_fan_out_that_divides_by_groups(name):
    torch.manual_seed(0)
    convs = [m for m in create_model(name).modules() if isinstance(m, nn.Conv2d)]
    depthwise = [m for m in convs if m.groups > 1 and m.groups == m.in_channels]
    assert depthwise  # the convs whose fan-out torch and TF count differently
    for m in convs:
        if m.weight.numel() < 500:
            continue  # too few draws for a stable standard deviation
        k = m.kernel_size[0] * m.kernel_size[1]
        want = (2.0 / (k * m.out_channels // m.groups)) ** 0.5
        assert m.weight.std().item() == pytest.approx(want, rel=0.15), m


def test_a_fresh_efficientnet_keeps_its_signal_as_timms_does():
    # With torch's fan_out (C*k*k for a depthwise conv) an eval-mode fresh B0 ended near 1e-13.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = create_model("efficientnet_b0").eval().forward_features(x).std().item()
        peer = timm.create_model("efficientnet_b0").eval().forward_features(x).std().item()
    assert peer / 3 < ours < peer * 3
