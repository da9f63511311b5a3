"""The model contract of DESIGN.md, checked on every registered model (later families included)."""
from __future__ import annotations

import math

import pytest
import torch

from cnnzoo import create_model, default_cfg, list_models

MODELS = list_models()


def _input(name: str, batch: int = 2, in_chans: int | None = None) -> torch.Tensor:
    c, h, w = default_cfg(name).input_size
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, in_chans or c, h, w, generator=g)


@pytest.mark.parametrize("name", MODELS)
def test_forward_head_features_and_reset(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = _input(name)
    nc = default_cfg(name).num_classes
    # The largest models (B7 at 600) dominate the suite at their default size: the features are
    # computed once for both heads, and the reset check runs one sample through the whole model.
    with torch.no_grad():
        out = model(x)
        feats = model.forward_features(x)
        split = model.forward_head(feats)
        pre = model.forward_head(feats, pre_logits=True)
    assert out.shape == (2, nc)
    assert torch.isfinite(out).all()
    # The same computation twice, bit for bit: the split is forward's own path, and eval mode
    # must be deterministic (no dropout, no stochastic depth left on).
    assert torch.equal(out, split), (out - split).abs().max()
    assert pre.shape == (2, model.get_classifier().in_features)
    model.reset_classifier(7)
    assert model.get_classifier().out_features == 7
    with torch.no_grad():
        assert model.forward_head(feats).shape == (2, 7)
        assert model(x[:1]).shape == (1, 7)


@pytest.mark.parametrize("name", MODELS)
def test_in_chans_1_and_features_only(name):
    torch.manual_seed(0)
    model = create_model(name, in_chans=1, num_classes=5).eval()
    # One sample: shapes are all this checks (batches of 2 and 1 are the test above's).
    x = _input(name, batch=1, in_chans=1)
    with torch.no_grad():
        assert model(x).shape == (1, 5)
    extractor = create_model(name, in_chans=1, features_only=True).eval()
    with torch.no_grad():
        maps = extractor(x)
    info = extractor.feature_info
    assert len(maps) == len(info) >= 3
    height = x.shape[-1]
    for fmap, item in zip(maps, info):
        assert fmap.shape[1] == item["num_chs"], item
        # Valid (unpadded) convolutions make maps smaller than size / reduction, never larger and
        # never by a whole further factor of two.
        nominal = height / item["reduction"]
        assert nominal / 2 < fmap.shape[-1] <= math.ceil(nominal), item
    reductions = [i["reduction"] for i in info]
    assert reductions == sorted(reductions)


@pytest.mark.parametrize("name", MODELS)
def test_default_cfg_names_real_modules(name):
    with torch.device("meta"):
        model = create_model(name)
    cfg = model.default_cfg
    first = model.get_submodule(cfg.first_conv)
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == cfg.input_size[0]
    assert model.get_submodule(cfg.classifier) is model.get_classifier()
