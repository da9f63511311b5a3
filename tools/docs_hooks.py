"""MkDocs hooks: the pictures of "Seeing the networks", made by cnnzoo at build time.

Drawn here rather than committed, so they show what the code draws today: a `cnnzoo draw`
diagram, a `cnnzoo summary` table (put into the page where it says ``<!-- cnnzoo summary ... -->``)
and the atlas (`cnnzoo evolution --quick`), whose charts the page shows and whose models link
back to the model-zoo page. ``CNNZOO_DOCS_ATLAS`` picks the atlas's models (a shell wildcard,
default every model; the tests build one model's atlas to stay fast).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import tempfile
from pathlib import Path

from mkdocs.structure.files import File

DIAGRAM = ["draw", "resnet18", "--module", "stages.0.blocks.0", "-o", "resnet18-block.svg"]
_SUMMARY = re.compile(r"<!-- (cnnzoo summary [^>]*?) -->")
_tmp: tempfile.TemporaryDirectory | None = None


def _cnnzoo(argv: list[str]) -> str:
    from cnnzoo.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    if code:
        raise RuntimeError(f"`cnnzoo {shlex.join(argv)}` ended with {code}")
    return out.getvalue()


def on_files(files, config):
    global _tmp
    from cnnzoo.inspect.atlas import build_atlas

    _tmp = tempfile.TemporaryDirectory(prefix="cnnzoo-docs-")
    work = Path(_tmp.name)
    pictures = work / "pictures"
    pictures.mkdir()
    cwd = os.getcwd()
    os.chdir(pictures)
    try:
        _cnnzoo(DIAGRAM)
    finally:
        os.chdir(cwd)
    pattern = os.environ.get("CNNZOO_DOCS_ATLAS", "*")
    build_atlas(work / "atlas", pattern, quick=True, with_blocks=pattern == "*",
                docs_url="../", log=lambda line: None)
    for folder in ("pictures", "atlas"):
        for path in sorted((work / folder).rglob("*")):
            if path.is_file() and path.suffix != ".dot":
                uri = path.relative_to(work).as_posix()
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    def summary(match):
        argv = shlex.split(match.group(1))[1:]
        return f"```text\n$ {match.group(1)}\n{_cnnzoo(argv).rstrip()}\n```"
    return _SUMMARY.sub(summary, markdown)


def on_post_build(config):
    global _tmp
    if _tmp is not None:
        _tmp.cleanup()
        _tmp = None
