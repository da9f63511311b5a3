"""The Inception line: reusable towers, aux heads, the SE placement, and weight compatibility."""
from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from cnnzoo import create_model
from cnnzoo.errors import InputSizeError
from cnnzoo.inspect.counts import count_params, registered_param_count
from cnnzoo.layers.inception import InceptionModule, InceptionOutputs, Towers
from cnnzoo.layers.squeeze_excite import SqueezeExcite
from cnnzoo.registry import INCEPTION_MEAN, INCEPTION_STD, default_cfg

from _peers import outputs_in_both_layouts

INCEPTION_FAMILIES = ["googlenet", "bn_inception", "inception_v3", "inception_v4",
                      "inception_resnet_v2"]


def _load_by_order(ours: nn.Module, ref: nn.Module) -> None:
    """Copy ``ref``'s state into ``ours`` entry by entry: possible only if the layouts agree."""
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert len(ours_sd) == len(ref_sd)
    for (k, v), (rk, rv) in zip(ours_sd.items(), ref_sd.items()):
        assert v.shape == rv.shape, (k, rk)
    ours.load_state_dict(dict(zip(ours_sd, ref_sd.values())))


def _randomise_bn(model: nn.Module) -> None:
    # Non-trivial running statistics, so a BN in the wrong place cannot go unnoticed.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


