"""timm's data pipeline reads our models' preprocessing, as it reads its own models'."""
from __future__ import annotations

import timm.data
from torchvision.transforms import CenterCrop, InterpolationMode, Normalize, Resize

from cnnzoo import create_model


def test_resolve_data_config_gives_inception_v3_its_own_preprocessing():
    model = create_model("inception_v3")
    ours = model.default_cfg
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["input_size"] == ours.input_size == (3, 299, 299)
    assert cfg["mean"] == ours.mean == (0.5, 0.5, 0.5)
    assert cfg["std"] == ours.std == (0.5, 0.5, 0.5)
    assert cfg["interpolation"] == ours.interpolation
    assert cfg["crop_pct"] == ours.crop_pct
    assert cfg["crop_mode"] == "center"


def test_create_transform_from_the_resolved_config_crops_and_normalises_as_ours():
    model = create_model("inception_v3")
    steps = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model)).transforms
    resize = next(t for t in steps if isinstance(t, Resize))
    crop = next(t for t in steps if isinstance(t, CenterCrop))
    norm = next(t for t in steps if isinstance(t, Normalize))
    assert resize.interpolation == InterpolationMode(model.default_cfg.interpolation)
    assert tuple(crop.size) == (299, 299)
    assert norm.mean.tolist() == [0.5, 0.5, 0.5]


def test_default_cfg_is_a_mapping_and_pretrained_cfg_is_the_same_object():
    model = create_model("resnet18", num_classes=7)
    cfg = model.default_cfg
    assert model.pretrained_cfg is cfg
    assert cfg["num_classes"] == 7 and cfg.get("missing", "x") == "x"
    assert dict(cfg)["classifier"] == "head.fc"
    assert set(cfg) >= {"input_size", "mean", "std", "interpolation", "crop_pct", "first_conv"}
    model.reset_classifier(3)  # a replaced cfg stays what timm reads
    assert model.pretrained_cfg["num_classes"] == 3
    features = create_model("resnet18", features_only=True)
    assert features.pretrained_cfg["input_size"] == (3, 224, 224)
