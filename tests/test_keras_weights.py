"""Keras application weights: each keras.applications model, built with random weights and
non-trivial BatchNorm statistics, saved as the legacy .h5 keras.applications downloads, loads
into ours; fed its own preprocessing of the same RGB images, each side gives the same logits.

Keras runs on its torch backend here, in the test only: cnnzoo reads the files with h5py.
"""
from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported: no TensorFlow needed

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group  # noqa: E402

from cnnzoo import create_model, model_card, save_pretrained  # noqa: E402
from cnnzoo.errors import WeightsError  # noqa: E402
from cnnzoo.weights.keras import TfSameConv2d  # noqa: E402
from cnnzoo.weights.keras_families import keras_url  # noqa: E402

A = keras.applications
# Keras on numpy 2 warns on every array it hands over; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# (Keras constructor, its kwargs, its preprocess_input, our model, side). The sides are the
# smallest each architecture takes, to keep the suite fast; VGG16's flattened 7x7 map needs 224.
CASES = {
    "mobilenet_alpha_0.5": (A.MobileNet, dict(alpha=0.5), A.mobilenet.preprocess_input,
                            "mobilenet_v1_050", 128),
    "mobilenet_alpha_0.25": (A.MobileNet, dict(alpha=0.25), A.mobilenet.preprocess_input,
                             "mobilenet_v1_025", 96),
    "mobilenet_v2": (A.MobileNetV2, {}, A.mobilenet_v2.preprocess_input, "mobilenet_v2", 96),
    # MobileNetV3 and EfficientNetV2 rescale inside the model: their preprocess_input is a no-op.
    "mobilenet_v3_small": (A.MobileNetV3Small, {}, A.mobilenet_v3.preprocess_input,
                           "mobilenet_v3_small", 64),
    "mobilenet_v3_large": (A.MobileNetV3Large, {}, A.mobilenet_v3.preprocess_input,
                           "mobilenet_v3_large", 64),
    "vgg16": (A.VGG16, {}, A.vgg16.preprocess_input, "vgg16", 224),
    "densenet121": (A.DenseNet121, {}, A.densenet.preprocess_input, "densenet121", 64),
    "efficientnet_b0": (A.EfficientNetB0, {}, A.efficientnet.preprocess_input,
                        "efficientnet_b0", 64),
    "efficientnet_v2_s": (A.EfficientNetV2S, {}, A.efficientnet_v2.preprocess_input,
                          "efficientnet_v2_s", 64),
    "inception_v3": (A.InceptionV3, {}, A.inception_v3.preprocess_input, "inception_v3", 75),
    "inception_resnet_v2": (A.InceptionResNetV2, {}, A.inception_resnet_v2.preprocess_input,
                            "inception_resnet_v2", 75),
    "resnet50": (A.ResNet50, {}, A.resnet50.preprocess_input, "resnet50_v1", 64),
}


def _randomise(km, seed=0):
    """Non-trivial BN statistics and affines, biases and normalisation layers (fresh ones are
    identities and zeros, through which a comparison proves little); kernels stay Keras's."""
    rng = np.random.default_rng(seed)
    ranges = {"moving_variance": (0.5, 2.0), "variance": (0.5, 2.0), "gamma": (0.5, 1.0),
              "moving_mean": (-0.1, 0.1), "mean": (-0.1, 0.1), "beta": (-0.1, 0.1),
              "bias": (-0.1, 0.1)}
    for w in km.weights:
        low_high = ranges.get(w.path.rsplit("/", 1)[-1])
        if low_high and len(w.shape):
            w.assign(rng.uniform(*low_high, tuple(w.shape)).astype("float32"))
    return km


_BUILT: dict = {}


def _keras_model(case):
    """Each Keras model built once per test process (several tests look at the same one)."""
    if case not in _BUILT:
        ctor, kwargs, _, _, side = CASES[case]
        _BUILT[case] = _randomise(ctor(weights=None, input_shape=(side, side, 3),
                                       classifier_activation=None, **kwargs))
    return _BUILT[case]


def _save_legacy(km, path):
    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, km)
    return path


def _images(side, n=2):
    return np.random.default_rng(1).uniform(0, 255, (n, side, side, 3)).astype("float32")


def _ours_on(model, rgb):
    """Our side: images in [0, 1], normalised by the model's own default_cfg."""
    cfg = model.default_cfg
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2) / 255
    x = (x - torch.tensor(cfg.mean)[:, None, None]) / torch.tensor(cfg.std)[:, None, None]
    with torch.no_grad():
        return model.eval()(x).numpy()


