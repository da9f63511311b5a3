"""The ``cnnzoo`` command: one subcommand per ``cmd_*.py`` module in this package.

Each command module defines ``NAME``, ``HELP``, ``configure(parser)`` and ``run(args) -> int``;
they are discovered, so a new command is a new file. What a user got wrong (an unknown model, a
bad path, a wrong shape) ends in one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from types import ModuleType

from ..errors import CnnzooError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _commands() -> list[ModuleType]:
    mods = [importlib.import_module(f"{__name__}.{m.name}")
            for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_")]
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 100))


def printable(text: str) -> str:
    """One line any stream can take: control characters (a newline in an argument) and bytes
    that are not UTF-8 (lone surrogates to Python) are shown as backslash escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _error(message: str) -> None:
    print(printable(f"cnnzoo: error: {message}"), file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as for every other user error
        self.exit(EXIT_USER_ERROR, printable(f"cnnzoo: error: {message} "
                                             f"(see `{self.prog} --help`)") + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnzoo",
                     description="Classic image CNNs from LeNet-5 to EfficientNetV2: build, see, "
                                 "train, measure and export them.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for mod in _commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    return parser


def run() -> None:
    """The ``cnnzoo`` program: :func:`main` in a process of its own, tuned for it.

    The process is the command's, so it makes the memory call (``cnnzoo.memory``) before torch
    starts; ``CNNZOO_TUNE_MEMORY=0`` leaves the defaults. :func:`main`, called from Python,
    leaves the caller's process alone.
    """
    if os.environ.get("CNNZOO_TUNE_MEMORY", "1") != "0":
        from ..memory import tune_memory
        tune_memory()
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CnnzooError as exc:
        _error(str(exc))
        return EXIT_USER_ERROR
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # What the machine refused (a read-only folder, a full disk, a missing file): one line.
        # An OSError without an errno did not come from the system, and is a bug to show.
        if exc.errno is None:
            raise
        where = (f": {exc.filename}" if exc.filename and str(exc.filename) not in
                 str(exc.strerror) else "")
        _error(f"{exc.strerror or exc}{where}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        print(printable(f"cnnzoo: interrupted{f': {exc}' if str(exc) else ''}"), file=sys.stderr)
        # 128 + the signal, as a shell reports it: 130 for Ctrl-C, 143 for SIGTERM.
        return 128 + getattr(exc, "signum", EXIT_INTERRUPTED - 128)


if __name__ == "__main__":
    sys.exit(main())
