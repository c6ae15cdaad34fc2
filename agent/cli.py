"""``vigil-agent``: enroll and run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.cli import Parser, add_common, print_json, run, setup_logging

PROG = "vigil-agent"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="The Vigil agent: runs checks and reports to the controller.")
    add_common(p)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    e = sub.add_parser("enroll", help="get a certificate from the controller with a one-time token")
    e.add_argument("--controller", required=True, help="HOST:PORT of the controller's agent listener")
    e.add_argument("--token", required=True, help="token printed by 'vigil-controller token create'")
    e.add_argument("--data-dir", type=Path, required=True)
    e.add_argument("--enroll-port", type=int, default=None, help="enrollment port (default: PORT + 1)")
    e.add_argument("--json", action="store_true")
    add_common(e)
    r = sub.add_parser("run", help="run the agent until stopped")
    r.add_argument("--data-dir", type=Path, required=True)
    r.add_argument("--config", type=Path, default=None, help="YAML: spool_max_mb, check_timeout_s")
    add_common(r)
    return p


def main_args(args: argparse.Namespace) -> int:
    if args.cmd == "enroll":
        from agent.enroll import enroll

        ident = enroll(args.controller, args.token, args.data_dir, args.enroll_port)
        if args.json:
            print_json({"agent_id": ident.agent_id, "controller": ident.controller, "data_dir": str(args.data_dir)})
        else:
            print(f"enrolled as {ident.agent_id}; start it with: vigil-agent run --data-dir {args.data_dir}")
        return 0
    from agent.main import Agent, AgentConfig, limit_malloc_arenas

    setup_logging(args.debug)
    limit_malloc_arenas()  # before any thread starts
    Agent(args.data_dir, AgentConfig.load(args.config)).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, main_args, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
