"""The atlas charts (matplotlib): family timeline, top-1 against MACs, params and MACs by year.

Each function takes the atlas rows (dicts with name, family, year, params, macs, top1,
innovation) and returns a matplotlib Figure; ``save`` writes it as SVG and PNG.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

# Deterministic ids inside the SVGs, so two runs write the same files.
plt.rcParams["svg.hashsalt"] = "cnnzoo"
plt.rcParams["font.size"] = 9


def _family_colors(rows: list[dict]) -> dict[str, tuple]:
    families = list(dict.fromkeys(r["family"] for r in sorted(rows, key=lambda r: r["year"])))
    cmap = plt.get_cmap("tab20" if len(families) > 10 else "tab10")
    return {f: cmap(i % cmap.N) for i, f in enumerate(families)}


def timeline(rows: list[dict]) -> plt.Figure:
    """One line per family: a dot at its year on the left, what it brought in a column beside."""
    fams: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: (r["year"], r["name"])):
        f = fams.setdefault(r["family"], dict(year=r["year"], innovation=r["innovation"],
                                              models=[]))
        f["models"].append(r["name"])
    colors = _family_colors(rows)
    years = [f["year"] for f in fams.values()]
    lo, hi = min(years), max(years)
    fig = plt.figure(figsize=(12, 0.36 * len(fams) + 1.0))
    ax = fig.add_axes((0.02, 0.6 / (0.36 * len(fams) + 1.0), 0.3,
                       1 - 1.0 / (0.36 * len(fams) + 1.0)))
    for i, (fam, f) in enumerate(fams.items()):
        y = len(fams) - 1 - i
        n = len(f["models"])
        ax.hlines(y, f["year"], hi + 1, color="#cccccc", linewidth=0.7, linestyle=":", zorder=1)
        ax.scatter([f["year"]], [y], s=70, color=colors[fam], zorder=3, edgecolor="black",
                   linewidth=0.5)
        n = len(f["models"])
        ax.text(1.03, y, f"{fam} · {f['year']}", transform=ax.get_yaxis_transform(),
                va="center", fontsize=8.5, fontweight="bold", clip_on=False)
        ax.text(1.45, y, f"{n} model{'s' if n > 1 else ''}: {f['innovation']}",
                transform=ax.get_yaxis_transform(), va="center", fontsize=8.5, clip_on=False)
    ax.set_yticks([])
    ax.set_xlim(lo - 1, hi + 1)
    step = max(1, -(-(hi - lo) // 6))
    ax.set_xticks(range(lo, hi + 1, step))
    ax.set_ylim(-0.7, len(fams) - 0.3)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title("Families of classic CNNs by the year of their paper", loc="left")
    return fig


def _place_labels(ax, points: list[tuple[float, float, str]], fontsize: float = 7) -> None:
    """Annotate points, pushing a label down until it no longer covers an earlier one."""
    ax.autoscale_view()
    to_axes = ax.transData + ax.transAxes.inverted()
    fig_h = ax.get_figure().get_size_inches()[1] * ax.get_position().height * 72
    line = (fontsize + 2) / fig_h                     # one label height, in axes fraction
    placed: list[tuple[float, float, float]] = []     # (x, y, width) in axes fraction
    for x, y, text in sorted(points, key=lambda p: -p[1]):
        ax_x, ax_y = to_axes.transform((x, y))
        width = 0.0075 * len(text) * fontsize / 7
        dy = 0.004
        while any(abs(ax_y + dy - py) < line and ax_x < px + pw and px < ax_x + width
                  for px, py, pw in placed):
            dy -= line
        placed.append((ax_x, ax_y + dy, width))
        ax.annotate(text, (x, y), xytext=(4, dy * fig_h), textcoords="offset points",
                    fontsize=fontsize, va="bottom")


def _label_some(ax, points: list[tuple], fontsize: float = 7) -> None:
    """Name as many points as fit with no label over another label or marker, biggest first.

    ``points`` are ``(x, y, text, marker radius in points)``; the rest are in the interactive
    chart's hover (the static file is for print, where a stack of names helps nobody).
    """
    from .interactive import place_labels

    fig = ax.get_figure()
    fig.canvas.draw()  # the axes' final size, so data maps to the pixels it will have
    px = 72 / fig.dpi   # display pixels to points
    bbox = ax.get_window_extent()
    disp = [(*ax.transData.transform((x, y)), t, r / px) for x, y, t, r in points]
    placed = place_labels([(dx - bbox.x0, dy - bbox.y0, t, r) for dx, dy, t, r in disp],
                          (0, bbox.width), (0, bbox.height), False, False, bbox.width,
                          bbox.height, char_px=0.62 * fontsize / px,
                          line_px=1.3 * fontsize / px)
    offsets = {"middle right": ((1, 0), "left", "center"),
               "middle left": ((-1, 0), "right", "center"),
               "top center": ((0, 1), "center", "bottom"),
               "bottom center": ((0, -1), "center", "top")}
    at = {t: (x, y) for x, y, t, _ in points}
    for _, _, text, side, gap, _ in placed:
        x, y = at[text]
        (ox, oy), ha, va = offsets[side]
        ax.annotate(text, (x, y), xytext=(ox * gap * px, oy * gap * px),
                    textcoords="offset points", fontsize=fontsize, ha=ha, va=va)


def top1_vs_macs(rows: list[dict]) -> plt.Figure:
    """Paper top-1 against GMACs (log), bubble area proportional to parameters."""
    colors = _family_colors(rows)
    shown = [r for r in rows if r.get("top1") is not None and r.get("macs")]
    fig, ax = plt.subplots(figsize=(10, 6.5))
    biggest = max((r["params"] for r in shown), default=1)
    for fam in colors:
        pts = [r for r in shown if r["family"] == fam]
        if not pts:
            continue
        ax.scatter([r["macs"] / 1e9 for r in pts], [r["top1"] for r in pts],
                   s=[30 + 1500 * r["params"] / biggest for r in pts], color=colors[fam],
                   alpha=0.6, edgecolor="black", linewidth=0.5, label=fam)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("GMACs per image (log scale; multiply-accumulates at the default resolution)")
    ax.set_ylabel("ImageNet top-1 reported in the paper (%)")
    missing = len(rows) - len(shown)
    note = f"; {missing} models without a paper ImageNet top-1 are left out" if missing else ""
    ax.set_title(f"Accuracy against compute, bubble area = parameters{note}", loc="left",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if shown:
        legend = ax.legend(fontsize=7, loc="lower right", markerscale=0.4, framealpha=0.8)
        for handle in legend.legend_handles:
            handle.set_sizes([30])
    fig.tight_layout()
    # Marker radius in points: scatter's s is the area in points squared.
    _label_some(ax, [(r["macs"] / 1e9, r["top1"], r["name"],
                      (30 + 1500 * r["params"] / biggest) ** 0.5 / 2)
                     for r in sorted(shown, key=lambda r: -r["params"])])
    return fig


def by_year(rows: list[dict]) -> plt.Figure:
    """Parameters and MACs of every model against its year (log scales)."""
    colors = _family_colors(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    # Families of the same year stand side by side instead of on top of each other.
    by_year_fams: dict[int, list[str]] = {}
    for r in sorted(rows, key=lambda r: (r["year"], r["name"])):
        if r["family"] not in by_year_fams.setdefault(r["year"], []):
            by_year_fams[r["year"]].append(r["family"])

    def x_of(r: dict) -> float:
        fams = by_year_fams[r["year"]]
        return r["year"] + 0.28 * (fams.index(r["family"]) - (len(fams) - 1) / 2)

    for ax, key, scale, label in ((axes[0], "params", 1e6, "parameters (millions)"),
                                  (axes[1], "macs", 1e9, "GMACs per image")):
        for fam in colors:
            pts = [r for r in rows if r["family"] == fam and r.get(key)]
            ax.scatter([x_of(r) for r in pts], [r[key] / scale for r in pts],
                       color=colors[fam], s=28, edgecolor="black", linewidth=0.4, label=fam,
                       zorder=3)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        # One name per family and year: the largest model, so the labels stay readable.
        tops: dict[tuple, dict] = {}
        for r in rows:
            k = (r["family"], r["year"])
            if r.get(key) and (k not in tops or r[key] > tops[k][key]):
                tops[k] = r
        _place_labels(ax, [(x_of(r), r[key] / scale, r["name"]) for r in tops.values()], 6.5)
        years = [r["year"] for r in rows]
        ax.set_xlim(min(years) - 1, max(years) + 3)  # room for the names of the newest models
        ax.set_xlabel("year of the paper")
        ax.set_ylabel(label + " (log scale)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_title("Parameters by year", loc="left")
    axes[1].set_title("Compute by year", loc="left")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=7.5,
               frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * ((len(labels) - 1) // 8), 1, 1))
    return fig


def flops_vs_latency(rows: list[dict], machine: dict) -> plt.Figure:
    """Latency against MACs (log-log), and achieved GFLOP/s against the machine's dense peak."""
    colors = _family_colors(rows)
    rows = [r for r in rows if r.get("macs") and r.get("latency_ms")]
    peak = machine.get("peak_gflops")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.8))

    def gflops(r: dict) -> float:
        return 2 * r["macs"] / (r["latency_ms"] * 1e-3) / 1e9

    for ax, key, label in ((axes[0], lambda r: r["latency_ms"], "CPU latency, ms (log)"),
                           (axes[1], gflops, "achieved GFLOP/s = 2 × MACs / latency (log)")):
        for fam in colors:
            pts = [r for r in rows if r["family"] == fam]
            if pts:
                ax.scatter([r["macs"] / 1e9 for r in pts], [key(r) for r in pts], s=30,
                           color=colors[fam], edgecolor="black", linewidth=0.4, label=fam,
                           zorder=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
            axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("GMACs per image (log)")
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
        # Only the largest model of each family is named: the rest are in the interactive chart.
        tops: dict[str, dict] = {}
        for r in rows:
            if r["family"] not in tops or r["params"] > tops[r["family"]]["params"]:
                tops[r["family"]] = r
        _place_labels(ax, [(r["macs"] / 1e9, key(r), r["name"]) for r in tops.values()], 6.5)
    if peak:
        axes[1].axhline(peak, color="#c00000", linestyle="--", linewidth=1)
        axes[1].annotate(f"dense peak {peak:.0f} GFLOP/s (fp32 matmul)", (0.99, peak),
                         xycoords=("axes fraction", "data"), ha="right", va="bottom",
                         fontsize=8, color="#c00000")
    axes[0].set_title("Latency against MACs", loc="left")
    axes[1].set_title("How much of the machine each model uses", loc="left")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=7.5,
               frameon=False, bbox_to_anchor=(0.5, 0.035))
    fig.text(0.01, 0.008, "Measured on " + machine_line(machine), fontsize=7.5, color="#444")
    fig.tight_layout(rect=(0, 0.1 + 0.035 * ((len(labels) - 1) // 8), 1, 1))
    return fig


def machine_line(machine: dict) -> str:
    """What the latencies were measured on, in one line, for under the chart."""
    return (f"{machine.get('cpu')} ({machine.get('cores')} cores), torch {machine.get('torch')}; "
            f"latency: {machine.get('latency')}")


def save(fig: plt.Figure, stem: Path) -> str:
    """Write ``stem``.svg and ``stem``.png; return the SVG text for embedding."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    svg = buf.getvalue()
    stem.with_suffix(".svg").write_text(svg)
    fig.savefig(stem.with_suffix(".png"), dpi=110, bbox_inches="tight")
    plt.close(fig)
    return svg
