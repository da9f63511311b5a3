"""Benchmark rows as CSV, each with the machine and software that measured it.

A ratio means little without the CPU, the torch build and the commit behind it, so every row
carries them (timm keeps its benchmark results as CSV files the same way). ``write_rows`` adds
to a file: several runs, or several machines, can share one, and docs/performance.md is rendered
from the files in ``bench/results/`` by ``tools/gen_performance.py``.
"""
from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

# The instruction sets that decide which kernels oneDNN, NNPACK and ONNX Runtime can use.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
             "asimd", "sve")

META = ("date", "commit", "torch", "cpu", "cores", "threads", "isa", "command")


def cpu_info() -> tuple[str, str]:
    """(model name, the ISA flags of ISA_FLAGS it has), from /proc/cpuinfo where there is one."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() in ("flags", "Features"):
                    flags |= set(value.split())
    except OSError:
        pass
    return name, " ".join(f for f in ISA_FLAGS if f in flags)


def commit() -> str:
    """The repository's short commit, '+dirty' when its code differs from it."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True,
                              capture_output=True, check=True).stdout.strip()
        # Only code makes a measurement differ from its commit: edited docs or data do not.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ":/src", ":/bench/*.py", ":/pyproject.toml"],
                               cwd=here, text=True, capture_output=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine(threads: int | None = None, argv: list[str] | None = None) -> dict:
    """The columns every row of this run shares."""
    import torch

    cpu, isa = cpu_info()
    script = os.path.relpath(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"), "commit": commit(),
            "torch": torch.__version__, "cpu": cpu, "cores": os.cpu_count(),
            "threads": threads or torch.get_num_threads(), "isa": isa,
            "command": shlex.join(["python", script, *(argv if argv is not None else sys.argv[1:])])}


def write_rows(path: str | os.PathLike, rows: list[dict], **shared) -> Path:
    """Add ``rows`` to the CSV at ``path``, each prefixed by ``machine()`` and ``shared``.

    Columns are the union of the file's and the new rows', so a run that measured an extra path
    (ONNX Runtime, int8) still lands in the same file; a cell a row lacks stays empty.
    """
    path = Path(path)
    meta = {**machine(shared.pop("threads", None), shared.pop("argv", None)), **shared}
    new = [{**meta, **row} for row in rows]
    old: list[dict] = []
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as f:
            old = list(csv.DictReader(f))
    cols = list(dict.fromkeys([*META, *(k for r in old + new for k in r)]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(old + new)
    os.replace(tmp, path)
    return path


def read_rows(path: str | os.PathLike) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))
