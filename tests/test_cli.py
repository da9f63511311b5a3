from __future__ import annotations

import subprocess
import sys

from cnnzoo.cli import main


def test_list_pattern_prints_only_matching_rows(capsys):
    assert main(["list", "resnet*"]) == 0
    out = capsys.readouterr().out
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        assert name in out
    assert "vgg16" not in out and "lenet5" not in out
    assert "25.56M" in out  # resnet50's params, counted on the meta device


def test_list_with_no_match_says_so(capsys):
    assert main(["list", "nosuch*"]) == 1
    assert "no registered model matches" in capsys.readouterr().out


def test_list_json_is_machine_readable(capsys):
    import json
    assert main(["list", "vgg1?", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert rows[2]["params"] == 138357544


def test_user_errors_end_in_one_line_and_nonzero_exit():
    # Through a real process, as a user runs it: no traceback on stderr.
    proc = subprocess.run([sys.executable, "-m", "cnnzoo.cli", "nosuchcommand"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
