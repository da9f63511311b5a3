"""A run killed with SIGKILL, or stopped with Ctrl-C or SIGTERM, resumes to the uninterrupted
run's weights.

The harness is bench/kill_resume.py (20 seeded trials there); here it runs once with two kills.
"""
from __future__ import annotations

import importlib.util
import random
import re
import signal
import time
from pathlib import Path

import pytest

from cnnzoo.cli import main

_spec = importlib.util.spec_from_file_location(
    "kill_resume", Path(__file__).resolve().parents[1] / "bench" / "kill_resume.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill")
    data = harness.make_data(tmp / "data")
    assert main(harness.train_args(data, tmp / "reference")) == 0
    return data, tmp / "reference"


def test_sigkill_at_random_steps_then_resume_gives_bit_identical_weights(reference, tmp_path):
    data, ref = reference
    run = tmp_path / "run"
    info = harness.run_with_kills(data, run, random.Random(3), kills=2)
    assert info["kills"] >= 1
    assert info["newest"], info  # every resume started from the newest checkpoint
    assert harness.same_weights(ref, run)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_or_sigterm_saves_a_checkpoint_and_resume_finishes_identically(reference, tmp_path,
                                                                             sig):
    data, ref = reference
    run = tmp_path / "run"
    proc = harness.cli(harness.train_args(data, run))
    deadline = time.monotonic() + 60
    while harness.checkpoint_step(run) is None and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    m = re.search(r"stopped (?:at epoch (\d+), step (\d+)|after epoch (\d+))", err)
    assert m and "--resume" in err, err
    stopped_at = ((int(m[1]) - 1) * harness.STEPS_PER_EPOCH + int(m[2]) if m[1] else
                  int(m[3]) * harness.STEPS_PER_EPOCH)
    assert harness.checkpoint_step(run) == stopped_at  # the checkpoint is where it says it stopped
    assert stopped_at < harness.EPOCHS * harness.STEPS_PER_EPOCH
    assert not list(run.glob(".*.tmp")) and not (run / "last.prev.state.safetensors").exists()
    assert main(harness.resume_args(run)) == 0
    assert harness.same_weights(ref, run)
