"""The atlas's charts to explore: Plotly figures with hover, zoom and a legend that filters.

Each chart is a ``<div>`` of the page; plotly.js itself is written once into the page, so the
file opens with no network. Every model is one marker with its name, family, params, MACs,
latency and top-1 in the hover; a few names are also written beside their markers, chosen so
that no two labels overlap at the chart's size (the rest are a hover away).
"""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

WIDTH, HEIGHT = 1150, 620
# The legend sits in the right margin, so the plot area has a known size for placing labels.
_MARGIN = dict(l=70, r=170, t=90, b=60)
# plotly's default qualitative palettes have 10 colours; 14 families need more.
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
            "#7b4173", "#3182bd")
_SPACING = 0.1                  # between two panels, a fraction of the plot width
_CHAR_PX, _LINE_PX = 6.8, 13    # 10 px Helvetica, with room to spare


def family_colors(rows: list[dict]) -> dict[str, str]:
    fams = list(dict.fromkeys(r["family"] for r in sorted(rows, key=lambda r: r["year"])))
    return {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(fams)}


def _hover_data(r: dict) -> list:
    lat = "–" if r.get("latency_ms") is None else f'{r["latency_ms"]:.2f} ms'
    top1 = "no paper top-1" if r.get("top1") is None else f'{r["top1"]:.1f}%'
    gflops = ("–" if not r.get("latency_ms") else
              f'{2 * r["macs"] / (r["latency_ms"] * 1e-3) / 1e9:.1f} GFLOP/s')
    return [r["name"], r["family"], f'{r["params"] / 1e6:.2f} M', f'{r["macs"] / 1e9:.3f} G',
            lat, top1, gflops, r["year"]]


_HOVER = ("<b>%{customdata[0]}</b> (%{customdata[1]}, %{customdata[7]})<br>"
          "params %{customdata[2]} · MACs %{customdata[3]}<br>"
          "CPU latency %{customdata[4]} · %{customdata[6]}<br>top-1 %{customdata[5]}"
          "<extra></extra>")


def _axis_px(value: float, lo: float, hi: float, log: bool, span: float) -> float:
    if log:
        value, lo, hi = math.log10(value), math.log10(lo), math.log10(hi)
    return (value - lo) / (hi - lo) * span


def place_labels(points: list[tuple], x_range: tuple, y_range: tuple,
                 x_log: bool, y_log: bool, width: float, height: float,
                 others: list[tuple] = (), char_px: float = _CHAR_PX,
                 line_px: float = _LINE_PX) -> list[tuple]:
    """Which names to write where: ``[(x, y, text, side, gap px, box px)]``, none overlapping.

    ``points`` are ``(x, y, text)`` or ``(x, y, text, marker radius in px)``, in priority
    order; each label tries the four sides of its marker and is left to the hover if none is
    free, or if it would cover another marker (``others`` are unlabelled markers, ``(x, y)``).
    """
    radius = [p[3] if len(p) > 3 else 5 for p in points]
    points = [p[:3] for p in points]
    px = [(_axis_px(x, *x_range, x_log, width), _axis_px(y, *y_range, y_log, height), t)
          for x, y, t in points]
    markers = [(x - r, y - r, x + r, y + r) for (x, y, _), r in zip(px, radius)]
    for x, y in others:
        ox, oy = _axis_px(x, *x_range, x_log, width), _axis_px(y, *y_range, y_log, height)
        markers.append((ox - 5, oy - 5, ox + 5, oy + 5))
    taken: list[tuple[float, float, float, float]] = []
    out = []
    for (x, y, text), (dx, dy, _), r in zip(points, px, radius):
        w = char_px * len(text)
        g, hl = r + 2, line_px / 2
        for pos, box in (("middle right", (dx + g, dy - hl, dx + g + w, dy + hl)),
                         ("middle left", (dx - g - w, dy - hl, dx - g, dy + hl)),
                         ("top center", (dx - w / 2, dy + g, dx + w / 2, dy + g + line_px)),
                         ("bottom center", (dx - w / 2, dy - g - line_px, dx + w / 2, dy - g))):
            inside = 0 <= box[0] and box[2] <= width and 0 <= box[1] and box[3] <= height
            if inside and not any(_overlap(box, o, 4) for o in taken) and not any(
                    _overlap(box, m) for m in markers):
                taken.append(box)
                out.append((x, y, text, pos, g, box))
                break
    return out


def _overlap(a, b, gap: float = 0) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _range(values: list[float], log: bool, pad: float = 0.08) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if log:
        span = math.log10(hi) - math.log10(lo) or 1
        return lo / 10 ** (pad * span), hi * 10 ** (pad * span)
    span = (hi - lo) or 1
    return lo - pad * span, hi + pad * span


def log_ticks(lo: float, hi: float) -> dict:
    """1-2-5 ticks written in full (plotly abbreviates a short log axis to bare digits)."""
    decades = math.log10(hi) - math.log10(lo)
    subs = (1, 2, 5) if decades <= 3 else (1, 3) if decades <= 4.5 else (1,)
    vals = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1,
                                          math.ceil(math.log10(hi)) + 1) for m in subs]
    vals = [v for v in vals if lo <= v <= hi]
    return dict(tickvals=vals, ticktext=[f"{v:g}" for v in vals], tickangle=0)


