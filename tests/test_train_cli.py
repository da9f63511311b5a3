from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datagen import make_image_folder
from PIL import Image

from cnnzoo.cli import main
from cnnzoo.engine.checkpoint import save_weights
from cnnzoo.registry import create_model

FAST = ["--epochs", "1", "--limit-batches", "3", "-b", "16", "--no-augment"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "lenet"
    assert main(["train", "lenet5", "--data", "digits", "-o", str(run), *FAST]) == 0
    return run


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_train_prints_held_out_accuracy_and_fills_the_run_folder(digits_run, capsys):
    config = json.loads((digits_run / "config.json").read_text())
    assert config["train"]["model"] == "lenet5" and config["classes"][0] == "0"
    assert config["val_images"] == len(json.loads((digits_run / "split.json").read_text())
                                       ["val_indices"])
    assert (digits_run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_existing_run_folder_is_not_overwritten_without_force(digits_run, capsys):
    before = {p.name: p.read_bytes() for p in digits_run.iterdir()}
    assert main(["train", "lenet5", "-o", str(digits_run), *FAST]) == 2
    assert "--force" in _one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in digits_run.iterdir()} == before


def test_force_replaces_a_run_and_resume_of_a_finished_run_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "lenet5", "-o", str(run), *FAST]) == 0
    assert main(["train", "lenet5", "-o", str(run), "--force", "--seed", "7", *FAST]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 7
    before = (run / "last.safetensors").read_bytes()
    assert main(["train", "--resume", str(run)]) == 0  # all epochs done: nothing to train
    assert (run / "last.safetensors").read_bytes() == before


def test_eval_scores_the_runs_held_out_split(digits_run, tmp_path, capsys):
    png = tmp_path / "cm.png"
    assert main(["eval", "lenet5", "--weights", str(digits_run), "-o", str(png), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    config = json.loads((digits_run / "config.json").read_text())
    assert out["images"] == config["val_images"]
    assert 0 <= out["top1"] <= out["top5"] <= 100
    assert set(out["per_class"]) == set(config["classes"])
    assert png.read_bytes()[:4] == b"\x89PNG"
    # A second eval would overwrite the picture: not without --force.
    assert main(["eval", "lenet5", "--weights", str(digits_run), "-o", str(png)]) == 2
    _one_line_error(capsys)


def test_eval_through_onnxruntime_scores_as_torch_does(digits_run, tmp_path, capsys):
    scores = []
    for backend in ("torch", "onnxruntime"):
        png = tmp_path / f"{backend}.png"
        assert main(["eval", "lenet5", "--weights", str(digits_run), "-o", str(png), "--json",
                     "--backend", backend, "-b", "64"]) == 0  # a short last batch too
        scores.append(json.loads(capsys.readouterr().out))
    ours, theirs = scores
    assert theirs["images"] == ours["images"]
    assert theirs["top1"] == ours["top1"] and theirs["per_class"] == ours["per_class"]
    assert theirs["loss"] == pytest.approx(ours["loss"], rel=1e-5)


def test_eval_in_channels_last_scores_as_nchw_does(digits_run, tmp_path, capsys, monkeypatch):
    from cnnzoo.engine import evaluate as engine
    layouts, real = [], engine.evaluate

    def spy(*args, **kwargs):  # lenet5's one grey channel looks alike in both layouts
        layouts.append(kwargs.get("channels_last"))
        return real(*args, **kwargs)
    monkeypatch.setattr(engine, "evaluate", spy)
    scores = []
    for flags in ([], ["--channels-last"]):
        png = tmp_path / f"cm{len(flags)}.png"
        assert main(["eval", "lenet5", "--weights", str(digits_run), "-o", str(png), "--json",
                     *flags]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert layouts == [False, True]
    assert scores[1]["top1"] == scores[0]["top1"]
    assert scores[1]["loss"] == pytest.approx(scores[0]["loss"], rel=1e-5)


def test_eval_optimized_scores_as_eager_does(digits_run, tmp_path, capsys, monkeypatch):
    from cnnzoo import perf
    chosen = []
    real = perf.optimize

    def spy(model, **kwargs):
        fast = real(model, **kwargs)
        chosen.append((kwargs["example"].shape, kwargs["amp_dtype"], fast))
        return fast
    monkeypatch.setattr(perf, "optimize", spy)
    scores = []
    for flags in ([], ["--optimize"], ["--optimize", "--amp", "bf16"]):
        png = tmp_path / f"cm{len(flags)}.png"
        assert main(["eval", "lenet5", "--weights", str(digits_run), "-o", str(png), "--json",
                     "-b", "64", *flags]) == 0  # a short last batch too
        scores.append(json.loads(capsys.readouterr().out))
    eager, fp32, bf16 = scores
    # Timed on a real batch of the data, at its size; the choice is reported.
    assert [c[:2] for c in chosen] == [((64, 1, 32, 32), None),
                                       ((64, 1, 32, 32), torch.bfloat16)]
    assert eager["optimized"] is None
    assert fp32["optimized"] == chosen[0][2].report.describe() and "BN folded" in fp32["optimized"]
    assert "bfloat16" in bf16["optimized"]
    assert fp32["images"] == bf16["images"] == eager["images"]
    assert fp32["top1"] == eager["top1"] and fp32["per_class"] == eager["per_class"]
    assert fp32["loss"] == pytest.approx(eager["loss"], rel=1e-4)
    # bf16 moves logits by rounding: a few of the held-out digits may change their answer.
    assert abs(bf16["top1"] - eager["top1"]) <= 2.0
    assert bf16["loss"] == pytest.approx(eager["loss"], rel=0.05, abs=0.01)


def test_eval_optimize_is_for_the_torch_backend(digits_run, capsys):
    assert main(["eval", "lenet5", "--weights", str(digits_run), "--backend", "onnxruntime",
                 "--optimize"]) == 2
    assert "--optimize is for the torch backend" in _one_line_error(capsys)


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_channels_last_with_onnxruntime_is_refused(command, digits_run, tmp_path, capsys):
    args = [command, "lenet5", "--weights", str(digits_run), "--backend", "onnxruntime",
            "--channels-last"]
    assert main(args + (_glyphs(tmp_path, 1) if command == "predict" else [])) == 2
    assert "ONNX Runtime picks its own" in _one_line_error(capsys)


@pytest.mark.parametrize("flags", [["--amp", "bf16"], ["--device", "cuda"]])
def test_eval_through_onnxruntime_refuses_what_it_cannot_do(flags, digits_run, capsys):
    assert main(["eval", "lenet5", "--weights", str(digits_run), "--backend", "onnxruntime",
                 *flags]) == 2
    assert "runs on the CPU in float32" in _one_line_error(capsys)


def test_predict_prints_k_classes_with_the_runs_names(digits_run, tmp_path, capsys):
    image = tmp_path / "glyph.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20), np.uint8)).save(image)
    assert main(["predict", "lenet5", "--weights", str(digits_run / "best.safetensors"),
                 str(image), "-k", "3", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"]
    assert len(top) == 3
    assert {t["class"] for t in top} <= {str(i) for i in range(10)}
    assert top[0]["prob"] >= top[1]["prob"] >= top[2]["prob"]


def _glyphs(tmp_path, n=2) -> list[str]:
    paths = []
    for seed in range(n):
        path = tmp_path / f"glyph{seed}.png"
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (20, 20), np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_predict_through_onnxruntime_gives_torchs_probabilities(digits_run, tmp_path, capsys):
    # Every class (-k 10), so a near tie ordered differently cannot hide or fake a difference.
    args = ["predict", "lenet5", "--weights", str(digits_run), *_glyphs(tmp_path), "-k", "10",
            "--json"]
    assert main(args) == 0
    by_torch = json.loads(capsys.readouterr().out)
    assert main([*args, "--backend", "onnxruntime"]) == 0
    by_ort = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in by_ort] == [r["image"] for r in by_torch]
    for ours, theirs in zip(by_torch, by_ort):
        want = {t["index"]: t["prob"] for t in ours["top"]}
        got = {t["index"]: t["prob"] for t in theirs["top"]}
        assert got.keys() == want.keys()
        assert max(abs(got[i] - want[i]) for i in want) < 1e-5


@pytest.mark.parametrize("failure", ["export", "run", "package", "bug"])
def test_predict_says_in_one_line_when_onnxruntime_cannot_run(failure, digits_run, tmp_path,
                                                               capsys, monkeypatch):
    import sys

    from cnnzoo.perf import onnxrt
    args = ["predict", "lenet5", "--weights", str(digits_run), *_glyphs(tmp_path, 1),
            "--backend", "onnxruntime"]
    if failure == "export":
        def refuse(*args, **kwargs):
            raise RuntimeError("Exporting the operator 'x' to ONNX is not supported.\nmore")
        monkeypatch.setattr(onnxrt, "OrtRunner", refuse)
    elif failure == "run":
        # An export that fixed the batch size fails only when run: the check call catches it.
        import onnxruntime
        fail = onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument

        def wrong_batch(self, x):
            raise fail("Got invalid dimensions for input: input for index 0")
        monkeypatch.setattr(onnxrt.OrtRunner, "run_numpy", wrong_batch)
    elif failure == "bug":
        def broken(*args, **kwargs):
            raise TypeError("a bug of ours")
        monkeypatch.setattr(onnxrt, "OrtRunner", broken)
        with pytest.raises(TypeError):  # shown as the bug it is, not passed off as ONNX's
            main(args)
        return
    else:
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if missing
    assert main(args) == 2
    err = _one_line_error(capsys)
    assert {"export": "cannot run lenet5: Exporting the operator",
            "run": "cannot run lenet5: Got invalid dimensions",
            "package": "pip install onnxruntime"}[failure] in err


def test_predict_with_a_pretrained_file_names_classes_by_index(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    save_weights(weights, create_model("lenet5", num_classes=4).state_dict(), {})
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert main(["predict", "lenet5", "--weights", str(weights), str(image), "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 3


def _bad_case(case, tmp_path, digits_run):
    if case == "missing path":
        return ["train", "lenet5", "--data", str(tmp_path / "nope")]
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        return ["train", "lenet5", "--data", str(tmp_path / "empty")]
    if case == "one class":
        make_image_folder(tmp_path / "one", per_class=2, classes={"cat": (9, 9, 9)})
        return ["train", "lenet5", "--data", str(tmp_path / "one")]
    if case == "class of unreadable images only":
        # One unreadable image among good ones is skipped and counted (tests/test_bad_inputs.py).
        make_image_folder(tmp_path / "bad", per_class=2)
        (tmp_path / "bad" / "grey").mkdir()
        (tmp_path / "bad" / "grey" / "x.jpg").write_bytes(b"\xff\xd8 truncated")
        return ["train", "lenet5", "--data", str(tmp_path / "bad")]
    if case == "resume of a non-run":
        (tmp_path / "notrun").mkdir()
        (tmp_path / "notrun" / "notes.txt").write_text("mine")
        return ["train", "--resume", str(tmp_path / "notrun")]
    if case == "pretrained for another architecture":
        other = tmp_path / "resnet.safetensors"
        save_weights(other, create_model("resnet18", num_classes=10).state_dict(), {})
        return ["train", "lenet5", "--pretrained", str(other)]
    if case == "unreadable predict image":
        (tmp_path / "x.png").write_text("text")
        return ["predict", "lenet5", "--weights", str(digits_run), str(tmp_path / "x.png")]
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "missing path", "empty folder", "one class", "class of unreadable images only",
    "resume of a non-run",
    "pretrained for another architecture", "unreadable predict image"])
def test_bad_input_ends_in_one_line_and_exit_2(case, tmp_path, digits_run, capsys):
    out = tmp_path / "run"
    argv = _bad_case(case, tmp_path, digits_run)
    if argv[0] == "train" and "--resume" not in argv:
        argv += ["-o", str(out), *FAST]
    assert main(argv) == 2
    _one_line_error(capsys)
    assert not out.exists() or not any(out.iterdir())  # no half-made run left behind
    if case == "resume of a non-run":
        assert (tmp_path / "notrun" / "notes.txt").read_text() == "mine"



def test_train_takes_a_torchvision_named_file_as_pretrained(tmp_path, capsys):
    import torch
    import torchvision

    torch.manual_seed(0)
    peer = torchvision.models.resnet18(num_classes=1000)
    pth = tmp_path / "resnet18-torchvision.pth"
    torch.save(peer.state_dict(), pth)
    data = make_image_folder(tmp_path / "folder", per_class=4, size=32)
    code = main(["train", "resnet18", "--data", str(data), "--pretrained", str(pth),
                 "--img-size", "32", "--epochs", "1", "-b", "8", "--threads", "1",
                 "--freeze", "all-but-head", "-o", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "re-initialised" in out  # the 1000-class head became a head for the folder's classes
    from cnnzoo.weights.io import load_state_dict
    trained = load_state_dict(tmp_path / "run" / "last.safetensors")
    # Loaded, not random, and frozen: the backbone is still exactly the peer's.
    assert torch.equal(trained["stem.conv.weight"], peer.state_dict()["conv1.weight"])
    assert torch.equal(trained["stages.3.blocks.1.conv2.conv.weight"],
                       peer.state_dict()["layer4.1.conv2.weight"])
