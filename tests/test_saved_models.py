"""Saved models, training runs and the Hugging Face Hub, all through the one resolver.

Nothing touches the network: the Hub cache is laid out on disk in huggingface_hub's own layout
(``models--ORG--NAME/snapshots/<commit>/...`` and ``refs/main``), and uploads go to a stand-in
``HfApi`` that records what it was given.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo import create_model, push_to_hub, save_pretrained
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError, WeightsError
from cnnzoo.resolve import resolve

from conftest import randomise_bn

CLASSES = ["apple", "banana", "cherry"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _outputs(model, side=64):
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A resnet18 with 3 classes, non-trivial weights and BN statistics, saved once."""
    torch.manual_seed(0)
    model = randomise_bn(create_model("resnet18", num_classes=3, attn="se"))
    folder = tmp_path_factory.mktemp("saved") / "r18"
    save_pretrained(model, folder, classes=CLASSES)
    return model, folder


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_save_then_create_model_gives_the_same_outputs_and_names(trained):
    model, folder = trained
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["num_classes"] == 3
    assert config["in_chans"] == 3 and config["model_args"] == {"attn": "se"}
    assert config["label_names"] == CLASSES and config["cnnzoo_version"] == cnnzoo.__version__
    assert config["pretrained_cfg"]["mean"] == list(model.default_cfg.mean)
    loaded = create_model(folder)
    assert torch.equal(_outputs(loaded), _outputs(model))
    assert loaded.default_cfg.label_names == tuple(CLASSES)
    assert loaded.default_cfg.interpolation == model.default_cfg.interpolation


def test_save_refuses_to_overwrite_and_replaces_with_overwrite(trained, tmp_path):
    model, folder = trained
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    (target / "README.md").write_text("mine")
    with pytest.raises(WeightsError, match="overwrite=True"):
        save_pretrained(create_model("resnet18", num_classes=3), target)
    assert torch.equal(_outputs(create_model(target)), _outputs(model))  # untouched
    other = create_model("resnet18", num_classes=3)
    save_pretrained(other, target, overwrite=True)
    assert torch.equal(_outputs(create_model(target)), _outputs(other))
    assert (target / "README.md").read_text() == "mine"  # the user's own file stays
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_a_folder_initialises_a_new_head_and_a_bare_file_needs_its_architecture(trained):
    model, folder = trained
    with pytest.warns(UserWarning, match="re-initialised for 5 classes"):
        tuned = create_model("resnet18", num_classes=5, attn="se", pretrained=folder)
    assert torch.equal(tuned.stem.conv.weight, model.stem.conv.weight)
    loose = folder.parent / "loose.safetensors"
    shutil.copy(folder / "model.safetensors", loose)
    with pytest.raises(WeightsError, match="does not say which architecture"):
        create_model(loose)
    with pytest.raises(WeightsError, match="not found"):
        create_model(folder.parent / "nothing_here")


def _hub_cache(root, folder, repo="acme/r18"):
    """``folder`` as huggingface_hub caches a download of ``repo`` at commit COMMIT."""
    cached = root / f"models--{repo.replace('/', '--')}"
    snapshot = cached / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, snapshot / name)
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text(COMMIT)
    return root


@pytest.fixture
def offline_hub(trained, tmp_path, monkeypatch):
    cache = _hub_cache(tmp_path / "hub", trained[1])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hf_hub_name_loads_the_cached_model_offline(trained, offline_hub):
    model, _ = trained
    for spec in ("hf-hub:acme/r18", f"hf-hub:acme/r18@{COMMIT}"):
        loaded = create_model(spec)
        assert torch.equal(_outputs(loaded), _outputs(model))
        assert loaded.default_cfg.label_names == tuple(CLASSES)


def test_hf_hub_offline_and_not_cached_is_one_line_naming_the_repo(offline_hub, capsys):
    with pytest.raises(WeightsError, match="hf-hub:acme/missing is not in the Hugging Face cache"):
        create_model("hf-hub:acme/missing")
    assert main(["summary", "hf-hub:acme/missing"]) == 2
    assert "acme/missing" in _one_line(capsys)