REFERENCES = {
    "googlenet": (lambda: torchvision.models.googlenet(weights=None, aux_logits=False,
                                                       transform_input=False, init_weights=True),
                  224),
    "inception_v3": (lambda: torchvision.models.inception_v3(
        weights=None, aux_logits=False, transform_input=False, init_weights=True), 299),
    "inception_v4": (lambda: timm.create_model("inception_v4"), 107),
    "inception_resnet_v2": (lambda: timm.create_model("inception_resnet_v2"), 107),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_weights_load_in_order_and_give_the_same_logits(name):
    torch.manual_seed(0)
    make_ref, size = REFERENCES[name]
    ref = make_ref().eval()
    _randomise_bn(ref)
    ours = create_model(name).eval()
    _load_by_order(ours, ref)
    x = torch.randn(1, 3, size, size)
    (got, want, _), *nhwc = outputs_in_both_layouts(ours, ref, x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # NHWC is held to the peer in float64, within twice the peer's own float32 error.
    for got, truth, tol in nhwc:
        assert (got - truth).abs().max().item() <= tol


@pytest.mark.parametrize("name, heads, weight", [("googlenet", 2, 0.3), ("inception_v3", 1, 0.4)])
def test_aux_heads_only_in_train_mode_with_their_loss_weights(name, heads, weight):
    torch.manual_seed(0)
    model = create_model(name, aux_logits=True, num_classes=10)
    size = default_cfg(name).input_size[-1]
    x = torch.randn(2, 3, size, size)
    out = model.train()(x)
    assert isinstance(out, InceptionOutputs)
    assert out.logits.shape == (2, 10)
    assert len(out.aux_logits) == heads
    assert all(a.shape == (2, 10) for a in out.aux_logits)
    assert model.aux_loss_weights == (weight,) * heads
    with torch.no_grad():
        plain = model.eval()(x)
    assert isinstance(plain, torch.Tensor) and plain.shape == (2, 10)
    model.reset_classifier(3)
    assert all(a.shape == (2, 3) for a in model.train()(x).aux_logits)


def test_aux_head_on_a_too_small_input_is_a_clear_input_size_error():
    model = create_model("inception_v3", aux_logits=True).train()
    with pytest.raises(InputSizeError, match="aux_logits=False"):
        model(torch.randn(2, 3, 200, 200))
    with torch.no_grad():  # eval mode skips the aux head, so the same input is fine
        assert model.eval()(torch.randn(2, 3, 200, 200)).shape == (2, 1000)


def test_models_without_aux_heads_return_plain_logits_in_train_mode():
    model = create_model("googlenet", num_classes=4).train()
    out = model(torch.randn(2, 3, 224, 224))
    assert isinstance(out, torch.Tensor) and model.aux_loss_weights == ()


def test_inception_module_is_four_towers_concatenated():
    # Seed 002's module and GoogLeNet's inception (3a): 64 + 128 + 32 + 32 channels.
    block = InceptionModule(192, 64, 96, 128, 16, 32, 32, five="5x5")
    assert block.branch_names == ["branch1x1", "branch3x3", "branch5x5", "branch_pool"]
    assert block.branch5x5[1].conv.kernel_size == (5, 5)
    x = torch.randn(1, 192, 28, 28)
    out = block.eval()(x)
    assert out.shape == (1, 256, 28, 28) == (1, block.out_channels, 28, 28)
    # Each tower's slice of the output is that tower alone.
    torch.testing.assert_close(out[:, 64:192], block.branch3x3(x))


def test_googlenet_paper_5x5_towers_add_exactly_the_5x5_minus_3x3_weights():
    from cnnzoo.models.googlenet import TABLE1
    extra = sum(16 * row[4] * row[5] for row in TABLE1 if len(row) > 1)
    assert registered_param_count("googlenet", five="5x5") - registered_param_count("googlenet") \
        == extra


def test_bn_inception_param_count_follows_figure5_of_the_bn_paper():
    # Figure 5 of arXiv 1502.03167, transcribed here independently of the model file:
    # #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool proj (0 = pass-through).
    # With 4c/4d pool proj 96 the modules give the 576 channels of the figure's output column.
    fig5 = [(64, 64, 64, 64, 96, 32), (64, 64, 96, 64, 96, 64), (0, 128, 160, 64, 96, 0),
            (224, 64, 96, 96, 128, 128), (192, 96, 128, 96, 128, 128),
            (160, 128, 160, 128, 160, 96), (96, 128, 192, 160, 192, 96),
            (0, 128, 192, 192, 256, 0), (352, 192, 320, 160, 224, 128),
            (352, 192, 320, 192, 224, 128)]

    def conv(cin, cout, k):  # bias-free conv + BN scale and shift
        return cin * cout * k * k + 2 * cout

    total = conv(3, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)
    cin = 192
    for c1, r3, c3, rd, cd, proj in fig5:
        total += (conv(cin, c1, 1) if c1 else 0) + conv(cin, r3, 1) + conv(r3, c3, 3)
        total += conv(cin, rd, 1) + conv(rd, cd, 3) + conv(cd, cd, 3)
        total += conv(cin, proj, 1) if proj else 0
        cin = c1 + c3 + cd + (proj or cin)
    assert cin == 1024  # the figure's 7x7x1024 before the average pool
    total += 1024 * 1000 + 1000
    # = 11,194,984 parameters (10.17M in the convolutions and BN, 1.03M in the classifier).
    assert registered_param_count("bn_inception") == total


def test_se_inception_v3_adds_one_se_per_module_with_reduction_16():
    # SE paper (arXiv 1709.01507), Fig. 2, reduction ratio r = 16: SE after every Inception module,
    # bottleneck C/16, two biased FC layers: 2*C*(C/16) + C/16 + C parameters each. The module
    # outputs are those of Inception v3's Table 1 grid: 3 x 35x35, 5 x 17x17, 3 x 8x8 (the
    # reductions included). 1,661,620 SE parameters: 25,496,188 in all against 23,834,568.
    outputs = [256, 288, 288, 768, 768, 768, 768, 768, 1280, 2048, 2048]
    se = sum(2 * c * (c // 16) + c // 16 + c for c in outputs)
    assert registered_param_count("se_inception_v3") - registered_param_count("inception_v3") == se
    with torch.device("meta"):
        model = create_model("se_inception_v3")
    assert isinstance(model.blocks.mixed_7c.attn, SqueezeExcite)
    assert model.blocks.mixed_7c.attn.fc1.out_channels == 128
    assert not isinstance(model.blocks.mixed_7c.branch3x3[1].attn, SqueezeExcite)


@pytest.mark.parametrize("name", INCEPTION_FAMILIES)
def test_every_inception_family_takes_attn(name):
    with torch.device("meta"):
        plain, with_se = create_model(name), create_model(name, attn="se")
    n_se = sum(isinstance(m, SqueezeExcite) for m in with_se.modules())
    assert n_se >= 9 and not any(isinstance(m, SqueezeExcite) for m in plain.modules())
    assert count_params(with_se) > count_params(plain)


def test_inception_resnet_blocks_scale_the_residual_branch():
    model = create_model("inception_resnet_v2").eval()
    stages = model.stages
    assert {b.scale for b in stages.block35} == {0.17}
    assert {b.scale for b in stages.block17} == {0.10}
    assert [b.scale for b in stages.block8][-2:] == [0.20, 1.0]
    block = stages.block35[0]
    x = torch.randn(1, 320, 9, 9)
    with torch.no_grad():
        branch = block.up(block.towers(x))
        torch.testing.assert_close(block(x), torch.relu(x + 0.17 * branch))
        nn.init.zeros_(block.up.weight), nn.init.zeros_(block.up.bias)
        torch.testing.assert_close(block(x), torch.relu(x))


@pytest.mark.parametrize("name, crop", [("inception_v3", 0.875), ("inception_v4", 0.875),
                                        ("inception_resnet_v2", 0.8975)])
def test_inception_v3_family_cfg_is_299_with_inception_normalisation(name, crop):
    cfg = default_cfg(name)
    ref = timm.models.get_pretrained_cfg(name)
    assert cfg.input_size == (3, 299, 299) == tuple(ref.input_size)
    assert (cfg.mean, cfg.std) == (INCEPTION_MEAN, INCEPTION_STD) == (ref.mean, ref.std)
    assert cfg.crop_pct == crop == ref.crop_pct
    assert cfg.interpolation == ref.interpolation == "bicubic"


def test_towers_channels_follow_nested_splits():
    from cnnzoo.layers.inception import BasicConv, seq
    split = Towers(8, {"a": BasicConv(8, 5, (1, 3)), "b": BasicConv(8, 5, (3, 1))})
    outer = Towers(8, {"conv": seq(BasicConv(8, 8, 1), split), "pool": nn.MaxPool2d(3, 1, 1)})
    assert split.out_channels == 10 and outer.out_channels == 18
    assert outer(torch.randn(1, 8, 6, 6)).shape == (1, 18, 6, 6)


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_non_local_attention_starts_as_identity_after_the_family_init(name):
    from cnnzoo.layers.non_local import NonLocal
    blocks = [m for m in create_model(name, attn="nl").modules() if isinstance(m, NonLocal)]
    assert blocks
    for block in blocks:
        # The zeroed scale of its output BN is what makes an inserted block the identity; the
        # family's generic init must not undo it.
        out_bn = [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
        assert torch.count_nonzero(out_bn.weight) == 0
