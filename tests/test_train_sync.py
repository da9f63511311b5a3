"""The training loop reads the loss and accuracy off the device only every few steps off a CPU.

CI has no GPU, so the schedule is forced on the CPU here: the numbers a run reports must not
depend on it, and the host must not read a device value between the scheduled reads.
"""
from __future__ import annotations

import csv
import traceback

import torch

from cnnzoo.cli import main
from cnnzoo.engine import trainer as trainer_mod
from cnnzoo.engine.checkpoint import read_metadata
from cnnzoo.engine.evaluate import EvalResult, evaluate

STEPS = 7
ARGS = ["train", "lenet5", "--data", "digits", "--epochs", "2", "--limit-batches", str(STEPS),
        "-b", "16", "--no-augment", "--deterministic"]


def _metrics(run):
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
                for row in csv.DictReader(f)]


def _count_reads(monkeypatch, skip: tuple[str, ...] = ()) -> list[str]:
    """Every host read of a tensor's value from now on, except from files matching ``skip``."""
    reads = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "cpu"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **kw):
            if not skip or not any(part in f.filename for f in traceback.extract_stack()
                                   for part in skip):
                reads.append(_name)
            return _real(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def test_reading_every_third_step_reports_the_same_numbers_as_every_step(tmp_path, monkeypatch):
    assert main([*ARGS, "-o", str(tmp_path / "each")]) == 0
    monkeypatch.setattr(trainer_mod, "sync_every", lambda device: 3)
    assert main([*ARGS, "-o", str(tmp_path / "third")]) == 0
    each, third = _metrics(tmp_path / "each"), _metrics(tmp_path / "third")
    assert len(each) == 2 and each == third


def test_a_mid_epoch_checkpoint_holds_the_sums_up_to_its_step(tmp_path, monkeypatch):
    # --save-every 2 with reads every 3 steps: the checkpoint at step 2 must read steps 1-2
    # first, so that a resumed epoch reports what an uninterrupted one does.
    monkeypatch.setattr(trainer_mod, "sync_every", lambda device: 3)
    seen = []
    real = trainer_mod.Trainer._checkpoint

    def spy(self, epoch, step=0, partial=None):
        if step:
            seen.append((step, partial["seen"]))
        return real(self, epoch, step, partial)

    monkeypatch.setattr(trainer_mod.Trainer, "_checkpoint", spy)
    assert main([*ARGS, "--epochs", "1", "--save-every", "2", "-o", str(tmp_path / "run")]) == 0
    assert seen == [(2, 32.0), (4, 64.0), (6, 96.0)]
    assert read_metadata(tmp_path / "run" / "last.safetensors")["epoch"] == "1"


def test_no_device_value_is_read_between_the_scheduled_reads(tmp_path, monkeypatch):
    # The data pipeline's tensors live on the host whatever the device: not a wait.
    reads = _count_reads(monkeypatch, skip=("torch/utils/data/", "cnnzoo/data/"))
    # Scoring is a separate pass (read once at its end); left out so only the steps count.
    monkeypatch.setattr(trainer_mod, "evaluate", lambda *a, **k: EvalResult(
        loss=0.0, top1=0.0, top5=0.0, count=1, confusion=torch.zeros(10, 10)))
    monkeypatch.setattr(trainer_mod, "sync_every", lambda device: 3)
    steps_seen = []
    real_drain = trainer_mod.Trainer._drain

    def drain(self, pending, sums, epoch, step, bar):
        before = len(reads)
        out = real_drain(self, pending, sums, epoch, step, bar)
        steps_seen.append((step, len(reads) - before))
        return out

    monkeypatch.setattr(trainer_mod.Trainer, "_drain", drain)
    real_fit = trainer_mod.Trainer.fit

    def fit(self, *a, **kw):  # counting starts with the first step
        reads.clear()
        return real_fit(self, *a, **kw)

    monkeypatch.setattr(trainer_mod.Trainer, "fit", fit)
    assert main([*ARGS, "--epochs", "1", "-o", str(tmp_path / "run")]) == 0
    # Reads at steps 3, 6 and 7 (the epoch's end), two each (losses, hit counts), and none else
    # inside the loop; what follows the loop (checkpoint, metrics) reads on the host.
    assert steps_seen == [(3, 2), (6, 2), (7, 2)]
    assert reads[:6] == ["tolist"] * 6


def test_scoring_reads_the_device_once_however_many_batches_and_scores_right(monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 7))
    x, y = torch.randn(40, 3, 2, 2), torch.randint(0, 7, (40,))
    logits = model(x).detach()
    want_loss = float(torch.nn.functional.cross_entropy(logits, y))
    hits1 = int((logits.argmax(1) == y).sum())
    want_top1, want_top5 = 100 * hits1 / 40, 100 * int(
        (logits.topk(5, 1).indices == y[:, None]).any(1).sum()) / 40
    counts = []
    for batch in (20, 4):
        loader = [(x[i:i + batch], y[i:i + batch]) for i in range(0, 40, batch)]
        reads = _count_reads(monkeypatch)
        result = evaluate(model, loader, 7, device=torch.device("cpu"))
        counts.append(len(reads))
        monkeypatch.undo()
        assert result.count == 40
        assert abs(result.loss - want_loss) < 1e-6
        assert (result.top1, result.top5) == (want_top1, want_top5)
        assert result.confusion.sum() == 40 and result.confusion.diag().sum() == hits1
    assert counts[0] == counts[1], counts  # 2 batches or 10: the same reads