def test_predict_on_a_hub_model_prints_its_saved_class_names(offline_hub, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (80, 60), (200, 40, 40)).save(photo)
    assert main(["predict", "hf-hub:acme/r18", str(photo), "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in CLASSES)
    assert main(["summary", "hf-hub:acme/r18", "--depth", "0"]) == 0
    assert "MACs" in capsys.readouterr().out


def test_push_to_hub_uploads_a_saved_folder_and_nothing_else(trained, monkeypatch):
    model, _ = trained
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs.get("exist_ok")))

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            # The folder must be a complete saved model at the moment it is uploaded.
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            assert torch.equal(_outputs(create_model(folder_path)), _outputs(model))
            return "commit-url"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert push_to_hub(model, "acme/r18", token="t0k") == "commit-url"
    assert calls[0] == ("init", "t0k")
    assert calls[1] == ("create_repo", "acme/r18", True)
    assert calls[2] == ("upload", "acme/r18", ["README.md", "config.json", "model.safetensors"])
    with pytest.raises(WeightsError, match="ORG/NAME"):
        push_to_hub(model, "no-org")


def test_run_folder_is_a_model_source(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "lenet5", "--data", "digits", "-o", str(run), "--epochs", "1",
                 "--limit-batches", "2", "-b", "16", "--no-augment"]) == 0
    capsys.readouterr()
    model = create_model(run)
    config = json.loads((run / "config.json").read_text())
    assert model.model_name == "lenet5"
    assert model.default_cfg.label_names == tuple(config["classes"])
    from cnnzoo.weights import load_state_dict
    assert torch.equal(model.state_dict()["head.fc.weight"],
                       load_state_dict(run / "best.safetensors")["head.fc.weight"])
    glyph = tmp_path / "g.png"
    Image.new("L", (28, 28), 255).save(glyph)
    assert main(["predict", str(run), str(glyph), "-k", "1", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"][0]
    assert top["class"] in config["classes"]
    assert main(["predict", "lenet5", str(glyph)]) == 2
    assert "untrained" in _one_line(capsys)
    with pytest.raises(CnnzooError, match="holds a lenet5, not a resnet18"):
        resolve("resnet18", weights=str(run))


def test_predict_builds_the_model_once_from_a_saved_folder(trained, tmp_path, capsys,
                                                           monkeypatch):
    import cnnzoo.resolve as resolve_module
    built = []
    real = resolve_module._instantiate
    monkeypatch.setattr(resolve_module, "_instantiate",
                        lambda *a, **k: built.append(a[0]) or real(*a, **k))
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 40), (10, 200, 30)).save(photo)
    assert main(["predict", str(trained[1]), str(photo), "-k", "1"]) == 0
    assert built == ["resnet18"]
    assert capsys.readouterr().out.split()[-2] in CLASSES


@pytest.fixture(scope="module")
def saved_lenet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lenet") / "saved"
    save_pretrained(create_model("lenet5"), folder, classes=[f"digit{i}" for i in range(10)])
    glyph = folder.parent / "g.png"
    Image.new("L", (28, 28), 255).save(glyph)
    return folder, glyph


@pytest.mark.parametrize("command", ["summary", "draw", "predict", "eval", "export", "explain"])
def test_every_command_takes_a_saved_model(command, saved_lenet, tmp_path, capsys):
    folder, glyph = saved_lenet
    argv = {"summary": ["summary", str(folder), "--depth", "0"],
            "draw": ["draw", str(folder), "-o", str(tmp_path / "d.dot")],
            "predict": ["predict", str(folder), str(glyph), "-k", "1"],
            "eval": ["eval", str(folder), "--data", "digits", "-o", str(tmp_path / "c.png")],
            "export": ["export", str(folder), "-o", str(tmp_path / "m.onnx")],
            "explain": ["explain", str(folder), str(glyph), "-o", str(tmp_path / "x")]}[command]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.strip()
    if command == "predict":
        assert "digit" in out  # the saved class names, not indices


def test_bench_times_a_saved_model_under_its_source_name(trained, saved_lenet, capsys):
    argv = ["bench", str(trained[1]), "--steps", "1", "--warmup", "0", "-b", "2",
            "--img-size", "64", "--device", "cpu"]
    assert main(argv) == 0
    assert "r18" in capsys.readouterr().out
    assert main(["bench", str(saved_lenet[0]), "--steps", "1"]) == 2
    assert "cnnzoo bench lenet5" in _one_line(capsys)