def _assert_same_logits(got, want):
    scale = np.abs(want).max()
    assert scale > 1e-2 and np.std(want) > 1e-3  # the logits carry information
    assert np.abs(got - want).max() <= 1e-4 * scale


@pytest.mark.parametrize("case", list(CASES))
def test_keras_h5_gives_keras_logits(case, tmp_path):
    _, _, preprocess, ours, side = CASES[case]
    km = _keras_model(case)
    path = _save_legacy(km, tmp_path / "weights.h5")
    rgb = _images(side)
    want = np.asarray(km(preprocess(rgb.copy())).detach().cpu())
    model = create_model(ours, pretrained=str(path))
    _assert_same_logits(_ours_on(model, rgb), want)


def test_keras3_weights_h5_loads_too_and_a_saved_copy_keeps_tf_padding(tmp_path):
    km = _keras_model("mobilenet_alpha_0.5")
    km.save_weights(tmp_path / "m.weights.h5")
    rgb = _images(128)
    want = np.asarray(km(A.mobilenet.preprocess_input(rgb.copy())).detach().cpu())
    model = create_model("mobilenet_v1_050", pretrained=str(tmp_path / "m.weights.h5"))
    _assert_same_logits(_ours_on(model, rgb), want)
    assert isinstance(model.stem.conv, TfSameConv2d)  # Keras pads stride 2 as TF does
    save_pretrained(model, tmp_path / "saved")
    again = create_model(tmp_path / "saved")
    assert isinstance(again.stem.conv, TfSameConv2d)
    assert np.array_equal(_ours_on(again, rgb), _ours_on(model, rgb))
    with pytest.warns(UserWarning, match="re-initialised"):  # fine-tuning it: a new head
        tuned = create_model("mobilenet_v1_050", num_classes=5, pretrained=tmp_path / "saved")
    assert isinstance(tuned.stem.conv, TfSameConv2d)
    assert tuned.default_cfg.mean == model.default_cfg.mean
    assert tuned.stem.bn.eps == model.stem.bn.eps == 1e-3


def test_caffe_mode_flips_the_first_conv_and_sets_caffe_mean(tmp_path):
    km = _keras_model("resnet50")
    kernel = next(w.numpy() for w in km.weights if w.path == "conv1_conv/kernel")  # BGR inputs
    model = create_model("resnet50_v1", pretrained=str(_save_legacy(km, tmp_path / "r.h5")))
    rgb_first = torch.from_numpy(np.ascontiguousarray(kernel[:, :, 2].transpose(2, 0, 1)))
    assert torch.equal(model.stem.conv.weight[:, 0], rgb_first)  # our R is Keras's third
    assert model.default_cfg.mean == pytest.approx((123.68 / 255, 116.779 / 255, 103.939 / 255))
    assert model.default_cfg.std == pytest.approx((1 / 255,) * 3)
    assert model.stages[1].blocks[0].conv1.conv.stride == (2, 2)  # the paper's v1, not v1.5
    assert model.stages[1].blocks[0].conv2.conv.stride == (1, 1)
    assert "v1.5" in model_card("resnet50_v1").innovation


def test_pretrained_keras_knows_the_url_uses_the_cache_and_is_one_line_offline(
        tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    url = keras_url("mobilenet_v1_050", create_model("mobilenet_v1_050"))
    assert url == ("https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
                   "mobilenet_5_0_224_tf.h5")
    with pytest.raises(WeightsError) as err:
        create_model("mobilenet_v1_050", pretrained="keras")
    assert url in str(err.value) and "\n" not in str(err.value)
    # Once the file is in the cache (as a download would leave it), it loads with no network.
    km = _keras_model("mobilenet_alpha_0.5")
    cached = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    _save_legacy(km, cached)
    rgb = _images(128)
    want = np.asarray(km(A.mobilenet.preprocess_input(rgb.copy())).detach().cpu())
    _assert_same_logits(_ours_on(create_model("mobilenet_v1_050", pretrained="keras"), rgb), want)


def test_a_keras_file_of_another_architecture_is_one_clear_error(tmp_path):
    path = _save_legacy(_keras_model("mobilenet_v2"), tmp_path / "v2.h5")
    with pytest.raises(WeightsError, match="another architecture"):
        create_model("mobilenet_v1", pretrained=str(path))
    with pytest.raises(WeightsError, match="no Keras weights map"):
        create_model("alexnet", pretrained=str(path))
