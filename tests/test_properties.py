"""Property tests: no argument list and no folder of files makes cnnzoo raise an uncaught exception.

The argument space is every training option with values on both sides of its limits (zero,
negative, NaN, huge, junk text); training is kept to a batch or two by always passing
``--limit-batches`` and ``--epochs`` from small ranges. ``--compile`` and ``--download`` stay out
(minutes of compiling, the network). The data space is class folders of generated files: valid
images of any mode, size and format, random bytes, truncated images and empty files.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import make_image_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnzoo.cli import main
from cnnzoo.data import build_transform, load_source
from cnnzoo.errors import DataError
from cnnzoo.registry import default_cfg

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# Text a shell can pass: no NUL (argv is C strings), but any other character, and the lone
# surrogates Python uses for bytes that are not UTF-8.
junk = st.one_of(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                         max_size=12),
                 st.sampled_from(["caf\udce9", "-", "--", "-1", "1e999", "nan", "", " "]))
numbers = st.one_of(st.integers(-3, 70).map(str), st.sampled_from(
    ["0", "-1", "nan", "inf", "-inf", "1e308", "0.5", "1.5", "1e-9", "2**31"]), junk)


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("props")
    data = make_image_folder(tmp / "photos", per_class=3, size=12)
    (tmp / "file.txt").write_text("x")
    (tmp / "empty").mkdir()
    return tmp, data


def _option(places):
    tmp, data = places
    paths = st.sampled_from([str(data), str(tmp / "file.txt"), str(tmp / "empty"),
                             str(tmp / "missing"), "mnist", "digits2"])
    return st.one_of(
        st.tuples(st.sampled_from(["-b", "--epochs", "--img-size", "--in-chans", "--workers",
                                   "--save-every", "--step-epochs", "--unfreeze-at", "--threads",
                                   "--seed"]), numbers),
        st.tuples(st.sampled_from(["--lr", "--momentum", "--wd", "--val-split", "--clip-grad",
                                   "--ema", "--label-smoothing", "--warmup-epochs"]), numbers),
        st.tuples(st.just("--opt"), st.sampled_from(["sgd", "adamw", "rmsprop", "adam"])),
        st.tuples(st.just("--sched"), st.sampled_from(["constant", "step", "onecycle", "x"])),
        st.tuples(st.just("--amp"), st.sampled_from(["none", "bf16", "fp16", "fp8"])),
        st.tuples(st.just("--device"), st.sampled_from(["cpu", "cuda:7", "tpu", "cpu:0"])),
        st.tuples(st.just("--freeze"), st.sampled_from(["all-but-head", "features", "x.y"])),
        st.tuples(st.just("--data"), paths),
        st.tuples(st.just("--pretrained"), paths),
        st.tuples(st.just("--resume"), paths),
        st.tuples(st.sampled_from(["--no-augment", "--channels-last", "--deterministic",
                                   "--nesterov", "--force"])),
        st.tuples(junk),
    )


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 2
    return rc, capsys.readouterr().err


def _assert_clean(rc: int, err: str, argv) -> None:
    # `cnnzoo list PATTERN` answers 1 when nothing matches, as grep does.
    assert rc in (0, 2) or (rc == 1 and argv[0] == "list"), (rc, argv, err)
    assert "Traceback" not in err, (argv, err)
    if rc == 2:
        assert len(err.strip().splitlines()) == 1, (argv, err)


@given(data=st.data())
@SETTINGS
def test_train_arguments_never_raise(places, capsys, data):
    tmp, photos = places
    options = data.draw(st.lists(_option(places), max_size=6))
    model = data.draw(st.sampled_from(["lenet5", "lenet5", "resnet9000", "alexnet"]))
    with tempfile.TemporaryDirectory(dir=tmp) as out:
        argv = ["train", model, "--data", str(photos), "--data-root", str(tmp / "empty"),
                "-o", str(Path(out) / "run"), "--limit-batches", "1", "--epochs", "1",
                *[token for option in options for token in option],
                "--limit-batches", data.draw(st.sampled_from(["1", "2", "0", "-1"]))]
        if model == "alexnet" and "--img-size" not in argv:
            argv += ["--img-size", "64"]  # small enough to train quickly
        rc, err = _run(argv, capsys)
    _assert_clean(rc, err, argv)


@given(data=st.data())
@SETTINGS
def test_other_commands_never_raise(places, capsys, data):
    tmp, photos = places
    command = data.draw(st.sampled_from(["eval", "predict", "summary", "list", "nosuch"]))
    tokens = data.draw(st.lists(st.one_of(
        junk, numbers, st.sampled_from(["-k", "-b", "--img-size", "--weights", "--json",
                                        "--input-size", "--depth", str(tmp / "file.txt"),
                                        str(photos / "red" / "0.png"), "lenet5", str(tmp)])),
        max_size=6))
    rc, err = _run([command, *tokens], capsys)
    _assert_clean(rc, err, [command, *tokens])


# -- the data loader ---------------------------------------------------------------------------

MODES = {"PNG": ["L", "RGB", "RGBA", "P", "I;16", "LA", "1"], "JPEG": ["L", "RGB", "CMYK"],
         "BMP": ["L", "RGB", "P"], "GIF": ["L", "P"], "TIFF": ["L", "RGB", "RGBA", "CMYK", "I;16"]}


@st.composite
def image_file(draw) -> bytes:
    kind = draw(st.sampled_from(["image", "image", "image", "truncated", "junk", "empty"]))
    if kind == "empty":
        return b""
    if kind == "junk":
        return draw(st.binary(min_size=1, max_size=64))
    fmt = draw(st.sampled_from(sorted(MODES)))
    mode = draw(st.sampled_from(MODES[fmt]))
    w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)
    im = Image.fromarray(pixels).convert(mode) if mode != "I;16" else Image.fromarray(
        pixels[..., 0].astype(np.uint16) * 257)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    raw = buf.getvalue()
    if kind == "truncated":
        raw = raw[: draw(st.integers(1, max(1, len(raw) - 1)))]
    return raw


@given(files=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), image_file(),
                                st.sampled_from([".png", ".jpg", ".bmp", ".gif", ".tif"])),
                      max_size=8))
@SETTINGS
def test_data_loader_yields_model_inputs_or_one_data_error(places, files):
    tmp, _ = places
    cfg = default_cfg("lenet5")
    with tempfile.TemporaryDirectory(dir=tmp) as root:
        for i, (cls, raw, suffix) in enumerate(files):
            (Path(root) / cls).mkdir(exist_ok=True)
            (Path(root) / cls / f"{i}{suffix}").write_bytes(raw)
        try:
            source = load_source(root, check_images=True)
        except DataError as exc:
            assert "\n" not in str(exc)
            return
        assert len(source.train) + len(source.skipped) == len(files)
        for train in (True, False):
            tf = build_transform(cfg, train=train, kind=source.kind)
            for i in range(len(source.train)):
                image, label = source.train[i]
                x = tf(image)
                assert x.shape == cfg.input_size and x.dtype == torch.float32
                assert torch.isfinite(x).all() and 0 <= label < source.num_classes
