"""The evolution atlas: every registered model built, measured and drawn on one page.

Parameters, MACs and diagrams come from the meta device (no memory, no arithmetic); only the CPU
latency needs real weights, so each model is built for real once, timed at batch 1 (median of a
few runs after a warm-up) and dropped before the next. A model that fails to build or trace is
listed with its error instead of stopping the atlas: the page is for every model in the registry.
"""
from __future__ import annotations

import fnmatch
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..registry import create_model, default_cfg, list_models, model_card
from . import charts
from .counts import count_macs, count_params
from .draw import auto_depth, build_view, render_svg_text, to_dot
from .graph import trace
from .meta import on_meta
from .summary import human

# Where the model-zoo page of the docs is, from the atlas's folder: `make run` writes atlas/ and
# `make docs` writes site/ beside it; the docs build puts the atlas inside the site, one up.
DOCS_URL = "../site/"


@dataclass
class AtlasRow:
    name: str
    family: str
    year: int
    paper: str
    url: str | None
    innovation: str
    top1: float | None
    top1_source: str
    input_size: tuple[int, int, int]
    params: int | None = None
    macs: int | None = None
    latency_ms: float | None = None
    diagram_depth: int | None = None
    error: str | None = None


def measure(name: str, *, runs: int = 3, latency: bool = True, threads: int = 1,
            settings: dict | None = None) -> tuple[AtlasRow, str | None]:
    """One model's row and its diagram as Graphviz source (None if it could not be traced)."""
    card, cfg = model_card(name), default_cfg(name)
    row = AtlasRow(name, card.family, card.year, card.paper, card.url, card.innovation, card.top1,
                   card.top1_source, tuple(cfg.input_size))
    source = None
    try:
        with on_meta():
            model = create_model(name, **(settings or {}))
        row.params = count_params(model)
        row.macs = count_macs(model)
        graph = trace(model)
        row.diagram_depth = auto_depth(graph)
        source = to_dot(build_view(graph, row.diagram_depth),
                        f"{name}  ({'x'.join(map(str, row.input_size))} input)")
        del model, graph
        if latency:
            row.latency_ms = cpu_latency_ms(name, runs, threads, settings)
    except Exception as exc:  # one broken model must not hide the others
        row.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return row, source


def cpu_latency_ms(name: str, runs: int = 3, threads: int = 1,
                   settings: dict | None = None) -> float:
    """Median wall time of one forward pass of one image on the CPU, after one warm-up pass.

    One thread by default, as the MobileNet and EfficientNet papers time single-threaded
    phone cores: the figure then compares across machines and stays steady when other
    processes share the CPU (with two threads and a busy neighbour, every layer's thread
    barrier waits on a descheduled thread, which made ResNet-18 ten times slower here).
    """
    model = create_model(name, **(settings or {})).eval()
    x = torch.randn(1, *default_cfg(name).input_size)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    times = []
    try:
        with torch.inference_mode():
            model(x)
            for _ in range(max(1, runs)):
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(before)
    return statistics.median(times)


def _blocks(out: Path, log: Callable[[str], None]) -> tuple[list[dict], dict[str, str]]:
    """"The evolution of the block": each block's numbers, and its diagram under blocks/."""
    from .blocks import evolution_of_the_block

    (out / "blocks").mkdir(exist_ok=True)
    rows, svgs = [], {}
    for b in evolution_of_the_block():
        row = asdict(b)
        dot = row.pop("dot")
        (out / "blocks" / f"{b.key}.dot").write_text(dot)
        svg = render_svg_text(dot)
        if svg:
            (out / "blocks" / f"{b.key}.svg").write_text(svg)
            svgs[b.key] = svg
        rows.append(row)
    log(f"drew {len(rows)} blocks")
    return rows, svgs


