"""Image folders in the layouts datasets ship in, held-out sets from another source, and images
that fail to decode found where they are read."""
from __future__ import annotations

import json
import re

import pytest
import torch
from datagen import make_idx_folder, make_image_folder

from cnnzoo.cli import main
from cnnzoo.data import load_source
from cnnzoo.engine import TrainConfig, train
from cnnzoo.engine.distributed import DistInfo
from cnnzoo.errors import DataError
from cnnzoo.weights.io import load_state_dict

ANIMALS = {"cat": (220, 30, 30), "dog": (30, 160, 30), "fox": (20, 20, 120)}
FAST = ["--epochs", "1", "-b", "8", "--no-augment", "--threads", "1"]


def _split_root(root, held: str, *, train=4, val=(3, 2, 1), test: int = 0):
    make_image_folder(root / "train", per_class=train, size=12, classes=ANIMALS)
    for (name, colour), n in zip(ANIMALS.items(), val):
        make_image_folder(root / held, per_class=n, size=12, seed=1, classes={name: colour})
    if test:
        make_image_folder(root / "test", per_class=test, size=12, seed=2, classes=ANIMALS)
    return root


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("held", ["val", "valid", "validation", "test"])
def test_split_folders_train_on_train_and_hold_out_exactly_the_second_folder(tmp_path, held,
                                                                          capsys):
    root = _split_root(tmp_path / "root", held)
    source = load_source(str(root))
    assert source.classes == ["cat", "dog", "fox"]  # not ['train', 'val']
    assert len(source.train) == 12 and len(source.val) == 6
    # Labels follow the training folder's order whatever the held-out folder holds.
    assert sorted(label for _, label in source.val.samples) == [0, 0, 0, 1, 1, 2]
    run = tmp_path / "run"
    assert main(["train", "lenet5", "--data", str(root), "-o", str(run), *FAST]) == 0
    out = capsys.readouterr().out
    assert re.search(r"held-out accuracy: [\d.]+% top-1 on 6 images", out), out
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["cat", "dog", "fox"]
    assert (config["train_images"], config["val_images"]) == (12, 6)
    assert not (run / "split.json").exists()  # nothing was split off the training images


def test_a_class_missing_from_val_is_fine_and_one_only_in_val_is_an_error(tmp_path, capsys):
    root = _split_root(tmp_path / "root", "val", val=(2, 0, 2))
    assert len(load_source(str(root)).val) == 4
    make_image_folder(root / "val", per_class=1, size=12, classes={"owl": (9, 9, 9)})
    with pytest.raises(DataError, match="'owl'.*not a class of") as err:
        load_source(str(root))
    assert "\n" not in str(err.value)
    assert main(["train", "lenet5", "--data", str(root), "-o", str(tmp_path / "run"),
                 *FAST]) == 2
    assert "owl" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_two_held_out_folders_are_ambiguous(tmp_path):
    root = _split_root(tmp_path / "root", "val")
    make_image_folder(root / "valid", per_class=1, size=12, classes=ANIMALS)
    with pytest.raises(DataError, match="val and valid"):
        load_source(str(root))


def test_a_class_named_train_among_others_stays_a_class(tmp_path):
    make_image_folder(tmp_path / "v", per_class=2, size=12,
                      classes={"bus": (1, 2, 3), "train": (4, 5, 6), "car": (7, 8, 9)})
    assert load_source(str(tmp_path / "v")).classes == ["bus", "car", "train"]


def test_eval_split_test_scores_the_test_folder_and_the_default_the_val_folder(tmp_path, capsys):
    root = _split_root(tmp_path / "root", "val", test=2)
    run = tmp_path / "run"
    assert main(["train", "lenet5", "--data", str(root), "-o", str(run), *FAST]) == 0
    capsys.readouterr()
    counts = {}
    for split in ("held-out", "test"):
        assert main(["eval", "lenet5", "--weights", str(run), "--split", split, "--json",
                     "-o", str(tmp_path / f"{split}.png")]) == 0
        counts[split] = json.loads(capsys.readouterr().out)["images"]
    assert counts == {"held-out": 6, "test": 6}  # val: 3+2+1, test: 2 per class
    assert main(["eval", "lenet5", "--weights", str(run), "--split", "test", "--data",
                 str(root / "train"), "-o", str(tmp_path / "x.png")]) == 2
    assert "no test/ folder" in _one_line_error(capsys)


