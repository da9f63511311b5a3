"""A loss that stops being a number ends the run in one line and keeps the last good checkpoint."""
from __future__ import annotations

import math

import pytest
import torch

from cnnzoo.cli import main
from cnnzoo.engine import trainer as trainer_mod
from cnnzoo.engine.checkpoint import read_metadata
from cnnzoo.weights.io import load_state_dict

STEPS = 3  # batches per epoch (--limit-batches)
ARGS = ["train", "lenet5", "--data", "digits", "--epochs", "3", "--limit-batches", str(STEPS),
        "-b", "16", "--no-augment", "--deterministic"]


def _poison_loss_at(monkeypatch, call: int, value: float):
    """Make the ``call``-th training loss ``value`` (as a too-high learning rate would)."""
    real, calls = trainer_mod.compute_loss, [0]

    def compute_loss(*args, **kwargs):
        calls[0] += 1
        loss = real(*args, **kwargs)
        return loss * value if calls[0] == call else loss

    monkeypatch.setattr(trainer_mod, "compute_loss", compute_loss)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_or_inf_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(
        value, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _poison_loss_at(monkeypatch, STEPS + 2, value)  # epoch 2, step 2
    assert main([*ARGS, "-o", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    word = "NaN" if math.isnan(value) else "infinite"
    assert f"loss became {word} at epoch 2, step 2" in err
    assert "last good checkpoint (epoch 1) is kept" in err
    meta = read_metadata(run / "last.safetensors")
    assert meta["epoch"] == "1"
    weights = load_state_dict(run / "last.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not list(run.glob(".*.tmp"))
    # The kept checkpoint is whole: the run resumes from it and finishes.
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    assert read_metadata(run / "last.safetensors")["epoch"] == "3"


def test_nan_loss_before_any_checkpoint_says_none_was_written(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _poison_loss_at(monkeypatch, 1, math.nan)
    assert main([*ARGS, "-o", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "epoch 1, step 1" in err and "no checkpoint had been written yet" in err, err
    assert not (run / "last.safetensors").exists()


def test_with_reads_every_few_steps_the_first_bad_step_is_named_and_no_bad_checkpoint_written(
        tmp_path, monkeypatch, capsys):
    # Off a CPU the loss is read every few steps; the step named is the one that went bad, and a
    # --save-every checkpoint due after it is not written from the poisoned weights.
    run = tmp_path / "run"
    monkeypatch.setattr(trainer_mod, "sync_every", lambda device: 3)
    _poison_loss_at(monkeypatch, STEPS + 1, math.nan)  # epoch 2, step 1; read at step 2
    assert main([*ARGS, "--save-every", "2", "-o", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "loss became NaN at epoch 2, step 1" in err, err
    meta = read_metadata(run / "last.safetensors")
    assert (meta["epoch"], meta.get("step", "0")) == ("1", "0")
    assert all(torch.isfinite(t).all() for t in load_state_dict(run / "last.safetensors").values())
