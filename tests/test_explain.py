"""`explain`: feature-map grids and Grad-CAM over the user's image."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cnnzoo import create_model
from cnnzoo.cli import main
from cnnzoo.inspect.explain import feature_maps, grad_cam, load_image, resize_map
from cnnzoo.weights import save_state_dict


@pytest.fixture
def picture(tmp_path):
    # Not the model's input size and not square, so the map must be scaled back to it.
    image = Image.new("RGB", (150, 110), (20, 40, 80))
    draw = ImageDraw.Draw(image)
    draw.ellipse((15, 15, 75, 75), fill=(250, 210, 40))
    draw.rectangle((90, 50, 140, 100), fill=(210, 30, 30))
    path = tmp_path / "picture.png"
    image.save(path)
    return path


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resnet18_10.safetensors"
    save_state_dict(create_model("resnet18", num_classes=10).state_dict(), path)
    return path


def test_grad_cam_map_has_the_image_size_and_is_not_constant(picture):
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10).eval()
    image, x = load_image(picture, model)
    assert tuple(x.shape) == (1, *model.default_cfg.input_size)
    cam, cls, prob = grad_cam(model, x)
    assert cam.shape == x.shape[-2:]
    heat = resize_map(cam, image.size)
    assert heat.shape == (image.size[1], image.size[0])
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    assert heat.std() > 0.01
    assert cls == int(model(x).argmax()) and 0 < prob < 1


def test_grad_cam_of_another_class_is_another_map(picture):
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10).eval()
    _, x = load_image(picture, model)
    cam_a, a, _ = grad_cam(model, x, class_idx=0)
    cam_b, b, _ = grad_cam(model, x, class_idx=1)
    assert (a, b) == (0, 1)
    assert not torch.allclose(cam_a, cam_b)


def test_feature_maps_of_grayscale_lenet_follow_its_stages(picture):
    model = create_model("lenet5").eval()
    image, x = load_image(picture, model)
    assert image.mode == "L" and tuple(x.shape) == (1, 1, 32, 32)
    maps = feature_maps(model, x, [i["module"] for i in model.feature_info])
    assert [maps[i["module"]].shape[1] for i in model.feature_info] == \
        [i["num_chs"] for i in model.feature_info]
    sides = [maps[i["module"]].shape[-1] for i in model.feature_info]
    assert sides == sorted(sides, reverse=True) and sides[0] < 32  # valid convs, then pooling


def test_cli_explain_writes_grids_and_the_heat_map(picture, weights, tmp_path, capsys):
    out = tmp_path / "explained"
    assert main(["explain", "resnet18", str(picture), "--weights", str(weights), "-o", str(out),
                 "--stages", "0,-1"]) == 0
    report = json.loads((out / "explain.json").read_text())
    assert list(report["feature_maps"]) == ["stem.act", "stages.3"]
    for path in [*report["feature_maps"].values(), report["gradcam"]]:
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) > 100
            assert np.asarray(im.convert("L")).std() > 5  # a picture, not a blank canvas
    assert 0 <= report["class_idx"] < 10  # the head's size came from the weights file
    assert "gradcam.png" in capsys.readouterr().out
    # Again without --force: nothing is overwritten.
    assert main(["explain", "resnet18", str(picture), "--weights", str(weights), "-o",
                 str(out)]) == 2


def test_cli_explain_user_errors_are_one_line(picture, weights, tmp_path, capsys):
    args = ["explain", "resnet18", str(picture), "--weights", str(weights), "-o",
            str(tmp_path / "o")]
    assert main(args + ["--class", "10"]) == 2
    assert main(args + ["--stages", "7"]) == 2
    assert main(["explain", "resnet18", str(tmp_path / "missing.png"), "-o", str(tmp_path)]) == 2
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["explain", "resnet18", str(bad), "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "out of range" in err and "Traceback" not in err
