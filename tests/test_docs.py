"""The documentation: README rules, generated pages up to date, the site built strictly and
opened in headless Chromium.

The site is built once per session (``mkdocs build --strict`` into a temporary folder) with a
one-model atlas, which keeps the build to seconds; ``make docs`` draws every model.
"""
from __future__ import annotations

import csv
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnnzoo import list_models

from test_atlas import ARTIFACTS, Chromium

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ATLAS_MODEL = "resnet18"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_short_and_for_users():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    # No commit hashes: a run of 7-40 hex digits with both a letter and a digit.
    hashes = [w for w in re.findall(r"\b[0-9a-f]{7,40}\b", text)
              if re.search(r"\d", w) and re.search(r"[a-f]", w)]
    assert hashes == []
    assert len(re.findall(r"\b\d{4}-\d{2}-\d{2}\b", text)) <= 2
    assert "../" not in text and "/shared" not in text
    assert not re.search(r"\bissues?\b", text, re.I)
    # Each relative link points at a file of the repository.
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (ROOT / target).exists(), target


# The model-zoo page: one test per model, so the cost (a meta-device build and a MAC count
# each, EfficientNet-B7 at 600x600 included) spreads over the workers and a stale entry is named.
ZOO = _tool("gen_zoo")


def _entry_text(text: str, name: str) -> str:
    start = text.index(f"## {name} {{#{name}}}\n")
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


def test_zoo_page_is_head_index_and_one_entry_per_model_in_order():
    text, names = ZOO.PAGE.read_text(), list_models()
    assert re.findall(r"^## (\S+) \{#", text, re.M) == names
    assert text == ZOO.HEAD + ZOO.index(names) + "\n".join(_entry_text(text, n) for n in names)


@pytest.mark.parametrize("name", list_models())
def test_zoo_page_entry_is_up_to_date(name):
    assert _entry_text(ZOO.PAGE.read_text(), name) == ZOO.entry(name), \
        f"docs/model-zoo.md is stale for {name}: run python tools/gen_zoo.py"


PERF = _tool("gen_performance")


def test_performance_tables_are_rendered_from_the_committed_csv():
    text = PERF.PAGE.read_text()
    assert PERF.render(text) == text, "docs/performance.md is stale: run " \
                                      "python tools/gen_performance.py"
    int8_page = PERF.ACCURACY_PAGE.read_text()
    assert PERF.render_accuracy(int8_page) == int8_page, "docs/int8.md is stale: run " \
                                                         "python tools/gen_performance.py"
    assert sorted(PERF.ACCURACY.glob("*.csv")), "no int8 accuracy data in bench/results/accuracy/"
    files = sorted(PERF.RESULTS.glob("*.csv"))
    assert files, "no benchmark data in bench/results/"
    for path in files:
        rows = list(csv.DictReader(path.open()))
        assert rows
        for row in rows:
            for key in ("date", "commit", "torch", "cpu", "cores", "isa", "command", "model"):
                assert row.get(key), f"{path.name}: {key} missing"
            assert any(k.endswith("_ips") and row[k] for k in row)
            assert f"| {row['model']} |" in text


@pytest.fixture(scope="session")
def site(tmp_path_factory, worker_id) -> Path:
    # Under xdist every worker has its own session: the first builds into the folder they
    # share, the others wait on the lock and use it.
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent
    out = shared / "docs-site"
    with FileLock(str(shared / "docs-site.lock")):
        if not (out / "index.html").exists():
            _build(out)
    return out


def _build(out: Path) -> None:
    env = {**os.environ, "CNNZOO_DOCS_ATLAS": ATLAS_MODEL, "NO_MKDOCS_2_WARNING": "1",
           "CNNZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr


def test_site_builds_strictly_with_every_page(site):
    for page in ("index", "model-zoo", "training", "weights", "families", "seeing",
                 "performance", "architecture", "api"):
        assert (site / f"{page}.html").exists(), page
    api = (site / "api.html").read_text()
    for name in ("create_model", "list_models", "model_card", "summary", "optimize",
                 "for_training", "save_pretrained", "push_to_hub"):
        assert f'id="cnnzoo.' in api and f".{name}\"" in api, name
    # Nothing to fetch: no stylesheet, script or font from another host.
    for html in site.rglob("*.html"):
        text = html.read_text()
        assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', text), html.name
    assert (site / "search" / "search_index.json").exists()


def test_docs_pictures_are_made_by_the_build(site):
    seeing = (site / "seeing.html").read_text()
    assert (site / "pictures" / "resnet18-block.svg").read_text().lstrip().startswith("<")
    assert "$ cnnzoo summary lenet5" in seeing and "61,706" in seeing
    for chart in ("timeline", "top1_vs_macs", "params_macs_by_year"):
        assert (site / "atlas" / f"{chart}.svg").exists()
        assert f'src="atlas/{chart}.svg"' in seeing


def test_atlas_and_docs_link_to_each_other(site):
    atlas = (site / "atlas" / "index.html").read_text()
    zoo = (site / "model-zoo.html").read_text()
    links = re.findall(r'href="\.\./model-zoo\.html#([^"]+)"', atlas)
    assert links == [ATLAS_MODEL]
    assert f'id="{ATLAS_MODEL}"' in zoo
    assert f'href="atlas/index.html#m-{ATLAS_MODEL}"' in zoo
    assert 'href="atlas/index.html"' in (site / "seeing.html").read_text()


def test_model_zoo_and_diagram_pages_render_in_chromium(site, tmp_path):
    browser = Chromium(tmp_path / "profile", width=1280, height=1600)
    try:
        browser.offline()
        ARTIFACTS.mkdir(exist_ok=True)
        for page, shot in (("model-zoo.html", "docs-model-zoo.png"),
                           ("seeing.html", "docs-seeing.png")):
            browser.open((site / page).as_uri())
            browser.screenshot(ARTIFACTS / shot)
            assert browser.errors() == [], page
            assert [u for u in browser.requests() if not u.startswith(("file:", "data:"))] == []
            images = browser.js("Array.from(document.querySelectorAll('article img'))"
                                ".map(i => i.complete && i.naturalWidth > 0)")
            assert all(images), page
            assert (ARTIFACTS / shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert browser.js("document.querySelectorAll('article img').length") == 4  # seeing
        browser.open((site / "model-zoo.html").as_uri())
        assert browser.js("document.querySelectorAll('article h2').length") == len(list_models())
    finally:
        browser.close()
