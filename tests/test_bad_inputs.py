"""The bad-input corpus: hostile files and arguments, run through the CLI as a user would.

Every case ends in correct handling (an odd image converted and used, a broken one skipped and
counted) or in one line on stderr and exit status 2: never a traceback, never a half-written file
left under a real name, never a change to an existing run.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import make_idx_folder, make_image_folder, write_idx
from hostile import (Payload, bomb_png, cmyk_jpeg, exif_rotated_jpeg, non_utf8_name,
                     palette_png, png16, rgba_png, truncated_jpeg)
from PIL import Image

from cnnzoo.cli import main
from cnnzoo.engine.checkpoint import save_weights
from cnnzoo.registry import create_model

ROOT = Path(__file__).resolve().parents[1]
GOOD = 12  # images of the base folder: 3 classes x 4
FAST = ["--epochs", "1", "-b", "16", "--val-split", "0.25", "--no-augment"]
RUN_FAST = ["--epochs", "1", "--limit-batches", "2", "-b", "16", "--no-augment"]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> Path:
    """A finished run that no case may change."""
    run = tmp_path_factory.mktemp("guarded") / "lenet"
    assert main(["train", "lenet5", "--data", "digits", "-o", str(run), *RUN_FAST]) == 0
    return run


@dataclass
class Ctx:
    tmp: Path
    run: Path  # the guarded run
    out: Path  # where a case's output goes

    def photos(self) -> Path:
        return make_image_folder(self.tmp / "data", per_class=4)

    def train(self, data: Path, *extra: str) -> list[str]:
        return ["train", "lenet5", "--data", str(data), "-o", str(self.out), *FAST, *extra]

    def weights(self, name="w.safetensors", **kw) -> Path:
        path = self.tmp / name
        save_weights(path, create_model("lenet5", num_classes=10, **kw).state_dict(), {})
        return path

    def image(self) -> Path:
        path = self.tmp / "glyph.png"
        Image.new("L", (28, 28), 128).save(path)
        return path


@dataclass
class Case:
    argv: list[str]
    outcome: str  # 'error', 'used' (exit 0, nothing skipped) or 'skipped' (exit 0, counted)
    check: Callable[[str, str], None] | None = None  # more assertions on (stdout, stderr)
    patch: Callable[[pytest.MonkeyPatch], None] | None = None


CASES: dict[str, Callable[[Ctx], Case]] = {}


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


# -- image files in a training folder --------------------------------------------------------

def _with(ctx: Ctx, write: Callable[[Path], object], name: str, outcome: str, check=None) -> Case:
    data = ctx.photos()
    write(data / "red" / name)
    return Case(ctx.train(data), outcome, check)


for _name, _file, _write in [
    ("zero-byte image", "empty.png", lambda p: p.write_bytes(b"")),
    ("truncated JPEG", "cut.jpg", truncated_jpeg),
    ("text file named .png", "notes.png", lambda p: p.write_text("not a picture\n")),
    ("decompression bomb header", "bomb.png", bomb_png),
    ("dangling symlink", "gone.png", lambda p: os.symlink(p.parent / "nowhere.png", p)),
]:
    case(_name)(lambda ctx, f=_file, w=_write: _with(ctx, w, f, "skipped"))

for _name, _file, _write in [
    ("16-bit PNG", "deep.png", png16),
    ("CMYK JPEG", "ink.jpg", cmyk_jpeg),
    ("RGBA PNG", "alpha.png", rgba_png),
    ("palette PNG with transparency", "pal.png", palette_png),
    ("1x1 image", "dot.png", lambda p: Image.new("RGB", (1, 1), (200, 0, 0)).save(p)),
    ("EXIF-rotated photo", "turned.jpg", exif_rotated_jpeg),
    ("non-UTF-8 file name", "", lambda p: non_utf8_name(p.parent)),
]:
    case(_name)(lambda ctx, f=_file, w=_write: _with(ctx, w, f, "used"))


@case("non-UTF-8 class folder name")
def _(ctx):
    data = ctx.photos()
    raw = os.fsencode(data) + b"/gr\xfcn"
    os.rename(os.fsencode(data / "green"), raw)

    def check(out, err):
        classes = json.loads((ctx.out / "config.json").read_text())["classes"]
        assert "gr\\xfcn" in classes  # shown escaped, printable anywhere
    return Case(ctx.train(data), "used", check)


@case("symlink loop in an image folder")
def _(ctx):
    data = ctx.photos()
    os.symlink("..", data / "red" / "up")  # red/up/red/up/... for ever
    os.symlink(".", data / "blue" / "here")
    os.symlink(data, data / "loop")  # a 'class' that is the folder itself

    def check(out, err):
        config = json.loads((ctx.out / "config.json").read_text())
        assert config["train_images"] + config["val_images"] == GOOD  # each image once
        assert config["classes"] == ["blue", "green", "red"]
    return Case(ctx.train(data), "used", check)


@case("class folder with no images")
def _(ctx):
    data = ctx.photos()
    (data / "empty").mkdir()
    return Case(ctx.train(data), "error", lambda o, e: None if "empty" in e else pytest.fail(e))


@case("class folder of unreadable images only")
def _(ctx):
    data = ctx.photos()
    (data / "grey").mkdir()
    (data / "grey" / "a.png").write_bytes(b"")
    bomb_png(data / "grey" / "b.png")
    return Case(ctx.train(data), "error", lambda o, e: None if "grey" in e else pytest.fail(e))


@case("a single class")
def _(ctx):
    data = make_image_folder(ctx.tmp / "one", per_class=3, classes={"cat": (9, 9, 9)})
    return Case(ctx.train(data), "error")


@case("DATA is a file")
def _(ctx):
    return Case(ctx.train(ctx.image()), "error")


@case("DATA does not exist")
def _(ctx):
    return Case(ctx.train(ctx.tmp / "nowhere"), "error")


@case("IDX images without labels")
def _(ctx):
    data = make_idx_folder(ctx.tmp / "idx", n=20)
    (data / "train-labels-idx1-ubyte.gz").unlink()
    return Case(ctx.train(data), "error")


@case("IDX file truncated")
def _(ctx):
    data = ctx.tmp / "idx"
    data.mkdir()
    write_idx(data / "train-labels-idx1-ubyte", np.zeros(20, np.uint8))
    write_idx(data / "train-images-idx3-ubyte", np.zeros((20, 28, 28), np.uint8))
    raw = (data / "train-images-idx3-ubyte").read_bytes()
    (data / "train-images-idx3-ubyte").write_bytes(raw[:-100])
    return Case(ctx.train(data), "error")


# -- models and arguments ------------------------------------------------------------------------

def _args(*extra: str, outcome="error", model="lenet5"):
    return lambda ctx: Case(["train", model, "-o", str(ctx.out), *RUN_FAST, *extra], outcome)


for _name, _extra, _model in [
    ("unknown model name", (), "lenet6"),
    ("zero batch size", ("-b", "0"), "lenet5"),
    ("negative batch size", ("-b", "-8"), "lenet5"),
    ("zero epochs", ("--epochs", "0"), "lenet5"),
    ("batch size not a number", ("-b", "many"), "lenet5"),
    ("input smaller than the network's minimum", ("--img-size", "40"), "inception_v3"),
    ("zero input size", ("--img-size", "0"), "lenet5"),
    ("zero input channels", ("--in-chans", "0"), "lenet5"),
    ("validation fraction above 1", ("--val-split", "1.5"), "lenet5"),
    ("negative learning rate", ("--lr", "-0.1"), "lenet5"),
    ("learning rate not a number", ("--lr", "nan"), "lenet5"),
    ("negative worker count", ("--workers", "-1"), "lenet5"),
    ("unknown optimizer", ("--opt", "adam2"), "lenet5"),
    ("device that does not exist", ("--device", "cuda:99"), "lenet5"),
    ("device name that means nothing", ("--device", "toaster"), "lenet5"),
]:
    case(_name)(_args(*_extra, model=_model))


# -- weights and checkpoints ---------------------------------------------------------------------

@case("in_chans mismatch of pretrained weights")
def _(ctx):
    rgb = ctx.weights("rgb.safetensors", in_chans=3)  # LeNet-5 is grey (1 channel) by default
    # Converted, as timm does: the RGB filters are summed for a grey input, and the user is told.
    return Case(["train", "lenet5", "--pretrained", str(rgb), "-o", str(ctx.out), *RUN_FAST],
                "used", lambda o, e: None if "adapted from 3 to 1 input channels" in o
                else pytest.fail(o))


@case("checkpoint truncated mid-file")
def _(ctx):
    w = ctx.weights()
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return Case(["predict", "lenet5", "--weights", str(w), str(ctx.image())], "error")


@case("torch checkpoint truncated mid-file")
def _(ctx):
    path = ctx.tmp / "w.pth"
    torch.save(create_model("lenet5", num_classes=10).state_dict(), path)
    path.write_bytes(path.read_bytes()[:3000])
    return Case(["predict", "lenet5", "--weights", str(path), str(ctx.image())], "error")


@case("safetensors with a wrong shape")
def _(ctx):
    state = create_model("lenet5", num_classes=10).state_dict()
    key = next(k for k in state if k.endswith("conv.weight"))
    state[key] = torch.zeros(3, 3)
    path = ctx.tmp / "shape.safetensors"
    save_weights(path, state, {})
    return Case(["predict", "lenet5", "--weights", str(path), str(ctx.image())], "error",
                lambda o, e: None if key in e else pytest.fail(e))


@case("safetensors with a wrong dtype")
def _(ctx):
    state = {k: v.to(torch.int32) for k, v in create_model("lenet5").state_dict().items()}
    path = ctx.tmp / "int.safetensors"
    save_weights(path, state, {})
    return Case(["predict", "lenet5", "--weights", str(path), str(ctx.image())], "error",
                lambda o, e: None if "int32" in e else pytest.fail(e))


@case("half-precision safetensors")
def _(ctx):
    state = {k: v.half() for k, v in create_model("lenet5").state_dict().items()}
    path = ctx.tmp / "half.safetensors"
    save_weights(path, state, {})
    return Case(["predict", "lenet5", "--weights", str(path), str(ctx.image())], "used")


def _malicious(ctx, command: str) -> Case:
    marker = ctx.tmp / "pwned"
    path = ctx.tmp / "evil.pth"
    torch.save({"conv.weight": torch.zeros(1), "x": Payload(marker)}, path)
    argv = (["predict", "lenet5", "--weights", str(path), str(ctx.image())] if command == "predict"
            else ["train", "lenet5", "--pretrained", str(path), "-o", str(ctx.out), *RUN_FAST])

    def check(out, err):
        assert not marker.exists(), "the pickle ran code"
        assert "refused" in err or "cannot read" in err
    return Case(argv, "error", check)


case("malicious pickle as --weights")(lambda ctx: _malicious(ctx, "predict"))
case("malicious pickle as --pretrained")(lambda ctx: _malicious(ctx, "train"))


@case("--resume from another model's run")
def _(ctx):
    return Case(["train", "resnet18", "--resume", str(ctx.run)], "error")


@case("--resume of a run with a truncated state")
def _(ctx):
    copy = ctx.tmp / "copy"
    shutil.copytree(ctx.run, copy)
    state = copy / "last.state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    before = {p.name: p.read_bytes() for p in copy.iterdir()}

    def check(out, err):
        assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
    return Case(["train", "--resume", str(copy), "--epochs", "2"], "error", check)


# -- where the output goes ---------------------------------------------------------------------

@case("output path that holds a run")
def _(ctx):
    return Case(["train", "lenet5", "-o", str(ctx.run), *RUN_FAST], "error",
                lambda o, e: None if "--force" in e else pytest.fail(e))


@case("output path that is a file")
def _(ctx):
    ctx.out.write_text("my notes\n")
    return Case(["train", "lenet5", "-o", str(ctx.out), *RUN_FAST], "error",
                lambda o, e: None if ctx.out.read_text() == "my notes\n" else pytest.fail())


@case("read-only output folder")
def _(ctx):
    import cnnzoo.weights.io as wio
    ctx.out.mkdir()

    def patch(mp):
        # Tests may run as root, whom chmod does not stop: the file system refuses instead.
        def mkstemp(*a, **kw):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), kw.get("dir"))
        mp.setattr(wio.tempfile, "mkstemp", mkstemp)
    return Case(["train", "lenet5", "-o", str(ctx.out), *RUN_FAST], "error",
                lambda o, e: None if "Read-only" in e else pytest.fail(e), patch)


@case("full disk while writing a checkpoint")
def _(ctx):
    real, calls = Path.write_bytes, []

    def patch(mp):
        def write_bytes(self, data):
            if ".last.state.safetensors" in self.name:
                calls.append(self)
                if len(calls) == 2:  # epoch 2's checkpoint: half of it fits
                    real(self, data[: len(data) // 2])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, data)
        mp.setattr(Path, "write_bytes", write_bytes)

    def check(out, err):
        assert "No space left on device" in err and "was not written" in err
        meta = json.loads(subprocess.check_output(
            [sys.executable, "-c", "import json,sys; from safetensors import safe_open;"
             "print(json.dumps(safe_open(sys.argv[1], 'pt').metadata()))",
             str(ctx.out / "last.safetensors")]))
        assert meta["epoch"] == "1"  # the last good checkpoint is whole
        assert main(["train", "--resume", str(ctx.out)]) == 0  # and resumes once there is room
    argv = ["train", "lenet5", "-o", str(ctx.out), "--epochs", "2", "--limit-batches", "2",
            "-b", "16", "--no-augment"]
    return Case(argv, "error", check, patch)


@case("confusion picture that exists")
def _(ctx):
    png = ctx.tmp / "cm.png"
    png.write_bytes(b"mine")
    return Case(["eval", "lenet5", "--weights", str(ctx.run), "-o", str(png)], "error",
                lambda o, e: None if png.read_bytes() == b"mine" else pytest.fail())


# -- prediction inputs --------------------------------------------------------------------------

@case("predict on a decompression bomb")
def _(ctx):
    bomb_png(ctx.tmp / "bomb.png")
    return Case(["predict", "lenet5", "--weights", str(ctx.run), str(ctx.tmp / "bomb.png")],
                "error", lambda o, e: None if "pixels" in e else pytest.fail(e))


@case("predict with top-k zero")
def _(ctx):
    return Case(["predict", "lenet5", "--weights", str(ctx.run), str(ctx.image()), "-k", "0"],
                "error")


@case("predict at a size below the network's minimum")
def _(ctx):
    return Case(["predict", "lenet5", "--weights", str(ctx.weights()), str(ctx.image()),
                 "--img-size", "4"], "error")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own one-line errors
        return int(exc.code or 0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_handled_or_ends_in_one_line(name, tmp_path, guarded, capsys, monkeypatch):
    ctx = Ctx(tmp_path, guarded, tmp_path / "out")
    before = _snapshot(guarded)
    pre_existing = set(os.listdir(ctx.out)) if ctx.out.is_dir() else set()
    c = CASES[name](ctx)
    if ctx.out.is_dir():
        pre_existing = set(os.listdir(ctx.out))
    if c.patch:
        c.patch(monkeypatch)
    rc = _cli(c.argv)
    monkeypatch.undo()
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if c.outcome == "error":
        assert rc == 2, (rc, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cnnzoo: error:"), err
        if ctx.out.is_dir():  # nothing that looks like a finished run was left behind
            assert not {"last.safetensors", "best.safetensors"} & (
                set(os.listdir(ctx.out)) - pre_existing) or name.startswith("full disk")
    else:
        assert rc == 0 and err == "", err  # not even a warning
        if c.argv[0] == "train":
            skipped = json.loads((ctx.out / "config.json").read_text())["skipped_images"]
            if c.outcome == "skipped":
                assert len(skipped) == 1 and "skipped 1 unreadable image" in out
            else:
                assert skipped == [] and "skipped" not in out
                config = json.loads((ctx.out / "config.json").read_text())
                assert config["train_images"] + config["val_images"] >= GOOD
    if c.check:
        c.check(out, err)
    assert not list(tmp_path.rglob(".*.tmp"))  # no temporary file outlives its write
    assert _snapshot(guarded) == before


def test_corpus_has_at_least_thirty_cases():
    assert len(CASES) >= 30


# -- conversions, checked on the pixels ---------------------------------------------------------

def test_odd_image_modes_become_8_bit_rgb_with_their_colours(tmp_path):
    from cnnzoo.data.images import open_image

    png16(tmp_path / "deep.png")
    ramp = np.asarray(open_image(tmp_path / "deep.png"))
    assert ramp.dtype == np.uint8 and ramp.shape == (20, 20, 3)
    assert ramp[0, 0, 0] == 0 and ramp[0, -1, 0] == 255 and 120 < ramp[0, 10, 0] < 140
    for write, name in ((cmyk_jpeg, "ink.jpg"), (rgba_png, "alpha.png"), (palette_png, "p.png")):
        write(tmp_path / name)
        rgb = np.asarray(open_image(tmp_path / name)).astype(int)
        assert rgb.shape in ((20, 20, 3), (32, 32, 3))
        r, g, b = rgb[5, 5]
        assert r > 150 and g < 80 and b < 80, (write.__name__, rgb[5, 5])  # still red


def test_exif_orientation_is_applied(tmp_path):
    from cnnzoo.data.images import open_image

    exif_rotated_jpeg(tmp_path / "turned.jpg")
    assert open_image(tmp_path / "turned.jpg").size == (10, 30)


def test_non_utf8_image_names_print_through_a_real_process(tmp_path, guarded):
    # A real stdout (not pytest's capture) is where an unprintable name would raise.
    image = non_utf8_name(tmp_path, b"photo-\xff")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "LC_ALL": "C.UTF-8"}
    proc = subprocess.run([sys.executable, "-m", "cnnzoo.cli", "predict", "lenet5", "--weights",
                           str(guarded), os.fsencode(image), os.fsencode(image) + b"-missing",
                           "-k", "2"], capture_output=True, env=env)
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    assert proc.stderr.decode().strip().startswith("cnnzoo: error: image not found: ")
    assert "photo-\\xff.png-missing" in proc.stderr.decode()
    proc = subprocess.run([sys.executable, "-m", "cnnzoo.cli", "predict", "lenet5", "--weights",
                           str(guarded), os.fsencode(image), "-k", "2"], capture_output=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines()[0].endswith("photo-\\xff.png")
