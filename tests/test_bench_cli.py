"""`cnnzoo bench`: rows in timm's columns, progress, and one-line user errors (nothing timed)."""
from __future__ import annotations

import csv
import re

from cnnzoo import list_models
from cnnzoo.cli import main
from cnnzoo.cli.cmd_bench import _expand
from cnnzoo.perf.bench import COLUMNS

TINY = ["--batch-size", "2", "--warmup", "0", "--steps", "1", "--device", "cpu", "--threads", "1"]
TIMM_COLUMNS = ("model", "infer_samples_per_sec", "infer_step_time", "infer_batch_size",
                "infer_img_size", "infer_gmacs", "param_count", "train_samples_per_sec",
                "train_step_time", "train_batch_size", "train_img_size")


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_bench_writes_timm_columns_for_infer_and_train(tmp_path, capsys):
    out = tmp_path / "results.csv"
    assert main(["bench", "lenet5", "resnet18", "--img-size", "32", "--mode", "both",
                 "-o", str(out), *TINY]) == 0
    rows = _rows(out)
    assert list(rows[0])[:len(TIMM_COLUMNS)] == list(TIMM_COLUMNS)
    assert [r["model"] for r in rows] == ["lenet5", "resnet18"]
    for r in rows:
        assert float(r["infer_samples_per_sec"]) > 0 and float(r["train_samples_per_sec"]) > 0
        assert r["infer_batch_size"] == r["train_batch_size"] == "2"
        assert r["infer_img_size"] == "32" and r["backend"] == "torch"
    captured = capsys.readouterr()
    # Progress: one line per finished model on stderr, then the table on stdout; first, whether
    # huge pages are on (conftest imports cnnzoo before torch, as users do).
    from cnnzoo.memory import huge_pages
    assert captured.err.startswith(huge_pages().describe())
    assert "lenet5: infer_samples_per_sec=" in captured.err
    assert "resnet18" in captured.out and "wrote 2 rows" in captured.out


def test_bench_optimize_and_onnxruntime_backend_say_how_they_ran(tmp_path):
    out = tmp_path / "r.csv"
    assert main(["bench", "resnet18", "--img-size", "32", "--optimize", "--channels-last",
                 "-o", str(out), *TINY]) == 0
    how = _rows(out)[0]["optimized"]
    # Whether folding, oneDNN fusion and micro-batches pay is measured, so either outcome is
    # right; the layout was pinned.
    assert re.fullmatch(r"optimized: (1 pools on oneDNN, )?(0|20) BN folded"
                        r"(, \d+ BatchNorm/SE in place)?, channels_last"
                        r"(, 20 convs fused for oneDNN)?(, micro-batches of [248])?", how), how
    assert main(["bench", "resnet18", "--img-size", "32", "--backend", "onnxruntime",
                 "-o", str(out), "--force", *TINY]) == 0
    row = _rows(out)[0]
    assert row["backend"] == "onnxruntime" and float(row["infer_samples_per_sec"]) > 0
    assert row["train_samples_per_sec"] == ""
    assert main(["bench", "resnet18", "--img-size", "32", "--backend", "onnxruntime",
                 "--optimize", "-o", str(out), "--force", *TINY, "-b", "4"]) == 0
    row = _rows(out)[0]
    how = row["optimized"]
    assert row["infer_batch_size"] == "4"
    # Slicing the batch (2 of 4) is measured against the whole: either is right.
    assert re.fullmatch(r"onnxruntime, optimized: 20 BN folded, NCHW"
                        r"(, micro-batches of 2)?, onnxruntime", how), how


def test_bench_amp_bf16_runs_on_cpu(tmp_path):
    out = tmp_path / "amp.csv"
    assert main(["bench", "lenet5", "--amp", "--mode", "both", "-o", str(out), *TINY]) == 0
    assert _rows(out)[0]["amp"] == "bfloat16"


def test_bench_never_overwrites_results_without_force(tmp_path, capsys):
    out = tmp_path / "mine.csv"
    out.write_text("precious\n")
    assert main(["bench", "lenet5", "-o", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and len(err.strip().splitlines()) == 1
    assert out.read_text() == "precious\n"


def test_bench_user_errors_are_one_line(capsys):
    for argv in (["bench", "resnt18"], ["bench", "lenet5", "--backend", "onnxruntime",
                                        "--mode", "train"],
                 ["bench", "nosuch*"], ["bench", "lenet5", "--device", "nosuchdevice"]):
        assert main(argv + TINY[:6]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("cnnzoo: error:") and len(err.strip().splitlines()) == 1, err


def test_bench_expands_wildcards_in_registry_order():
    assert _expand(["resnet1*", "resnet18"]) == list_models("resnet1*")
    assert set(COLUMNS) >= set(TIMM_COLUMNS)