def _plot_size(cols: int = 1) -> tuple[float, float]:
    """The pixel size of one panel of a row of ``cols`` (what labels are placed in)."""
    return ((WIDTH - _MARGIN["l"] - _MARGIN["r"]) * (1 - _SPACING * (cols - 1)) / cols,
            HEIGHT - _MARGIN["t"] - _MARGIN["b"])


def _add_labels(fig, labels, x_log: bool, y_log: bool, row=None, col=None) -> None:
    """Write the placed names as annotations, shifted off their markers by whole pixels."""
    for x, y, text, pos, gap, _ in labels:
        shift = {"middle right": dict(xanchor="left", yanchor="middle", xshift=gap),
                 "middle left": dict(xanchor="right", yanchor="middle", xshift=-gap),
                 "top center": dict(xanchor="center", yanchor="bottom", yshift=gap),
                 "bottom center": dict(xanchor="center", yanchor="top", yshift=-gap)}[pos]
        fig.add_annotation(x=math.log10(x) if x_log else x, y=math.log10(y) if y_log else y,
                           text=text, showarrow=False, font=dict(size=10, color="#333"),
                           row=row, col=col, **shift)


def _layout(fig, title: str) -> None:
    fig.update_layout(width=WIDTH, height=HEIGHT, margin=_MARGIN, template="plotly_white",
                      title=dict(text=title, x=0.01, font=dict(size=15)),
                      legend=dict(font=dict(size=10), itemsizing="constant", x=1.02, y=1,
                                  xanchor="left", yanchor="top", tracegroupgap=0),
                      hoverlabel=dict(font_size=12), font=dict(family="Helvetica, Arial"))


def top1_vs_macs(rows: list[dict]) -> go.Figure:
    """Top-1 against MACs, marker area by parameters; models without a paper top-1 sit in a
    band under the axis so that every model can be found."""
    colors = family_colors(rows)
    rows = [r for r in rows if r.get("macs")]
    known = [r["top1"] for r in rows if r.get("top1") is not None]
    floor = (min(known) if known else 50) - 4
    y_of = {r["name"]: r["top1"] if r.get("top1") is not None else floor for r in rows}
    biggest = max(r["params"] for r in rows)
    sizeref = 2 * biggest / 45 ** 2

    def radius(r: dict) -> float:  # as plotly.js draws an area-mode marker, to the pixel
        return max(2.5, math.sqrt(r["params"] / sizeref) / math.sqrt(2))

    fig = go.Figure()
    for fam, color in colors.items():
        pts = [r for r in rows if r["family"] == fam]
        fig.add_trace(go.Scatter(
            x=[r["macs"] / 1e9 for r in pts], y=[y_of[r["name"]] for r in pts], mode="markers",
            name=fam, customdata=[_hover_data(r) for r in pts], hovertemplate=_HOVER,
            marker=dict(size=[r["params"] for r in pts], sizemode="area", sizemin=5,
                        sizeref=sizeref, color=color,
                        opacity=[0.7 if r.get("top1") is not None else 0.35 for r in pts],
                        line=dict(width=1, color="#333"))))
    xr = _range([r["macs"] / 1e9 for r in rows], True)
    yr = _range(list(y_of.values()), False)
    by_size = sorted(rows, key=lambda r: (r.get("top1") is None, -r["params"]))
    w, h = _plot_size()
    _add_labels(fig, place_labels([(r["macs"] / 1e9, y_of[r["name"]], r["name"], radius(r))
                                   for r in by_size], xr, yr, True, False, w, h), True, False)
    fig.add_hline(y=floor + 1.5, line=dict(color="#bbb", dash="dot", width=1))
    fig.add_annotation(x=0, xref="paper", y=floor + 1.5, yanchor="bottom", showarrow=False,
                       xanchor="left", text="below: models whose paper gives no ImageNet top-1",
                       font=dict(size=10, color="#777"))
    fig.update_xaxes(type="log", range=[math.log10(v) for v in xr], **log_ticks(*xr),
                     title="GMACs per image (log scale, at the model's default resolution)")
    fig.update_yaxes(range=list(yr), title="ImageNet top-1 reported in the paper (%)")
    _layout(fig, "Accuracy against compute (marker area ∝ parameters; hover for details, "
                 "drag to zoom, click a family to hide it)")
    return fig


