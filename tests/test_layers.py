from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnzoo.layers import (ConvNormAct, DropPath, SqueezeExcite, create_act, get_attn, lrn,
                           make_divisible)


def test_make_divisible_rounds_to_nearest_but_never_more_than_ten_percent_down():
    assert make_divisible(32 * 0.75) == 24
    assert make_divisible(17) == 16
    assert make_divisible(20) == 24  # nearest is 16 or 24; 16 would cut 20%
    assert make_divisible(3, 8) == 8
    assert make_divisible(100, 8) == 104


def test_lrn_uses_the_alexnet_paper_formula():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 3, 3) * 10
    k, n, alpha, beta = 2.0, 5, 1e-4, 0.75
    expected = torch.empty_like(x)
    for c in range(8):
        lo, hi = max(0, c - n // 2), min(7, c + n // 2)
        denom = (k + alpha * (x[:, lo:hi + 1] ** 2).sum(1)) ** beta
        expected[:, c] = x[:, c] / denom
    torch.testing.assert_close(lrn(n, alpha, beta, k)(x), expected)


def test_conv_norm_act_has_bias_only_without_norm():
    assert ConvNormAct(3, 8).conv.bias is None
    plain = ConvNormAct(3, 8, norm_layer=None)
    assert plain.conv.bias is not None and not hasattr(plain, "bn")
    assert ConvNormAct(3, 8, 3, stride=2)(torch.randn(1, 3, 15, 15)).shape == (1, 8, 8, 8)


def test_drop_path_is_identity_in_eval_and_drops_whole_samples_in_train():
    drop = DropPath(0.3)
    x = torch.ones(20000, 2, 2, 2)
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    torch.manual_seed(0)
    y = drop(x)
    per_sample = y.flatten(1)
    kept = torch.isclose(per_sample, torch.tensor(1 / 0.7)).all(1)
    assert ((per_sample == 0).all(1) | kept).all()
    dropped = (per_sample == 0).all(1).float().mean().item()
    assert abs(dropped - 0.3) < 0.02
    assert abs(y.mean().item() - 1.0) < 0.03  # expectation preserved


def test_activation_table_and_unknown_names():
    assert isinstance(create_act("hswish"), nn.Hardswish)
    assert isinstance(create_act(None), nn.Identity)
    with pytest.raises(ValueError, match="unknown activation"):
        create_act("nosuch")


def test_attention_table_resolves_se_and_rejects_unknown():
    assert get_attn("se") is SqueezeExcite
    assert get_attn(None) is None
    with pytest.raises(ValueError, match="unknown attention"):
        get_attn("nosuch")
    se = SqueezeExcite(64)
    gates = se.gate_values(torch.randn(2, 64, 5, 5))
    assert gates.shape == (2, 64, 1, 1) and (gates > 0).all() and (gates < 1).all()


def test_resnet_takes_attention_and_output_stride():
    from cnnzoo import create_model
    from cnnzoo.inspect.counts import registered_param_count
    se = create_model("resnet18", attn="se")
    assert isinstance(se.stages[0].blocks[0].attn, SqueezeExcite)
    os8 = create_model("resnet50", output_stride=8, features_only=True, out_indices=(-1,)).eval()
    with torch.no_grad():
        assert os8(torch.randn(1, 3, 224, 224))[0].shape[-1] == 28
    assert registered_param_count("resnet50", output_stride=8) == registered_param_count("resnet50")
