"""What every Vigil command's entry point shares besides parsing its arguments: logging and exit codes.

Exit 0 on success, 1 on failure with one clear line on stderr and no traceback unless ``--debug``, 2 on
usage errors, 130 on Ctrl-C. Kept apart from :mod:`common.cli` so that a command that reads its
arguments without argparse (``vigil-agent run``, see :func:`agent.cli.quick_run_args`) does not load it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from common.errors import UsageError, VigilError


def setup_logging(debug: bool, quiet: bool = False) -> None:
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not debug:
        for noisy in ("grpc", "asyncio", "alembic", "uvicorn", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def guarded(prog: str, debug: bool, main: Callable[[], int]) -> int:
    """Run ``main`` and turn what it raises into an exit code and one line on stderr (with ``debug``,
    a Vigil or OS error is raised again, traceback and all)."""
    try:
        return main()
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
