from __future__ import annotations

import csv
import os
import subprocess
import sys

import torch

from cnnzoo.engine import TrainConfig, train
from cnnzoo.engine.distributed import DistInfo
from cnnzoo.weights.io import load_state_dict

# A tiny model, no augmentation (each rank would draw its own), no BatchNorm (per-rank
# statistics differ by design): what remains must match one process to float precision.
ARGS = dict(epochs=2, limit_batches=3, batch_size=32, opt="adamw", lr=3e-3, sched="cosine")


def _metrics(run) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    train(TrainConfig(model="lenet5", augment=False, **ARGS), single, DistInfo(),
          log=lambda *_: None)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cnnzoo.cli", "train", "lenet5", "--no-augment", "-o", str(double),
           "--epochs", "2", "--limit-batches", "3", "-b", "32", "--opt", "adamw", "--lr", "3e-3",
           "--sched", "cosine", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Rank 0 alone writes: one summary line, one run folder.
    assert proc.stdout.count("held-out accuracy") == 1
    one, two = _metrics(single), _metrics(double)
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        for key in ("train_loss", "val_loss"):
            assert abs(float(a[key]) - float(b[key])) < 1e-5, (key, a[key], b[key])
        assert a["val_acc"] == b["val_acc"]
    w1, w2 = load_state_dict(single / "last.safetensors"), load_state_dict(double / "last.safetensors")
    assert all(torch.allclose(w1[k], w2[k], atol=1e-6) for k in w1)
