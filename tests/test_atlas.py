"""`evolution`: the atlas page, checked as a file and in headless Chromium.

The browser is driven through the Chrome DevTools Protocol over ``--remote-debugging-pipe``
(JSON messages ending in a NUL byte on file descriptors 3 and 4), so the test needs Debian's
``chromium`` and nothing else. ``make test`` installs it when it is missing.
"""
from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cnnzoo import list_models
from cnnzoo.cli import main
from cnnzoo.inspect.atlas import build_atlas
from cnnzoo.inspect.blocks import BLOCKS

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


# The latency chart needs timed models; these five take a fraction of a second each.
TIMED = "mobilenet_v[13]_*"


@pytest.fixture(scope="module")
def atlas(tmp_path_factory) -> Path:
    # Every registered model, diagrams and blocks included; only a few cheap ones timed.
    out = tmp_path_factory.mktemp("atlas")
    build_atlas(out, timed=TIMED, runs=1, log=lambda _line: None)
    return out


class Chromium:
    """Just enough of the DevTools protocol: open a page, evaluate, collect errors, screenshot."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 2400):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            pytest.fail("Debian's chromium is not installed: `make test` installs it "
                        "(apt-get install chromium)")
        flags = ["--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                 "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                 "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}", "about:blank"]
        # The shell hands our stdin/stdout pipes to chromium as its fds 3 (commands) and 4.
        self.proc = subprocess.Popen(
            ["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null', exe, *flags],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.buf, self.next_id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width,
                  height=height, deviceScaleFactor=1, mobile=False)

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: bool = False, timeout: float = 60, **params) -> dict:
        self.next_id += 1
        msg = dict(id=self.next_id, method=method, params=params)
        if session:
            msg["sessionId"] = self.session
        self.proc.stdin.write(json.dumps(msg).encode() + b"\0")
        self.proc.stdin.flush()
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def offline(self) -> None:
        """Cut the page off the network, as a reader without one would open the file."""
        self.call("Network.emulateNetworkConditions", session=True, offline=True, latency=0,
                  downloadThroughput=-1, uploadThroughput=-1)

    def mouse_move(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)

    def open(self, url: str, timeout: float = 60) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read(deadline - time.monotonic()))

    def js(self, expression: str):
        res = self.call("Runtime.evaluate", session=True, expression=expression,
                        returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def errors(self) -> list[str]:
        found = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(p["exceptionDetails"].get("exception", {}).get("description")
                             or p["exceptionDetails"].get("text"))
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                found.append(p["entry"]["text"])
        return found

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, BrokenPipeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    b.offline()
    yield b
    b.close()


def test_atlas_page_holds_every_model_charts_and_diagrams_in_one_file(atlas):
    page = (atlas / "index.html").read_text()
    data = json.loads((atlas / "atlas.json").read_text())["models"]
    assert [m["name"] for m in data] == list_models()
    assert not [m["name"] for m in data if m["error"]]
    for name in list_models():
        assert f'data-model="{name}"' in page and f'<tr data-name="{name}">' in page
        assert (atlas / "diagrams" / f"{name}.svg").stat().st_size > 1000
    for stem in ("timeline", "top1_vs_macs", "params_macs_by_year", "flops_vs_latency"):
        assert (atlas / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (atlas / f"{stem}.svg").read_text()[:2000]
    # Self-contained: every image and script is inline, nothing is fetched to show the page.
    assert "plotly" in page and not re.search(r"<script[^>]+src=", page)
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)
    sources = re.findall(r'\ssrc="([^"]*)"', markup)
    assert len(sources) >= 1 + len(list_models()) + len(BLOCKS)
    assert all(s.startswith("data:image/") for s in sources)
    assert "<link" not in markup and "@import" not in markup


def test_atlas_opens_in_chromium_with_every_model_and_no_console_errors(atlas, browser):
    browser.open((atlas / "index.html").as_uri())
    ARTIFACTS.mkdir(exist_ok=True)
    browser.screenshot(ARTIFACTS / "atlas.png")
    shown = browser.js("Array.from(document.querySelectorAll('[data-model]'))"
                       ".map(e => e.dataset.model)")
    assert sorted(shown) == sorted(list_models())
    charts = browser.js("Array.from(document.querySelectorAll('figure img'))"
                        ".map(i => i.complete && i.naturalWidth > 0)")
    assert charts == [True]  # the timeline; the other charts are interactive
    assert browser.errors() == []
    assert [u for u in browser.requests() if not u.startswith(("file:", "data:"))] == []
    assert (ARTIFACTS / "atlas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_atlas_table_sorts_by_a_clicked_column(atlas, browser):
    browser.open((atlas / "index.html").as_uri())
    data = json.loads((atlas / "atlas.json").read_text())["models"]
    by_params = [m["name"] for m in sorted(data, key=lambda m: m["params"])]
    header = "Array.from(document.querySelectorAll('#models thead th')).find(t => " \
             "t.textContent.startsWith('params')).click()"
    first = "document.querySelector('#models tbody tr').dataset.name"
    browser.js(header)
    assert browser.js(first) == by_params[0]
    browser.js(header)
    assert browser.js(first) == by_params[-1]
    assert browser.errors() == []


def test_browser_check_does_report_a_page_error(browser, tmp_path):
    # The harness itself: a page that throws must not pass as clean.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('broken'); undefinedCall();</script>"
                   "</body></html>")
    browser.open(bad.as_uri())
    errors = " ".join(browser.errors())
    assert "broken" in errors and "undefinedCall" in errors


def test_full_atlas_of_one_model_measures_latency(tmp_path, capsys):
    out = tmp_path / "atlas"
    assert main(["evolution", "-o", str(out), "--models", "lenet5", "--runs", "2"]) == 0
    row = json.loads((out / "atlas.json").read_text())["models"][0]
    assert row["name"] == "lenet5" and row["latency_ms"] > 0
    assert "ms" in (out / "index.html").read_text()
    # An atlas is not overwritten without --force; an unknown pattern is a user error.
    assert main(["evolution", "-o", str(out), "--models", "lenet5"]) == 2
    assert main(["evolution", "-o", str(tmp_path / "x"), "--models", "nosuch*"]) == 2
    assert "--force" in capsys.readouterr().err


# For one chart: its panels and, per panel, the names of its markers; and where to hover.
_POINTS = """(() => {
  const gd = document.getElementById(%r);
  const panels = gd._fullLayout._subplots.cartesian.length;
  const points = Array.from(gd.querySelectorAll('.scatterlayer .trace .points path.point'));
  const names = points.map(
    p => p.parentNode.parentNode.__data__[0].trace.customdata[p.__data__.i][0]);
  // A marker another one covers (resnet152 and resnet152_v1 share their MACs and top-1)
  // answers a hover with the other's name: hover markers that stand alone.
  const centre = p => { const r = p.getBoundingClientRect();
                        return [r.left + r.width / 2, r.top + r.height / 2]; };
  const c = points.map(centre);
  const lone = points.map((p, i) => i).filter(i => c.every(
    (q, j) => j === i || Math.hypot(q[0] - c[i][0], q[1] - c[i][1]) > 12));
  const i = lone[%d %% lone.length];
  points[i].scrollIntoView({block: 'center'});
  const r = points[i].getBoundingClientRect();
  return {panels, names, lone: lone.length, x: r.left + r.width / 2,
          y: r.top + r.height / 2, picked: names[i]};
})()"""


@pytest.mark.parametrize("chart, with_data", [
    ("top1_vs_macs", lambda m: True), ("params_macs_by_year", lambda m: True),
    ("flops_vs_latency", lambda m: m["latency_ms"] is not None)])
def test_every_chart_has_a_marker_per_model_whose_hover_names_it(atlas, browser, chart,
                                                                 with_data):
    browser.open((atlas / "index.html").as_uri())
    data = json.loads((atlas / "atlas.json").read_text())["models"]
    expected = sorted(m["name"] for m in data if with_data(m))
    assert chart != "flops_vs_latency" or len(expected) == len(list_models(TIMED))
    for k in (0, 7, 23):
        info = browser.js(_POINTS % (f"chart-{chart}", k))
        assert sorted(info["names"]) == sorted(expected * info["panels"])
        assert info["lone"] >= 3
        browser.mouse_move(info["x"], info["y"])
        time.sleep(0.3)
        hover = browser.js(f"document.querySelector('#chart-{chart} .hoverlayer').textContent")
        assert info["picked"] in hover, (k, info["picked"], hover)
        assert "params" in hover and "MACs" in hover and "top-1" in hover
    assert browser.errors() == []


def test_every_block_of_the_evolution_has_its_diagram_and_numbers(atlas, browser):
    browser.open((atlas / "index.html").as_uri())
    blocks = browser.js("""Array.from(document.querySelectorAll('[data-block]')).map(b => {
        const img = b.querySelector('img[src^="data:image/svg+xml"]');
        return [b.dataset.block, !!img && img.complete && img.naturalWidth > 0,
                b.textContent.includes('params') && b.textContent.includes('MACs')];
    })""")
    assert [b[0] for b in blocks] == [r["key"] for r in
                                      json.loads((atlas / "atlas.json").read_text())["blocks"]]
    assert sorted(b[0] for b in blocks) == sorted(s.key for s in BLOCKS)
    assert all(ok and numbers for _, ok, numbers in blocks), blocks
    assert browser.errors() == []