def cpu_name() -> str:
    """The processor's marketing name (Linux's /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def dense_peak_gflops(threads: int = 1, n: int = 1024, runs: int = 20) -> float:
    """What this CPU reaches on the densest work there is, an fp32 n×n matmul (best of a few),
    with the threads the latencies were measured with: the ceiling the models are set against."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a @ b
        best = float("inf")
        for _ in range(runs):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return 2 * n ** 3 / best / 1e9


def build_atlas(out_dir: str | Path, pattern: str = "*", *, quick: bool = False, runs: int = 3,
                threads: int = 1, settings: dict | None = None, with_blocks: bool = True,
                timed: str = "*", docs_url: str | None = DOCS_URL,
                log: Callable[[str], None] = print) -> Path:
    """Measure every model matching ``pattern`` and write ``out_dir``/index.html and its charts.

    ``quick`` skips the latency (the only part that runs real arithmetic) for tests and previews;
    otherwise the models matching ``timed`` are timed, and the machine's dense peak with them.
    Each model links to its entry on the docs' model-zoo page under ``docs_url`` (None: no link).
    """
    out = Path(out_dir)
    (out / "diagrams").mkdir(parents=True, exist_ok=True)
    names = list_models(pattern)
    rows, diagrams = [], {}
    # The peak is the best the CPU did: measured before and after the models, so a neighbour
    # busy at one moment does not set it low.
    peak = 0.0 if quick else dense_peak_gflops(threads)
    started = time.perf_counter()
    for i, name in enumerate(names, start=1):
        row, source = measure(name, runs=runs, threads=threads, settings=settings,
                              latency=not quick and fnmatch.fnmatchcase(name, timed))
        svg = render_svg_text(source) if source else None
        if source:
            (out / "diagrams" / f"{name}.dot").write_text(source)
        if svg:
            (out / "diagrams" / f"{name}.svg").write_text(svg)
            diagrams[name] = svg
        rows.append(row)
        log(f"[{i}/{len(names)}] {name}: " + (f"error {row.error}" if row.error else
            f"{human(row.params)} params, {human(row.macs)} MACs"
            + (f", {row.latency_ms:.1f} ms" if row.latency_ms is not None else "")))
    data = [asdict(r) for r in rows]
    ok = [d for d in data if d["error"] is None]
    timed_ok = any(d["latency_ms"] for d in ok)
    machine = dict(cpu=cpu_name(), threads=threads,
                   cores=os.cpu_count(), torch=torch.__version__,
                   python=platform.python_version(), settings=dict(settings or {}),
                   peak_gflops=max(peak, dense_peak_gflops(threads)) if timed_ok else None,
                   latency="not measured (--quick)" if quick else
                   f"batch 1, {threads} thread{'s' if threads > 1 else ''}, median of {runs} "
                   f"runs after a warm-up")
    figures, interactive = {}, {}
    for stem, make in (("timeline", charts.timeline), ("top1_vs_macs", charts.top1_vs_macs),
                       ("params_macs_by_year", charts.by_year)):
        figures[stem] = charts.save(make(ok), out / stem) if ok else None
    if timed_ok:
        figures["flops_vs_latency"] = charts.save(charts.flops_vs_latency(ok, machine),
                                                  out / "flops_vs_latency")
    if ok:
        from . import interactive as ia
        for stem, fig in (("top1_vs_macs", ia.top1_vs_macs(ok)),
                          ("params_macs_by_year", ia.by_year(ok)),
                          ("flops_vs_latency", ia.flops_vs_latency(ok, machine))):
            if fig is not None:
                interactive[stem] = ia.to_div(fig, f"chart-{stem}")
    blocks, block_svgs = _blocks(out, log) if with_blocks else ([], {})
    (out / "atlas.json").write_text(json.dumps(dict(machine=machine, models=data,
                                                    blocks=blocks), indent=2))
    from .atlas_html import page
    (out / "index.html").write_text(page(data, figures, diagrams, machine, blocks, block_svgs,
                                         interactive, docs_url))
    log(f"wrote {out / 'index.html'} ({len(rows)} models, {time.perf_counter() - started:.0f} s)")
    return out / "index.html"
