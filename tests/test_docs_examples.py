"""Every example in README.md and docs/*.md runs: the Python blocks, and each `cnnzoo` command.

Python: a file's ```python blocks run in order in one namespace (a later block may use what an
earlier one made), in an empty folder, offline. A line that needs the network or a GPU ends in
``# needs network`` or ``# needs gpu``; it is replaced by ``pass`` before the block runs, and
the test checks that exactly the marked lines were left out.

Commands: each ``cnnzoo ...`` line of a bash block (continuations joined) is parsed by the
command's own argparse parser, so a subcommand, flag or value that does not exist fails here,
and each flag is looked up in that subcommand's ``--help``. Those that need no data, network or
minutes (``list``, ``summary``, ``draw`` of small inputs) also run, in a temporary folder.
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from cnnzoo.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
MARK = re.compile(r"#\s*needs (network|gpu)\b", re.I)
SHELLS = {"bash", "sh", "shell", "console", ""}
# Subcommands cheap enough to run for real on any model the docs show.
RUN = {"list", "summary", "draw"}


def blocks(path: Path, langs: set[str]) -> list[tuple[int, str]]:
    """(first line number, text) of each fenced block of ``path`` in one of ``langs``."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in FENCE.finditer(text)
            if m.group(1).lower() in langs]


def runnable(code: str) -> tuple[str, list[str]]:
    """``code`` with each marked line replaced by ``pass`` (same indentation, same line
    numbers), and the lines replaced."""
    out, skipped = [], []
    for line in code.splitlines():
        if MARK.search(line):
            skipped.append(line.strip())
            line = line[:len(line) - len(line.lstrip())] + "pass"
        out.append(line)
    return "\n".join(out) + "\n", skipped


def commands(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, argv after `cnnzoo`) of each cnnzoo command in the shell blocks."""
    found = []
    for start, code in blocks(path, SHELLS):
        lines = code.splitlines()
        i = 0
        while i < len(lines):
            first, line = i, lines[i]
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i]
            i += 1
            words = shlex.split(line, comments=True)
            if words[:1] == ["cnnzoo"]:
                found.append((start + first, words[1:]))
            elif "cnnzoo.cli" in words and words[words.index("cnnzoo.cli") - 1] == "-m":
                found.append((start + first, words[words.index("cnnzoo.cli") + 1:]))
    return found


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached weights either
    monkeypatch.setenv("CNNZOO_TUNE_MEMORY", "0")
    return tmp_path


PY_PAGES = [p for p in PAGES if blocks(p, {"python", "py"})]


@pytest.mark.parametrize("page", PY_PAGES, ids=lambda p: p.name)
def test_python_examples_run(page, offline):
    ns: dict = {"__name__": "__docs_example__"}
    for start, code in blocks(page, {"python", "py"}):
        marked = [ln.strip() for ln in code.splitlines() if MARK.search(ln)]
        code, skipped = runnable(code)
        assert skipped == marked and not MARK.search(code)  # what runs holds no marked line
        # Blank lines in front keep the traceback's line numbers those of the page.
        exec(compile("\n" * start + code, str(page.relative_to(ROOT)), "exec"), ns)


def test_marked_lines_are_left_out_and_only_they():
    code = ("x = 1\n"
            "raise SystemExit('ran')  # needs network\n"
            "if x:\n"
            "    raise SystemExit('ran too')  # needs gpu\n"
            "y = x + 1\n")
    out, skipped = runnable(code)
    assert skipped == ["raise SystemExit('ran')  # needs network",
                       "raise SystemExit('ran too')  # needs gpu"]
    ns: dict = {}
    exec(out, ns)
    assert ns["y"] == 2
    # And the pages mark what they should: every network line of them is marked.
    for page in PY_PAGES:
        for _, code in blocks(page, {"python", "py"}):
            for line in runnable(code)[0].splitlines():
                assert not re.search(r"hf-hub:|https?://|push_to_hub\(|pretrained=\"(torchvision|"
                                     r"timm|keras)", line), f"{page.name}: unmarked {line!r}"


CMD_PAGES = [p for p in PAGES if commands(p)]


def _subparser(name: str):
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices.get(name)


def _number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _help(sub: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main([sub, "--help"])
    assert done.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("page", CMD_PAGES, ids=lambda p: p.name)
def test_cnnzoo_commands_exist_and_the_cheap_ones_run(page, offline, capsys):
    helps: dict[str, str] = {}
    for line, argv in commands(page):
        where = f"{page.name}:{line}: cnnzoo {shlex.join(argv)}"
        assert argv and _subparser(argv[0]) is not None, f"{where}: no such subcommand"
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: {capsys.readouterr().err.strip()}")
        text = helps.setdefault(argv[0], _help(argv[0]))
        flags = set(_subparser(argv[0])._option_string_actions)
        for word in argv[1:]:
            if word.startswith("-") and word != "-" and not _number(word):
                flag = word.split("=", 1)[0]
                # Exactly a flag of the subcommand: argparse would take `--dept` for `--depth`.
                assert flag in flags and re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", text), \
                    f"{where}: {flag} is not a flag of `cnnzoo {argv[0]} --help`"
        if argv[0] in RUN:
            assert main(argv) == 0, where


def test_every_page_is_checked():
    # A page with examples that the collectors missed would go untested.
    assert {p.name for p in PY_PAGES} >= {"README.md", "index.md", "training.md"}
    assert {p.name for p in CMD_PAGES} >= {"README.md", "index.md", "training.md", "seeing.md"}
