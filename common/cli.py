"""What every Vigil command shares: exit codes, one-line errors, ``--debug`` and ``--json`` output.

Exit 0 on success, 2 on usage errors (argparse's own), 1 on failure with one clear line on stderr and no
traceback unless ``--debug`` (:func:`common.entry.guarded`, which holds what needs no argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from common.entry import guarded
from common.entry import setup_logging as setup_logging


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


def run(prog: str, main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
        argv: Sequence[str] | None = None) -> int:
    args = parser.parse_args(argv)
    return guarded(prog, bool(getattr(args, "debug", False)), lambda: main(args))
