"""EfficientNet B0-B7, compound scaling, stochastic depth, EfficientNetV2."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from cnnzoo import create_model, default_cfg, list_models
from cnnzoo.inspect.counts import registered_param_count
from cnnzoo.layers.mbconv import MBConv
from cnnzoo.models.efficientnet import (VARIANTS, compound_scaling, efficientnet_from_phi,
                                        scaling_table)

from test_mobile import _load_positionally

B_NAMES = [f"efficientnet_b{i}" for i in range(8)]
V2_NAMES = ["efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"]


def test_all_variants_are_registered_from_one_table():
    assert set(B_NAMES + V2_NAMES) <= set(list_models("efficientnet*"))
    assert [v.name for v in VARIANTS] == B_NAMES


def test_compound_rule_doubles_flops_per_phi_and_starts_at_b0():
    s0 = compound_scaling(0)
    assert (s0.width, s0.depth, s0.resolution) == (1.0, 1.0, 224)
    # FLOPs grow as depth * width^2 * resolution^2: the paper constrains that product to ~2.
    s1 = compound_scaling(1)
    assert s1.depth * s1.width ** 2 * (s1.resolution / 224) ** 2 == pytest.approx(2.0, abs=0.1)


def test_custom_phi_model_lands_near_the_official_rows():
    rows = {r["name"]: r for r in scaling_table()}
    # phi=1 by the rule is B2's width and depth exactly, at 258 px instead of 260.
    model = efficientnet_from_phi(1)
    b2 = rows["efficientnet_b2"]
    assert (compound_scaling(1).width, compound_scaling(1).depth) == (b2["width"], b2["depth"])
    assert sum(p.numel() for p in model.parameters()) == registered_param_count("efficientnet_b2")
    assert abs(model.input_size[0] - b2["resolution"]) <= 2
    # The hand-rounded rows never stray far from the rule's resolution.
    for r in rows.values():
        assert abs(r["resolution"] - r["rule_resolution"]) / r["rule_resolution"] < 0.5


def test_each_variant_has_its_own_resolution_and_bicubic_crop():
    sizes = [default_cfg(n).input_size[-1] for n in B_NAMES]
    assert sizes == [v.resolution for v in VARIANTS] and sizes[0] == 224 and sizes[-1] == 600
    assert sizes == sorted(sizes)
    for n in B_NAMES:
        cfg = default_cfg(n)
        assert cfg.interpolation == "bicubic"
        assert cfg.crop_pct == pytest.approx(cfg.input_size[-1] / (cfg.input_size[-1] + 32))


def test_v2_eval_sizes_follow_torchvision():
    for name in V2_NAMES:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        assert default_cfg(name).input_size[-1] == weights.transforms().crop_size[0]


def test_b7_runs_at_600_once():
    torch.manual_seed(0)
    model = create_model("efficientnet_b7").eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 600, 600))
        logits = model.forward_head(feats)
    assert feats.shape == (1, 2560, math.ceil(600 / 32), math.ceil(600 / 32))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", B_NAMES + V2_NAMES)
def test_state_dict_is_torchvisions_layout_in_order(name):
    with torch.device("meta"):
        ours, ref = create_model(name), getattr(torchvision.models, name)()
    assert [tuple(t.shape) for t in ours.state_dict().values()] == \
           [tuple(t.shape) for t in ref.state_dict().values()]


@pytest.mark.parametrize("name,kwargs", [("efficientnet_b0", dict(bn_eps=1e-5)),
                                         ("efficientnet_v2_s", {})])
def test_same_weights_give_torchvisions_outputs(name, kwargs):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)().eval()
    ours = create_model(name, **kwargs).eval()
    _load_positionally(ours, ref)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def _residual_blocks(model):
    return [m for m in model.modules() if isinstance(m, MBConv)]


def test_drop_path_rises_linearly_over_the_blocks():
    model = create_model("efficientnet_b0", drop_path_rate=0.2)
    blocks = _residual_blocks(model)
    n = len(blocks)
    for i, block in enumerate(blocks):
        expected = 0.2 * i / n if block.has_skip else 0.0
        assert getattr(block.drop_path, "drop_prob", 0.0) == pytest.approx(expected)


def test_stochastic_depth_drops_branches_at_the_scheduled_rate_in_train_only():
    torch.manual_seed(0)
    model = create_model("efficientnet_b0", drop_path_rate=0.5)
    n_samples = 1000
    checked = 0
    for block in _residual_blocks(model):
        p = getattr(block.drop_path, "drop_prob", 0.0)
        if p < 0.2:
            continue
        in_chs = block.conv_pwl.conv.out_channels
        x = torch.randn(n_samples, in_chs, 2, 2)
        with torch.no_grad():
            block.train()
            out = block(x)
            dropped = (out == x).flatten(1).all(1).float().mean().item()
            block.eval()
            first, second = block(x), block(x)
        # A dropped sample is exactly its shortcut; 5 standard errors of a Bernoulli mean.
        assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n_samples), (p, dropped)
        assert torch.equal(first, second) and not (first == x).flatten(1).all(1).any()
        checked += 1
    assert checked >= 5


def test_v2_uses_fused_blocks_early_and_se_only_in_mbconv():
    model = create_model("efficientnet_v2_s")
    kinds = [[b.fused for b in stage.blocks] for stage in model.stages]
    assert [all(k) for k in kinds] == [True, True, True, False, False, False]
    for block in _residual_blocks(model):
        assert isinstance(block.se, nn.Identity) == block.fused
    first = model.get_submodule("stages.0.blocks.0")  # Fused-MBConv1: a single 3x3 conv
    assert isinstance(first.conv_pwl, nn.Identity) and first.has_skip


def test_efficientnet_se_squeezes_a_quarter_of_the_block_input():
    model = create_model("efficientnet_b0")
    block = model.get_submodule("stages.1.blocks.0")  # 16 -> 24, expanded 96
    assert block.se.fc1.in_channels == 96 and block.se.fc1.out_channels == 4
    assert isinstance(block.se.act, nn.SiLU) and isinstance(block.se.gate, nn.Sigmoid)
