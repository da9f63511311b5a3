"""Render the tables of docs/performance.md from the CSV files in bench/results/, and
docs/int8.md's accuracy table from those in bench/results/accuracy/.

    .venv/bin/python tools/gen_performance.py            # rewrite the tables in the page
    .venv/bin/python tools/gen_performance.py --check    # exit 1 if a page is stale

The page's prose is written by hand; only the part between the two markers below is generated,
one table per run (rows sharing date, commit, machine and command), newest first.
"""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "performance.md"
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- tables: start -->", "<!-- tables: end -->"
# docs/int8.md's accuracy table, from bench/int8_accuracy.py's rows.
ACCURACY_PAGE = ROOT / "docs" / "int8.md"
ACCURACY = RESULTS / "accuracy"
ACC_START, ACC_END = "<!-- accuracy: start -->", "<!-- accuracy: end -->"
ACC_COLS = (("model", "model"), ("epochs", "epochs"), ("held_out", "held out"),
            ("calibration_images", "calibration images"), ("fp32_top1", "fp32 top-1"),
            ("onnxruntime_int8_top1", "int8 top-1, ONNX Runtime"),
            ("onnxruntime_agreement", "agreement, ONNX Runtime"),
            ("reference_int8_top1", "int8 top-1, PT2E"), ("reference_agreement", "agreement, PT2E"))

# (column in the CSV, heading): images/s of each library and path, then the ratios.
IPS = (("zoo_eager_ips", "cnnzoo eager"), ("zoo_opt_ips", "cnnzoo `optimize`"),
       ("zoo_ort_ips", "cnnzoo ONNX Runtime"), ("zoo_int8_ips", "cnnzoo int8"),
       ("timm_ips", "timm"), ("tv_ips", "torchvision"), ("tv_int8_ips", "torchvision int8"))
RATIOS = (("zoo_eager_vs_timm", "eager / timm"), ("zoo_opt_vs_timm", "`optimize` / timm"),
          ("zoo_ort_vs_timm", "ORT / timm"), ("zoo_eager_vs_tv", "eager / torchvision"),
          ("zoo_int8_vs_timm", "int8 / timm fp32"),
          ("zoo_int8_vs_tv_int8", "int8 / torchvision int8"),
          ("zoo_opt_roofline", "`optimize`, share of roofline"),
          ("timm_roofline", "timm, share of roofline"), ("ceiling_vs_timm", "ceiling / timm"))
RUN_KEYS = ("date", "commit", "torch", "cpu", "cores", "threads", "isa", "command")


def _geomean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values))


def runs() -> list[tuple[str, dict, list[dict]]]:
    """(file name, the run's shared columns, its rows) for every run in every CSV."""
    out = []
    for path in sorted(RESULTS.glob("*.csv")):
        with path.open(newline="") as f:
            grouped: dict[tuple, list[dict]] = {}
            for row in csv.DictReader(f):
                grouped.setdefault(tuple(row.get(k, "") for k in RUN_KEYS), []).append(row)
        for key, rows in grouped.items():
            out.append((path.name, dict(zip(RUN_KEYS, key)), rows))
    return sorted(out, key=lambda r: (r[1]["date"], r[0]), reverse=True)


def table(rows: list[dict]) -> str:
    cols = [(k, h) for k, h in IPS + RATIOS if any(r.get(k) for r in rows)]
    lines = ["| model | " + " | ".join(h for _, h in cols) + " |",
             "| --- |" + " ---: |" * len(cols)]
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k) or "–"
            if r.get(f"{k}_range"):  # the rounds' spread: how far to trust the ratio
                v += f" ({r[f'{k}_range']})"
            cells.append(v)
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    means = []
    for k, _ in cols:
        vals = [float(r[k]) for r in rows if r.get(k)]
        means.append(f"**{_geomean(vals):.3g}**" if k.endswith(("_vs_timm", "_vs_tv", "_vs_tv_int8")) and
                     len(vals) > 1 else "")
    if any(means):
        lines.append("| geometric mean | " + " | ".join(means) + " |")
    return "\n".join(lines)


def tables() -> str:
    parts = []
    for name, run, rows in runs():
        roof = rows[0].get("roofline_gflops")
        parts.append(
            f"### {run['cpu']}, {run['threads']} threads, {run['date']}\n\n"
            f"`bench/results/{name}`: torch {run['torch']}, commit {run['commit']}, "
            f"{run['cores']} cores with {run['isa'] or 'no listed ISA extensions'}"
            + (f", roofline {roof} GFLOP/s" if roof else "") + ".\n\n"
            f"```bash\n{run['command']}\n```\n\n{table(rows)}\n")
    return "\n".join(parts) if parts else "No results yet: run bench/peers.py with --csv.\n"


def _between(text: str, start: str, end: str, body: str) -> str:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}{end}{tail}"


def render(text: str) -> str:
    return _between(text, START, END, tables())


def accuracy_tables() -> str:
    parts = []
    for path in sorted(ACCURACY.glob("*.csv")):
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            continue
        run = rows[-1]
        lines = ["| " + " | ".join(h for _, h in ACC_COLS) + " |",
                 "| --- |" + " ---: |" * (len(ACC_COLS) - 1)]
        lines += ["| " + " | ".join(r.get(k) or "–" for k, _ in ACC_COLS) + " |" for r in rows]
        parts.append(f"`bench/results/accuracy/{path.name}`: {run['cpu']}, torch {run['torch']}, "
                     f"commit {run['commit']}, {run['date']}.\n\n```bash\n{run['command']}\n```"
                     f"\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts) if parts else "No results yet: run bench/int8_accuracy.py --csv.\n"


def render_accuracy(text: str) -> str:
    return _between(text, ACC_START, ACC_END, accuracy_tables())


def main(argv: list[str]) -> int:
    stale = 0
    for page, rendering in ((PAGE, render), (ACCURACY_PAGE, render_accuracy)):
        text = page.read_text()
        new = rendering(text)
        if "--check" in argv:
            if new != text:
                print(f"{page} is stale: run python tools/gen_performance.py", file=sys.stderr)
                stale = 1
            continue
        page.write_text(new)
        print(f"wrote {page}")
    return stale


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
