"""bench/peers.py's bookkeeping: pooling the two build orders, the child processes' arguments, the
ceiling each ratio goal is bounded by, and one whole in-process run on a small model.

Nothing here asserts a time: the run's numbers are checked against each other (a ratio is the
quotient of the images/s it came from, the ceiling follows from the roofline it was given).
"""
from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "peers.py"


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("bench_peers", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ceiling_is_the_roofline_over_timms_flops(peers):
    rows = [{"model": "a", "gmacs": 4.0, "timm_ips": 10.0},
            {"model": "b", "timm_ips": 10.0},  # no MAC count: no ceiling to give
            {"model": "c", "gmacs": 1.0}]
    peers.add_ceilings(rows, 200.0)
    # 2 x 4 GMACs x 10 images/s = 80 GFLOP/s: 0.4 of 200, so at best 2.5x timm.
    assert rows[0]["timm_roofline"] == pytest.approx(0.4)
    assert rows[0]["ceiling_vs_timm"] == pytest.approx(2.5)
    assert "ceiling_vs_timm" not in rows[1] and "ceiling_vs_timm" not in rows[2]


def test_pool_rows_averages_ips_and_takes_geometric_means(peers):
    a = {"model": "m", "zoo_opt_ips": 10.0, "timm_ips": 4.0, "zoo_opt_vs_timm": 2.0,
         "zoo_ort_vs_timm": 1.0, "zoo_opt_vs_timm_range": "1.50-2.50", "only_a": 1,
         "zoo_best_vs_timm": 2.0}
    b = {"model": "m", "zoo_opt_ips": 20.0, "timm_ips": 6.0, "zoo_opt_vs_timm": 8.0,
         "zoo_ort_vs_timm": 9.0, "zoo_opt_vs_timm_range": "1.00-2.00",
         "zoo_best_vs_timm": 9.0}
    out = peers.pool_rows([a, b])
    assert out["zoo_opt_ips"] == 15.0 and out["timm_ips"] == 5.0
    assert out["zoo_opt_vs_timm"] == pytest.approx(4.0)  # sqrt(2 x 8)
    assert out["zoo_ort_vs_timm"] == pytest.approx(3.0)  # sqrt(1 x 9)
    assert out["zoo_opt_vs_timm_range"] == "1.00-2.50"
    # The best is the better of the pooled ratios, not the best of either row.
    assert out["zoo_best_vs_timm"] == pytest.approx(4.0)
    assert "only_a" not in out  # a key one row lacks is not reported as if both had it


def test_pool_rows_ignores_a_failed_process(peers):
    good = {"model": "m", "zoo_opt_vs_timm": 2.0, "zoo_best_vs_timm": 2.0}
    assert peers.pool_rows([{"model": "m"}, good]) == good
    assert peers.pool_rows([{"model": "m"}, {"model": "m"}]) == {"model": "m"}


def test_child_argv_replaces_models_and_build_order(peers):
    argv = ["-b", "16", "--models", "resnet50,vgg16", "--build-order=both", "--threads", "2",
            "--models=x"]
    got = peers._child_argv(argv, "vgg16", "/tmp/row.json", "peers-first")
    assert got == ["-b", "16", "--threads", "2", "--models", "vgg16", "--build-order",
                   "peers-first", "--row-json", "/tmp/row.json"]


def test_span_rounds_outwards_so_it_holds_its_values(peers):
    assert peers.span(1.2871, 1.3534) == "1.28-1.36"
    assert peers.span(0.9, 1.1) in ("0.89-1.11", "0.90-1.10", "0.89-1.10", "0.90-1.11")
    for lo, hi in ((0.3333, 0.6667), (1.0049, 1.0051), (2.5, 2.5)):
        a, b = map(float, peers.span(lo, hi).split("-"))
        assert a <= lo and hi <= b and b - a < hi - lo + 0.021


def test_geomean_skips_missing_values(peers):
    assert peers.geomean([2.0, 8.0, None, 0]) == pytest.approx(4.0)
    assert math.isnan(peers.geomean([]))


def test_one_run_in_process_writes_consistent_rows(peers, monkeypatch, tmp_path, capsys):
    # The roofline is fixed so the ceiling can be checked from the row alone; measuring it
    # would add seconds and check nothing about the harness.
    monkeypatch.setattr(peers, "roofline", lambda device, dtype, note: {"peak": 100.0})
    monkeypatch.setitem(peers.PEERS, "resnet18", ("resnet18", "resnet18", 224))
    out = tmp_path / "rows.csv"
    assert peers.main(["--models", "resnet18", "-b", "2", "--in-process", "--build-order",
                       "cnnzoo-first", "--rounds", "2", "--steps", "1", "--warmup", "0",
                       "--no-ort", "--csv", str(out)]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["model"] == "resnet18"
    for key in ("zoo_eager_ips", "zoo_opt_ips", "timm_ips", "tv_ips"):
        assert float(row[key]) > 0
    lo, hi = map(float, row["zoo_opt_vs_timm_range"].split("-"))
    assert lo <= float(row["zoo_opt_vs_timm"]) <= hi
    gflops = 2 * float(row["gmacs"]) * float(row["timm_ips"])
    # The row holds three decimals and images/s to two: agreement to the rounding, whatever
    # the machine's speed.
    assert float(row["ceiling_vs_timm"]) == pytest.approx(100.0 / gflops, rel=1e-2, abs=6e-4)
    assert float(row["timm_roofline"]) == pytest.approx(gflops / 100.0, rel=1e-2, abs=6e-4)
    zoo_gflops = 2 * float(row["gmacs"]) * float(row["zoo_opt_ips"])
    assert float(row["zoo_opt_roofline"]) == pytest.approx(zoo_gflops / 100.0, rel=1e-2,
                                                           abs=6e-4)
    # One model: each geometric mean is its own ratio; --no-ort leaves that column out.
    summary = next(line for line in capsys.readouterr().out.splitlines()
                   if line.startswith("geometric mean:"))
    means = dict(part.split("=") for part in summary.removeprefix("geometric mean: ").split(", "))
    assert "zoo_ort_vs_timm" not in means
    assert float(means["ceiling_vs_timm"]) == pytest.approx(float(row["ceiling_vs_timm"]),
                                                            abs=1e-3)


def test_timm_trains_with_the_regularisation_cnnzoo_trains_with(peers):
    import timm
    import torch

    import cnnzoo
    for name, (timm_name, _, _) in peers.PEERS.items():
        with torch.device("meta"):  # only the modules' settings are read, no weights
            ours = cnnzoo.create_model(name)
            theirs = timm.create_model(timm_name, **peers.TIMM_TRAIN_KWARGS.get(name, {}))
        # Head dropout, one entry per place it is applied: a module in ours; in timm's, modules
        # (vgg16's two) or, where it has none, the drop_rate its head applies functionally.
        our_p = sorted(m.p for m in ours.modules() if isinstance(m, torch.nn.Dropout) and m.p)
        their_p = sorted(m.p for m in theirs.modules()
                         if isinstance(m, torch.nn.Dropout) and m.p)
        if not their_p and getattr(theirs, "drop_rate", 0.0):
            their_p = [theirs.drop_rate]
        assert our_p == their_p, name
        # Stochastic depth: timm gives every block a DropPath but uses it only where the block
        # adds its skip; ours has one exactly there. The schedules must agree, block by block.
        our_dp = [m.drop_prob for m in ours.modules() if type(m).__name__ == "DropPath"]
        their_dp = [m.drop_path.drop_prob for m in theirs.modules()
                    if getattr(m, "has_skip", False)
                    and type(getattr(m, "drop_path", None)).__name__ == "DropPath"]
        assert our_dp == pytest.approx(their_dp), name
