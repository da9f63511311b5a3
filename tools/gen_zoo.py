"""Write docs/model-zoo.md from the registry: every model's card, size, compute and weights.

    .venv/bin/python tools/gen_zoo.py            # rewrite the page
    .venv/bin/python tools/gen_zoo.py --check    # exit 1 if the committed page is stale

Each model is built once on the meta device (shapes, no storage, no initialisers), so counting
the parameters and the MACs at the default input of all of them, EfficientNet-B7 at 600x600
included, costs seconds. tests/test_docs.py regenerates each entry and compares it.
"""
from __future__ import annotations

import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "model-zoo.md"

HEAD = """# Model zoo

Every registered model, generated from the registry by `tools/gen_zoo.py` (a test fails when
this page is stale). Parameters are counted at the default number of classes; MACs
(multiply-accumulates of one image, FLOPs = 2 x MACs) by `torch.utils.flop_counter` at the
model's default input size. Top-1 is what the paper reports, where it reports it. Each entry
links to the model in the [atlas](atlas/index.html), which draws it.

"""


def _si(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.3g}"


def _weights(name: str) -> str:
    from cnnzoo.weights.keras_families import FAMILIES
    from cnnzoo.weights.sources import available

    found = []
    for lib in ("torchvision", "timm"):
        tags = [f"`{s.source}:{s.tag}`" + (" (default)" if s.default else "")
                for s in available(name) if s.source == lib]
        if tags:
            found.append(", ".join(tags))
    if name in FAMILIES:
        found.append('`keras` (Keras applications)')
    return "; ".join(found) if found else "none published (train it, or pass a weights file)"


def entry(name: str) -> str:
    """One model's section of the page."""
    from cnnzoo import create_model, default_cfg, model_card
    from cnnzoo.inspect.counts import count_macs, count_params
    from cnnzoo.inspect.meta import on_meta

    card, cfg = model_card(name), default_cfg(name)
    with on_meta():
        model = create_model(name)
    params, macs = count_params(model), count_macs(model)
    c, h, w = cfg.input_size
    paper = f"[{card.paper}]({card.url})" if card.url else card.paper
    top1 = f"{card.top1:.1f}%" if card.top1 is not None else "–"
    size = f"{c}x{h}x{w}" + (" (fixed)" if cfg.fixed_size else "")
    return "\n".join([
        f"## {name} {{#{name}}}",
        "",
        f"**{card.family}**, {card.year}: {paper}. {card.innovation}",
        "",
        "| params | MACs | input | classes | paper top-1 |",
        "| ---: | ---: | --- | ---: | ---: |",
        f"| {params:,} | {_si(macs)} | {size} | {cfg.num_classes} | {top1} |",
        "",
        f"Top-1 source: {card.top1_source}.",
        "",
        f"Weights: {_weights(name)}.",
        "",
        f"[In the atlas](atlas/index.html#m-{name}) ·"
        f" `cnnzoo summary {name}` · `cnnzoo draw {name} -o {name}.svg`",
        "",
    ])


def index(names: list[str]) -> str:
    from cnnzoo import model_card

    rows = ["| model | family | year |", "| --- | --- | ---: |"]
    rows += [f"| [{n}](#{n}) | {model_card(n).family} | {model_card(n).year} |" for n in names]
    return "\n".join(rows) + "\n\n"


def page() -> str:
    from cnnzoo import list_models

    names = list_models()
    return HEAD + index(names) + "\n".join(entry(n) for n in names)


def main(argv: list[str]) -> int:
    text = page()
    if "--check" in argv:
        if PAGE.read_text() != text:
            print(f"{PAGE} is stale: run python tools/gen_zoo.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
