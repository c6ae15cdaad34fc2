"""What every Vigil command shares: exit codes, one-line errors, ``--debug`` and ``--json`` output.

Exit 0 on success, 2 on usage errors (argparse's own), 1 on failure with one clear line on stderr and no
traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from common.errors import UsageError, VigilError


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


def setup_logging(debug: bool, quiet: bool = False) -> None:
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not debug:
        for noisy in ("grpc", "asyncio", "alembic", "uvicorn", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def run(prog: str, main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
        argv: Sequence[str] | None = None) -> int:
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        return main(args)
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        if debug:
            raise
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    except (VigilError, OSError) as exc:
        if debug:
            raise
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 1
