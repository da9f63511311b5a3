"""WebDataset shards: written by `cnnzoo shards`, split across ranks and loader workers so that
each sample is read once an epoch, resumed mid-epoch exactly, and bad shards or samples reported
in one line."""
from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest
import torch
from datagen import make_image_folder
from PIL import Image

from cnnzoo.cli import main
from cnnzoo.data import load_source, make_loader

ANIMALS = {"cat": (220, 30, 30), "dog": (30, 160, 30), "fox": (20, 20, 120)}
FAST = ["--epochs", "1", "-b", "8", "--no-augment", "--threads", "1", "--workers", "2"]
SIZES = [10, 7, 9, 5, 6]  # 37 samples in shards of uneven size


def _numbered_shards(folder, sizes=SIZES, cls=lambda i: i % 3, bad=()):
    """Shards whose sample i is a 2x2 PNG holding i in its pixels: a test can tell them apart."""
    from webdataset import TarWriter

    folder.mkdir(parents=True, exist_ok=True)
    i = 0
    for s, size in enumerate(sizes):
        with TarWriter(str(folder / f"part-{s:04d}.tar"), encoder=False) as sink:
            for _ in range(size):
                buf = io.BytesIO()
                Image.fromarray(np.full((2, 2, 3), (i % 256, i // 256, 0), np.uint8)).save(
                    buf, format="PNG")
                png = b"not a png" if i in bad else buf.getvalue()
                sink.write({"__key__": f"s{i:05d}", "png": png,
                            "cls": str(cls(i)).encode()})
                i += 1
    return f"{folder}/part-{{0000..{len(sizes) - 1:04d}}}.tar"


def _number(image) -> torch.Tensor:
    r, g, _ = np.asarray(image)[0, 0]
    return torch.tensor(int(r) + 256 * int(g))


def _batches(spec, *, rank, world, train, epoch=1, start_step=0, workers=2, batch=4):
    ds = load_source(spec).train.transformed(_number, train=train)
    loader = make_loader(ds, batch_size=batch, train=train, seed=7, rank=rank, world=world,
                         workers=workers)
    loader.set_epoch(epoch, start_step)
    batches = [x.tolist() for x, _ in loader]
    assert len(batches) == len(loader) - start_step  # the length the trainer plans with
    return batches


def test_two_ranks_with_two_workers_each_read_every_sample_once(tmp_path):
    spec = _numbered_shards(tmp_path / "shards")
    seen = [i for rank in range(2) for b in _batches(spec, rank=rank, world=2, train=False)
            for i in b]
    assert sorted(seen) == list(range(37))  # evaluation: each sample exactly once
    epochs = {}
    for epoch in (1, 2):
        per_rank = [[i for b in _batches(spec, rank=r, world=2, train=True, epoch=epoch) for i in b]
                    for r in range(2)]
        # Training: both ranks take ceil(37/2) = 19 steps' worth; one sample pads the last rank.
        assert [len(p) for p in per_rank] == [19, 19]
        together = per_rank[0] + per_rank[1]
        assert set(together) == set(range(37)) and len(together) - len(set(together)) == 1
        epochs[epoch] = per_rank
    assert epochs[1] != epochs[2]  # the shard order is seeded per epoch
    again = [[i for b in _batches(spec, rank=r, world=2, train=True, epoch=2) for i in b]
             for r in range(2)]
    assert again == epochs[2]


@pytest.mark.parametrize("start_step", [1, 2, 3])
def test_a_resumed_epoch_reads_exactly_the_batches_not_yet_trained_on(tmp_path, start_step):
    spec = _numbered_shards(tmp_path / "shards", sizes=[9, 4, 11, 8])
    full = _batches(spec, rank=1, world=2, train=True, epoch=3, workers=2, batch=3)
    assert len(full) == math.ceil(16 / 3)
    resumed = _batches(spec, rank=1, world=2, train=True, epoch=3, workers=2, batch=3,
                       start_step=start_step)
    assert resumed == full[start_step:]


def test_unreadable_samples_keep_training_batches_full_and_are_left_out_of_scoring(tmp_path):
    from cnnzoo.errors import DataError

    bad = {0, 1, 17, 36}  # the first two of a shard, one inside, the very last
    spec = _numbered_shards(tmp_path / "shards", bad=bad)
    ds = load_source(spec).train
    for train in (True, False):
        loader = make_loader(ds.transformed(_number, train=train), batch_size=4, train=train,
                             seed=0, workers=2)
        loader.set_epoch(1)
        seen = [i for x, _ in loader for i in x.tolist()]
        assert sorted(f.split(":")[-1] for f in loader.skipped) == [
            f"s{i:05d}" for i in sorted(bad)]
        assert not set(seen) & bad
        if train:  # each unreadable sample stood in for by a readable one: 37 items
            assert len(seen) == 37 and set(seen) == set(range(37)) - bad
        else:
            assert sorted(seen) == sorted(set(range(37)) - bad)
    # A shard damaged after the start is named where it is read.
    loader = make_loader(ds.transformed(_number, train=False), batch_size=4, train=False, seed=0)
    path = tmp_path / "shards" / "part-0003.tar"
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(DataError, match="part-0003.tar cannot be read") as err:
        list(loader)
    assert "\n" not in str(err.value)


def test_shards_written_from_a_folder_train_and_score_every_held_out_sample(tmp_path, capsys):
    root = tmp_path / "root"
    make_image_folder(root / "train", per_class=9, size=12, classes=ANIMALS)
    make_image_folder(root / "val", per_class=3, size=12, seed=1, classes=ANIMALS)
    (root / "train" / "cat" / "broken.png").write_bytes(b"")  # left out by the writer
    out = tmp_path / "shards"
    assert main(["shards", str(root), "-o", str(out), "--per-shard", "9"]) == 0
    text = capsys.readouterr().out
    assert "train: 27 samples in 3 shard(s)" in text and "left out 1 unreadable" in text
    assert (out / "classes.txt").read_text().split() == ["cat", "dog", "fox"]
    assert main(["shards", str(root), "-o", str(out)]) == 2  # not over them without --force
    assert "--force" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", "lenet5", "--data", f"{out}/train-{{0000..0002}}.tar", "--val-data",
                 str(out / "val-0000.tar"), "-o", str(run), *FAST]) == 0
    assert re.search(r"top-1 on 9 images", capsys.readouterr().out)
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["cat", "dog", "fox"] and config["train_images"] == 27
    assert main(["eval", "lenet5", "--weights", str(run), "--json", "-o",
                 str(tmp_path / "cm.png")]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 9
    # A folder of shards is DATA too (train and val shards alike, here).
    assert len(load_source(str(out)).train) == 36


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_truncated_shard_is_named_or_skipped_and_counted(tmp_path, capsys):
    spec = _numbered_shards(tmp_path / "shards")
    bad = tmp_path / "shards" / "part-0002.tar"
    bad.write_bytes(bad.read_bytes()[:3000])
    val = _numbered_shards(tmp_path / "val", sizes=[6])
    argv = ["train", "lenet5", "--data", spec, "--val-data", val, *FAST]
    assert main([*argv, "-o", str(tmp_path / "a")]) == 2
    err = _one_line_error(capsys)
    assert "part-0002.tar" in err and "--skip-bad-shards" in err
    assert main([*argv, "-o", str(tmp_path / "b"), "--skip-bad-shards"]) == 0
    assert "skipped 1 bad shard(s)" in capsys.readouterr().out
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert [s["shard"] for s in config["skipped_shards"]] == [str(bad)]
    assert config["train_images"] == 37 - 9


def test_a_class_index_out_of_range_names_the_sample(tmp_path, capsys):
    spec = _numbered_shards(tmp_path / "shards", cls=lambda i: 5 if i == 12 else i % 3)
    (tmp_path / "shards" / "classes.txt").write_text("cat\ndog\nfox\n")
    assert main(["train", "lenet5", "--data", spec, "--val-data", spec, "-o",
                 str(tmp_path / "run"), *FAST]) == 2
    err = _one_line_error(capsys)
    assert "'s00012'" in err and "part-0001.tar" in err and "3 classes" in err
    assert not (tmp_path / "run").exists()


def test_held_out_shards_of_a_single_class_are_fine(tmp_path, capsys):
    spec = _numbered_shards(tmp_path / "shards")
    val = _numbered_shards(tmp_path / "val", sizes=[4], cls=lambda i: 0)
    assert main(["train", "lenet5", "--data", spec, "--val-data", val, "-o",
                 str(tmp_path / "run"), *FAST]) == 0
    assert "top-1 on 4 images" in capsys.readouterr().out


def test_shards_without_held_out_data_ask_for_val_data(tmp_path, capsys):
    spec = _numbered_shards(tmp_path / "shards")
    assert main(["train", "lenet5", "--data", spec, "-o", str(tmp_path / "run"), *FAST]) == 2
    assert "--val-data" in _one_line_error(capsys)