def by_year(rows: list[dict]) -> go.Figure:
    colors = family_colors(rows)
    rows = [r for r in rows if r.get("macs")]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=_SPACING,
                        subplot_titles=("Parameters by year", "Compute by year"))
    fams_by_year: dict[int, list[str]] = {}
    for r in sorted(rows, key=lambda r: (r["year"], r["name"])):
        if r["family"] not in fams_by_year.setdefault(r["year"], []):
            fams_by_year[r["year"]].append(r["family"])

    def x_of(r):  # families of one year side by side, as in the static chart
        fams = fams_by_year[r["year"]]
        return r["year"] + 0.28 * (fams.index(r["family"]) - (len(fams) - 1) / 2)

    w, h = _plot_size(cols=2)
    for col, key, scale in ((1, "params", 1e6), (2, "macs", 1e9)):
        for fam, color in colors.items():
            pts = [r for r in rows if r["family"] == fam]
            fig.add_trace(go.Scatter(
                x=[x_of(r) for r in pts], y=[r[key] / scale for r in pts], mode="markers",
                name=fam, legendgroup=fam, showlegend=col == 1,
                customdata=[_hover_data(r) for r in pts], hovertemplate=_HOVER,
                marker=dict(size=9, color=color, line=dict(width=0.8, color="#333"))),
                row=1, col=col)
        xr = (min(r["year"] for r in rows) - 1, max(r["year"] for r in rows) + 2)
        yr = _range([r[key] / scale for r in rows], True)
        tops: dict[tuple, dict] = {}
        for r in rows:  # one name per family and year, the largest: the rest are a hover away
            k = (r["family"], r["year"])
            if k not in tops or r[key] > tops[k][key]:
                tops[k] = r
        _add_labels(fig, place_labels([(x_of(r), r[key] / scale, r["name"]) for r in
                                       sorted(tops.values(), key=lambda r: -r[key])],
                                      xr, yr, False, True, w, h,
                                      [(x_of(r), r[key] / scale) for r in rows]),
                    False, True, row=1, col=col)
        fig.update_xaxes(range=list(xr), title="year of the paper", dtick=4, tickangle=0,
                         row=1, col=col)
        fig.update_yaxes(type="log", range=[math.log10(v) for v in yr], row=1, col=col,
                         **log_ticks(*yr),
                         title="parameters (millions, log)" if key == "params" else
                         "GMACs per image (log)")
    _layout(fig, "Parameters and compute of every model by year")
    return fig


def flops_vs_latency(rows: list[dict], machine: dict) -> go.Figure | None:
    """MACs against measured latency (log-log), and achieved GFLOP/s against the dense peak."""
    colors = family_colors(rows)
    rows = [r for r in rows if r.get("macs") and r.get("latency_ms")]
    if not rows:
        return None
    peak = machine.get("peak_gflops")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=_SPACING, subplot_titles=(
        "Latency against MACs", "Achieved GFLOP/s = 2 × MACs / latency"))
    for fam, color in colors.items():
        pts = [r for r in rows if r["family"] == fam]
        if not pts:
            continue
        for col, ys in ((1, [r["latency_ms"] for r in pts]), (2, [achieved(r) for r in pts])):
            fig.add_trace(go.Scatter(
                x=[r["macs"] / 1e9 for r in pts], y=ys, mode="markers", name=fam,
                legendgroup=fam, showlegend=col == 1, customdata=[_hover_data(r) for r in pts],
                hovertemplate=_HOVER,
                marker=dict(size=9, color=color, line=dict(width=0.8, color="#333"))),
                row=1, col=col)
    xr = _range([r["macs"] / 1e9 for r in rows], True)
    w, h = _plot_size(cols=2)
    for col, key in ((1, lambda r: r["latency_ms"]), (2, achieved)):
        vals = [key(r) for r in rows] + ([peak] if col == 2 and peak else [])
        yr = _range(vals, True)
        order = sorted(rows, key=lambda r: -r["params"])
        _add_labels(fig, place_labels([(r["macs"] / 1e9, key(r), r["name"]) for r in order],
                                      xr, yr, True, True, w, h), True, True, row=1, col=col)
        fig.update_xaxes(type="log", range=[math.log10(v) for v in xr], row=1, col=col,
                         **log_ticks(*xr), title="GMACs per image (log)")
        fig.update_yaxes(type="log", range=[math.log10(v) for v in yr], row=1, col=col,
                         **log_ticks(*yr),
                         title="CPU latency, ms (log)" if col == 1 else "GFLOP/s (log)")
    if peak:
        fig.add_hline(y=peak, row=1, col=2, line=dict(color="#c00", dash="dash", width=1.2))
        # At the left, where only tiny models lie, far below the line.
        fig.add_annotation(x=0.01, xref="x2 domain", y=math.log10(peak), yref="y2",
                           showarrow=False, xanchor="left", yanchor="bottom",
                           font=dict(size=10, color="#c00"),
                           text=f"dense peak: {peak:.0f} GFLOP/s<br>(fp32 matmul)")
    _layout(fig, "")
    return fig


def achieved(r: dict) -> float:
    """GFLOP/s a model reached: two FLOPs per MAC over its measured latency."""
    return 2 * r["macs"] / (r["latency_ms"] * 1e-3) / 1e9


def to_div(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config=dict(displaylogo=False, responsive=True))


def plotly_js() -> str:
    """plotly.js itself, to inline once in the page (no CDN: the atlas opens offline)."""
    from plotly.offline import get_plotlyjs
    return get_plotlyjs()
