"""The atlas page: one self-contained HTML file (images inlined as data URIs, no network)."""
from __future__ import annotations

import base64
import datetime as _dt
import html

from .interactive import plotly_js

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 0 1.5rem 4rem; color: #222; line-height: 1.45; }
h1 { margin-top: 1.5rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
nav a { margin-right: 1rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figure.chart { overflow-x: auto; }
figcaption { color: #555; font-size: .9rem; }
table { border-collapse: collapse; width: 100%; font-size: .88rem; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid #eee; text-align: right; }
th { cursor: pointer; background: #f6f6f6; position: sticky; top: 0; user-select: none; }
th[data-order="asc"]::after { content: " ▲"; } th[data-order="desc"]::after { content: " ▼"; }
td.t, th.t { text-align: left; }
tr:hover td { background: #fafaf0; }
.family { margin-top: 2rem; } .family p { margin: .2rem 0 .6rem; color: #444; }
.model { border: 1px solid #e4e4e4; border-radius: 6px; padding: .5rem .9rem; margin: .6rem 0; }
.model h4 { margin: .2rem 0; font-size: 1.05rem; }
.model h4 a.docs { font-size: .8rem; font-weight: normal; margin-left: .5rem; }
.meta { color: #555; font-size: .88rem; }
.err { color: #a00; }
details summary { cursor: pointer; color: #2a5db0; margin: .3rem 0; }
.block { display: grid; grid-template-columns: minmax(260px, 44%) 1fr; gap: 1.2rem;
         border-top: 1px solid #e4e4e4; padding: 1rem 0; align-items: start; }
.block .diag img { max-width: 100%; display: block; margin: 0 auto; }
.block h4 { margin: 0 0 .3rem; font-size: 1.1rem; }
.block h4 span { color: #777; font-weight: normal; }
.block ul { margin: .4rem 0; padding-left: 1.1rem; font-size: .9rem; }
.block li { margin: .3rem 0; }
.block .idea { font-size: 1rem; }
.saving { font-weight: bold; color: #1b6e20; } .costlier { font-weight: bold; color: #9a4b00; }
details img { max-width: 100%; }
"""

_JS = """
document.querySelectorAll('#models thead th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = document.querySelector('#models tbody');
    var asc = th.dataset.order !== 'asc';
    document.querySelectorAll('#models thead th').forEach(function (h) { delete h.dataset.order; });
    th.dataset.order = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _e(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _svg_img(svg: str, alt: str, lazy: bool = False) -> str:
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (f'<img alt="{_e(alt)}"{" loading=lazy" if lazy else ""} '
            f'src="data:image/svg+xml;base64,{data}">')


def _num(v, scale: float, digits: int) -> tuple[str, str]:
    """(shown text, sort key) of a number that may be missing."""
    if v is None:
        return "–", "-1"
    x = v / scale
    # LeNet-5's 0.0004 GMACs must not read as 0.000: small values keep 3 significant digits.
    return (f"{x:.{digits}f}" if x >= 1 or x == 0 else f"{x:.3g}"), repr(v)


def _macs(v: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if v >= div:
            return f"{v / div:.3g} {unit}MACs"
    return f"{v} MACs"


def _table(rows: list[dict]) -> str:
    head = [("model", "t"), ("family", "t"), ("year", ""), ("params (M)", ""), ("GMACs", ""),
            ("CPU latency (ms)", ""), ("paper top-1 (%)", ""), ("input", ""), ("paper", "t")]
    out = ['<table id="models"><thead><tr>' +
           "".join(f'<th class="{c}">{_e(h)}</th>' for h, c in head) + "</tr></thead><tbody>"]
    for r in rows:
        cells = [(f'<a href="#m-{_e(r["name"])}">{_e(r["name"])}</a>', r["name"], "t"),
                 (_e(r["family"]), r["family"], "t"), (str(r["year"]), str(r["year"]), "")]
        for key, scale, digits in (("params", 1e6, 2), ("macs", 1e9, 3), ("latency_ms", 1, 1),
                                   ("top1", 1, 1)):
            shown, sort = _num(r.get(key), scale, digits)
            cells.append((shown, sort, ""))
        c, h, w = r["input_size"]
        cells.append((f"{c}×{h}×{w}", str(h), ""))
        link = (f'<a href="{_e(r["url"])}">{_e(r["paper"])}</a>' if r.get("url") else
                _e(r["paper"]))
        cells.append((link, r["paper"], "t"))
        out.append(f'<tr data-name="{_e(r["name"])}">' + "".join(
            f'<td class="{c}" data-v="{_e(v)}">{text}</td>' for text, v, c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def docs_link(name: str, docs_url: str | None) -> str:
    """The model's entry on the docs' model-zoo page (its anchor is the model's name)."""
    if docs_url is None:
        return ""
    return (f' <a class="docs" href="{_e(docs_url)}model-zoo.html#{_e(name)}">'
            f'docs</a>')


def _model_section(r: dict, diagram: str | None, docs_url: str | None = None) -> str:
    parts = [f'<div class="model" id="m-{_e(r["name"])}" data-model="{_e(r["name"])}">',
             f'<h4>{_e(r["name"])}{docs_link(r["name"], docs_url)}</h4>']
    if r.get("error"):
        parts.append(f'<p class="err">could not be measured: {_e(r["error"])}</p>')
    else:
        lat = "" if r.get("latency_ms") is None else f' · {r["latency_ms"]:.1f} ms on this CPU'
        parts.append(f'<p class="meta">{r["params"]:,} params · {_macs(r["macs"])} at '
                     f'{r["input_size"][1]}×{r["input_size"][2]}{lat}</p>')
    top1 = "no paper ImageNet top-1" if r.get("top1") is None else f'paper top-1 {r["top1"]:.1f}%'
    parts.append(f'<p class="meta">{_e(top1)} ({_e(r["top1_source"])})</p>')
    if diagram:
        parts.append(f'<details><summary>diagram (folded at depth {r["diagram_depth"]}; '
                     f'`cnnzoo draw {_e(r["name"])}` for every layer)</summary>'
                     f'{_svg_img(diagram, r["name"] + " diagram", lazy=True)}</details>')
    elif not r.get("error"):
        parts.append('<p class="meta">no diagram: Graphviz `dot` is not installed</p>')
    parts.append("</div>")
    return "\n".join(parts)


def _count(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def _ratio_words(ours: int, theirs: int, share: bool) -> str:
    if theirs == 0:
        return "–"
    r = ours / theirs
    if share:
        return f"{100 * r:.3g}% of it"
    if r < 1:
        return f'<span class="saving">{100 * (1 - r):.0f}% fewer</span>'
    if r < 2:
        return f'<span class="costlier">{100 * (r - 1):.0f}% more</span>'
    return f'<span class="costlier">{r:.2g}× as many</span>'


def _comparison(c: dict) -> str:
    o, t = c["ours"], c["theirs"]
    return (f'<li>{_e(c["text"])}: <b>{_e(c["ours_label"])}</b> {o["params"]:,} params, '
            f'{_count(o["macs"])} MACs; <b>{_e(c["theirs_label"])}</b> {t["params"]:,} params, '
            f'{_count(t["macs"])} MACs → params '
            f'{_ratio_words(o["params"], t["params"], c["share"])}, '
            f'MACs {_ratio_words(o["macs"], t["macs"], c["share"])}.</li>')


def _block(b: dict, svg: str | None) -> str:
    shape = "×".join(map(str, b["input_shape"]))
    out = "×".join(map(str, b["output_shape"] or ()))
    variant = "".join(f" --set {k}={v!r}" for k, v in b["settings"].items())
    diagram = (f'<div class="diag">{_svg_img(svg, b["title"] + " diagram")}</div>' if svg else
               '<div class="diag"><p class="meta">no diagram: Graphviz `dot` is not installed'
               '</p></div>')
    items = "".join(_comparison(c) for c in b["comparisons"])
    return (f'<div class="block" id="b-{_e(b["key"])}" data-block="{_e(b["key"])}">{diagram}'
            f'<div class="text"><h4>{_e(b["title"])} <span>{b["year"]}, {_e(b["family"])}</span>'
            f'</h4><p class="idea">{_e(b["idea"])}</p>'
            f'<p class="meta"><a href="#m-{_e(b["model"])}">{_e(b["model"])}</a>'
            f'<code>.{_e(b["path"])}</code> ({_e(b["cls"])}), {shape} in → {out} out: '
            f'<b>{b["cost"]["params"]:,} params</b>, <b>{_count(b["cost"]["macs"])} MACs</b></p>'
            + (f"<ul>{items}</ul>" if items else "") +
            f'<p class="meta">Drawn by <code>cnnzoo draw {_e(b["model"])}{_e(variant)} --module '
            f'{_e(b["path"])}</code>.</p></div></div>')


def blocks_section(blocks: list[dict], svgs: dict[str, str]) -> str:
    if not blocks:
        return ""
    return ('<h2 id="blocks">The evolution of the block</h2><p>Each family\'s defining block, '
            'in the order of the papers, drawn from the registered model\'s own module with the '
            'shapes it sees there. Params and MACs are counted on that module at that input; '
            'where a block replaced an earlier design, it is set against that design built at '
            'the same widths.</p>' + "\n".join(_block(b, svgs.get(b["key"])) for b in blocks))


def _latency_section(chart: str | None, machine: dict) -> str:
    from .charts import machine_line
    head = ('<h2 id="latency">FLOPs are not latency</h2><p>Multiply-accumulates count the '
            'arithmetic, not the time: a depthwise 3×3 does little arithmetic per byte it reads, '
            'so the mobile families run far below what this CPU reaches on a dense matrix '
            'product, and a model with fewer MACs can take longer than one with more. What '
            'matters is the latency on the device you deploy to.</p>')
    if chart is None:
        return head + ('<p class="meta">Not measured: this atlas was built with --quick; '
                       '`cnnzoo evolution -o DIR` times every model.</p>')
    peak = machine.get("peak_gflops")
    return (head + f'<figure class="chart" id="fig-flops_vs_latency">{chart}<figcaption>'
            f'Measured on {_e(machine_line(machine))}. '
            + (f'Dense peak: the best of 20 fp32 1024×1024 matrix products with the same '
               f'threads, before and after the models: {peak:.1f} GFLOP/s. ' if peak else "")
            + 'Static files: <a href="flops_vs_latency.svg">flops_vs_latency.svg</a>, '
              '<a href="flops_vs_latency.png">flops_vs_latency.png</a>.</figcaption></figure>')


def page(rows: list[dict], figures: dict[str, str | None], diagrams: dict[str, str],
         machine: dict, blocks: list[dict] = (), block_svgs: dict[str, str] | None = None,
         interactive: dict[str, str] | None = None, docs_url: str | None = None) -> str:
    rows = sorted(rows, key=lambda r: (r["year"], r["family"], r["name"]))
    families: dict[str, list[dict]] = {}
    for r in rows:
        families.setdefault(r["family"], []).append(r)
    captions = {
        "timeline": "Each family at the year of its paper, with the idea it brought.",
        "top1_vs_macs": "ImageNet top-1 as each paper reports it (see the table for where) "
                        "against multiply-accumulates at the model's default resolution; "
                        "bubble area is proportional to the parameter count.",
        "params_macs_by_year": "Parameters and compute of every registered model by year.",
    }
    interactive = interactive or {}
    figs = []
    for stem, caption in captions.items():
        svg = figures.get(stem)
        files = (f'Static files for papers and slides: <a href="{stem}.svg">{stem}.svg</a>, '
                 f'<a href="{stem}.png">{stem}.png</a>.')
        if stem in interactive:
            figs.append(f'<figure class="chart" id="fig-{stem}">{interactive[stem]}<figcaption>'
                        f'{_e(caption)} {files}</figcaption></figure>')
        elif svg:
            figs.append(f'<figure id="fig-{stem}">{_svg_img(svg, stem)}<figcaption>{_e(caption)} '
                        f'{files}</figcaption></figure>')
    latency = _latency_section(interactive.get("flops_vs_latency"), machine)
    fam_html = []
    for fam, members in families.items():
        first = members[0]
        link = f' — <a href="{_e(first["url"])}">{_e(first["paper"])}</a>' if first.get("url") \
            else f' — {_e(first["paper"])}'
        fam_html.append(f'<section class="family" id="f-{_e(fam)}"><h3>{_e(fam)} '
                        f'({first["year"]})</h3><p>{_e(first["innovation"])}{link}</p>' +
                        "\n".join(_model_section(r, diagrams.get(r["name"]), docs_url)
                                  for r in members) +
                        "</section>")
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    measured = (f'Measured {when} on {_e(machine["cpu"])} ({machine["cores"]} cores), '
                f'torch {_e(machine["torch"])}; latency: {_e(machine["latency"])}. '
                f'MACs are counted by torch.utils.flop_counter (FLOPs = 2 × MACs).')
    if machine.get("settings"):
        measured += (" Every model is a variant, built with " + _e(", ".join(
            f"{k}={v!r}" for k, v in machine["settings"].items())) + ".")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cnnzoo atlas: the evolution of classic CNNs</title>
<style>{_CSS}</style>
{f'<script>{plotly_js()}</script>' if interactive else ""}</head>
<body>
<h1>The evolution of classic CNNs</h1>
<p>{len(rows)} models of {len(families)} families, from {rows[0]["year"] if rows else "?"} to
{rows[-1]["year"] if rows else "?"}, built by <code>cnnzoo</code> and measured on one machine.
{measured}</p>
<nav><a href="#timeline">timeline</a><a href="#blocks">blocks</a><a href="#charts">charts</a>
<a href="#latency">FLOPs are not latency</a><a href="#table">table</a>
<a href="#families">models and diagrams</a></nav>
<h2 id="timeline">Timeline</h2>
{figs[0] if figs else "<p>no chart: no model could be measured</p>"}
{blocks_section(list(blocks), block_svgs or {})}
<h2 id="charts">Accuracy, size and compute</h2>
{"".join(figs[1:])}
{latency}
<h2 id="table">All models</h2>
<p class="meta">Click a column to sort.</p>
{_table(rows)}
<h2 id="families">Models and diagrams</h2>
{"".join(fam_html)}
<script>{_JS}</script>
</body></html>
"""