def test_val_data_takes_the_held_out_set_from_another_source(tmp_path, capsys):
    make_image_folder(tmp_path / "train", per_class=4, size=12, classes=ANIMALS)
    # Another folder with two of the classes: labelled by name in the training order.
    make_image_folder(tmp_path / "other", per_class=3, size=12, seed=5,
                      classes={"fox": (20, 20, 120), "cat": (220, 30, 30)})
    run = tmp_path / "run"
    assert main(["train", "lenet5", "--data", str(tmp_path / "train"), "--val-data",
                 str(tmp_path / "other"), "-o", str(run), *FAST]) == 0
    assert "top-1 on 6 images" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert (config["train_images"], config["val_images"]) == (12, 6)
    assert main(["eval", "lenet5", "--weights", str(run), "--json", "-o",
                 str(tmp_path / "cm.png")]) == 0
    per_class = json.loads(capsys.readouterr().out)["per_class"]
    assert per_class["dog"] is None and per_class["cat"] is not None  # no dogs were held out
    # IDX files as --val-data: their own held-out split (t10k) is the one scored.
    make_idx_folder(tmp_path / "idx", n=40, prefixes=("train",))
    make_idx_folder(tmp_path / "idx_val", n=30, prefixes=("train", "t10k"), seed=3)
    assert main(["train", "lenet5", "--data", str(tmp_path / "idx"), "--val-data",
                 str(tmp_path / "idx_val"), "-o", str(tmp_path / "run2"), *FAST]) == 0
    assert "top-1 on 30 images" in capsys.readouterr().out
    assert main(["train", "lenet5", "--data", str(tmp_path / "train"), "--val-data",
                 str(tmp_path / "other"), "--val-split", "0.2", "-o", str(tmp_path / "r3"),
                 *FAST]) == 2
    assert "give one of them" in _one_line_error(capsys)


def _with_bad_files(root, n_bad: int):
    make_image_folder(root, per_class=10, size=12, classes=ANIMALS)
    bad = []
    for i in range(n_bad):
        path = root / list(ANIMALS)[i % 3] / f"broken{i}.jpg"
        path.write_bytes(b"\xff\xd8\xff\xe0 cut short" if i % 2 else b"")
        bad.append(path)
    return bad


@pytest.mark.parametrize("workers", ["0", "2"])
def test_bad_files_among_many_are_skipped_counted_and_named(tmp_path, workers, capsys):
    bad = _with_bad_files(tmp_path / "data", 3)
    source = load_source(str(tmp_path / "data"))
    assert len(source.train) == 33 and source.skipped == []  # listed, not decoded
    run = tmp_path / "run"
    assert main(["train", "lenet5", "--data", str(tmp_path / "data"), "--val-split", "0.25",
                 "--workers", workers, "-o", str(run), *FAST]) == 0
    out = capsys.readouterr().out
    assert "skipped 3 unreadable image(s)" in out and "skipped.txt" in out
    listed = dict(line.split("\t") for line in (run / "skipped.txt").read_text().splitlines())
    assert sorted(listed) == sorted(str(p) for p in bad)
    config = json.loads((run / "config.json").read_text())
    assert sorted(s["file"] for s in config["skipped_images"]) == sorted(listed)
    # Every readable held-out image is scored once; the unreadable ones are left out.
    held = json.loads((run / "split.json").read_text())["val_indices"]
    bad_held = sum(source.train.samples[i][0] in listed for i in held)
    assert re.search(rf"top-1 on {len(held) - bad_held} images", out), out


def test_check_images_finds_them_before_training(tmp_path, capsys):
    bad = _with_bad_files(tmp_path / "data", 2)
    source = load_source(str(tmp_path / "data"), check_images=True, workers=2)
    assert len(source.train) == 30 and sorted(f for f, _ in source.skipped) == sorted(
        str(p) for p in bad)
    run = tmp_path / "run"
    assert main(["train", "lenet5", "--data", str(tmp_path / "data"), "--check-images",
                 "-o", str(run), *FAST]) == 0
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().out
    assert len(json.loads((run / "config.json").read_text())["skipped_images"]) == 2


class _Stop(Exception):
    pass


def test_resume_mid_epoch_with_workers_gives_the_weights_of_any_worker_count(tmp_path,
                                                                             monkeypatch):
    from cnnzoo.engine import trainer as engine

    data = tmp_path / "data"
    _with_bad_files(data, 2)  # substitutions must resume exactly too
    cfg = dict(model="lenet5", data=str(data), val_split=0.25, epochs=2, batch_size=8,
               opt="sgd", lr=0.05, augment=True, deterministic=True, save_every=2)
    quiet = dict(log=lambda *_: None)
    train(TrainConfig(workers=2, **cfg), tmp_path / "full", DistInfo(), **quiet)
    train(TrainConfig(workers=0, **cfg), tmp_path / "serial", DistInfo(), **quiet)
    real = engine.Trainer._checkpoint

    def stop_mid_epoch(self, epoch, step=0, partial=None):
        real(self, epoch, step, partial)
        if epoch == 0 and step == 2:  # killed right after its first mid-epoch checkpoint
            raise _Stop

    monkeypatch.setattr(engine.Trainer, "_checkpoint", stop_mid_epoch)
    with pytest.raises(_Stop):
        train(TrainConfig(workers=2, **cfg), tmp_path / "cut", DistInfo(), **quiet)
    monkeypatch.undo()
    train(TrainConfig(workers=2, **cfg), tmp_path / "cut", DistInfo(), resume=True, **quiet)
    weights = {name: load_state_dict(tmp_path / name / "last.safetensors")
               for name in ("full", "serial", "cut")}
    for name in ("serial", "cut"):
        assert all(torch.equal(weights["full"][k], weights[name][k]) for k in weights["full"])
