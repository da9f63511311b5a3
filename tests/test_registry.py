from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnzoo import create_model, list_models, model_card
from cnnzoo.errors import CnnzooError, InputSizeError, UnknownModelError
from cnnzoo.registry import ModelCard, register_model


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownModelError, match="resnet50") as info:
        create_model("resnet5O")  # letter O
    assert isinstance(info.value, CnnzooError)
    assert "did you mean" in str(info.value)


def test_duplicate_registration_raises():
    card = model_card("resnet18")
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet18", nn.Identity, card=card)


def test_list_models_takes_shell_wildcards_and_sorts_by_year():
    resnets = list_models("resnet*")
    # Depth in numeric order; the paper's-v1 variants (resnet50_v1) sit beside their depth.
    assert resnets[:6] == ["resnet18", "resnet34", "resnet50", "resnet50_v1", "resnet101",
                           "resnet101_v1"]
    assert list_models("nosuch*") == []
    years = [model_card(n).year for n in list_models()]
    assert years == sorted(years)
    assert list_models()[0] == "lenet5"


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_a_complete_card(name):
    card = model_card(name)
    assert isinstance(card, ModelCard)
    assert 1989 <= card.year <= 2026
    assert card.paper and card.innovation and card.family
    assert card.top1_source, "say where the number stands, or why there is none"
    if card.top1 is not None:
        assert 30.0 < card.top1 < 95.0


def test_fixed_size_models_fail_with_a_clear_message():
    model = create_model("lenet5").eval()
    with pytest.raises(InputSizeError, match="img_size"):
        model(torch.randn(1, 1, 28, 28))
    small = create_model("lenet5", img_size=28).eval()
    assert small(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    assert small.default_cfg.input_size == (1, 28, 28)


def test_global_pooling_models_take_other_resolutions():
    model = create_model("resnet18", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 160, 200)).shape == (1, 3)
    vgg = create_model("vgg11", num_classes=3).eval()
    with torch.no_grad():
        assert vgg(torch.randn(1, 3, 96, 96)).shape == (1, 3)


def test_num_classes_zero_gives_pooled_features():
    model = create_model("resnet18", num_classes=0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 512)


def test_bad_out_indices_is_a_user_error():
    with pytest.raises(CnnzooError, match="out_indices"):
        create_model("resnet18", features_only=True, out_indices=(9,))
    fx = create_model("resnet18", features_only=True, out_indices=(1, -1))
    assert [i["reduction"] for i in fx.feature_info] == [4, 32]
