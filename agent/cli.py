"""``vigil-agent``: enroll, run, check a network device's captured output (``device parse``), and the
sensor's SSH side (``device keyscan|trust|collect``, in :mod:`agent.sensor.cli`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from common.entry import guarded, setup_logging

if TYPE_CHECKING:
    import argparse

PROG = "vigil-agent"


def build_parser() -> argparse.ArgumentParser:
    from common.cli import Parser, add_common

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
    d = sub.add_parser("device", help="network devices the agent can collect from as a sensor")
    dsub = d.add_subparsers(dest="device_cmd", required=True, metavar="COMMAND")
    dp = dsub.add_parser(
        "parse", help="print the facts the sensor would report from one captured command output",
        description="Parse one captured output of a device command, as the sensor would. Platforms and "
                    "commands: docs/devices.md (an unknown one is refused with the list).")
    dp.add_argument("--platform", required=True, help="Netmiko platform name: cisco_ios, juniper_junos, fortinet, ...")
    dp.add_argument("--command", required=True, help='the command whose output FILE holds, e.g. "show version"')
    dp.add_argument("file", metavar="FILE", help="the captured output; - for standard input")
    dp.add_argument("--json", action="store_true", help="print one JSON document")
    dp.add_argument("--config-text", action="store_true",
                    help="for a configuration command, also print the redacted, normalised text")
    add_common(dp)
    from agent.sensor.cli import add_parsers

    add_parsers(dsub)
    return p


class RunArgs(NamedTuple):
    data_dir: Path
    config: Path | None
    debug: bool


def quick_run_args(argv: Sequence[str]) -> RunArgs | None:
    """``run --data-dir DIR [--config FILE] [--debug]`` (options in any order, each once), read without argparse.

    That is the command a service manager starts the agent with, and argparse would stay loaded for
    the agent's lifetime (~0.35 MB resident) for one look at it. Anything else (another command,
    ``--help``, ``--data-dir=DIR``, an abbreviation, a mistake) gives None and goes to
    :func:`build_parser`, which reads what this accepts the same way (``tests/agent/test_cli.py``).
    """
    if not argv or argv[0] != "run":
        return None
    values: dict[str, str] = {}
    debug = False
    rest = iter(argv[1:])
    for arg in rest:
        if arg == "--debug" and not debug:
            debug = True
        elif arg in ("--data-dir", "--config") and arg not in values:
            value = next(rest, None)
            if value is None or value.startswith("-"):
                return None
            values[arg] = value
        else:
            return None
    if "--data-dir" not in values:
        return None
    config = values.get("--config")
    return RunArgs(Path(values["--data-dir"]), None if config is None else Path(config), debug)


def run_agent(args: RunArgs) -> int:
    from agent.main import Agent, AgentConfig, limit_malloc_arenas

    setup_logging(args.debug)
    limit_malloc_arenas()  # before any thread starts
    Agent(args.data_dir, AgentConfig.load(args.config)).run()
    return 0


def main_args(args: argparse.Namespace) -> int:
    if args.cmd == "enroll":
        from agent.enroll import enroll
        from common.cli import print_json

        ident = enroll(args.controller, args.token, args.data_dir, args.enroll_port)
        if args.json:
            print_json({"agent_id": ident.agent_id, "controller": ident.controller, "data_dir": str(args.data_dir)})
        else:
            print(f"enrolled as {ident.agent_id}; start it with: vigil-agent run --data-dir {args.data_dir}")
        return 0
    if args.cmd == "device" and args.device_cmd == "parse":
        return device_parse(args)
    if args.cmd == "device":
        from agent.sensor.cli import main as sensor_main

        return sensor_main(args)
    return run_agent(RunArgs(args.data_dir, args.config, args.debug))


# Larger than any running configuration a device prints; a bigger file is not a captured output.
_MAX_CAPTURE_BYTES = 64 * 1024 * 1024


def _read_capture(name: str) -> str:
    from common.errors import VigilError

    try:
        if name == "-":
            data = sys.stdin.buffer.read(_MAX_CAPTURE_BYTES + 1)
        else:
            with open(name, "rb") as f:
                data = f.read(_MAX_CAPTURE_BYTES + 1)
    except OSError as exc:
        raise VigilError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(data) > _MAX_CAPTURE_BYTES:
        raise VigilError(f"{name}: larger than {_MAX_CAPTURE_BYTES // (1024 * 1024)} MiB; not a captured output")
    return data.decode("utf-8", errors="replace")


def _lines(prefix: str, value: object) -> list[str]:
    if isinstance(value, dict):
        return [line for k, v in value.items() for line in _lines(f"{prefix}.{k}" if prefix else k, v)]
    if isinstance(value, list):
        return [line for i, v in enumerate(value) for line in _lines(f"{prefix}[{i}]", v)]
    if value is None:
        return []
    return [f"{prefix}: {str(value).lower() if isinstance(value, bool) else value}"]


def device_parse(args: argparse.Namespace) -> int:
    """``vigil-agent device parse``: exit 2 for an unknown platform or command, 1 for unreadable output."""
    from checks.device import UnknownDeviceCommand, parse, parser_for
    from common.cli import print_json
    from common.errors import UsageError

    try:
        parser_for(args.platform, args.command)
    except UnknownDeviceCommand as exc:
        raise UsageError(str(exc)) from None
    facts = parse(args.platform, args.command, _read_capture(args.file))
    doc = facts.to_dict()
    if args.config_text and facts.config is not None:
        doc["config"]["text"] = facts.config.text
    if args.json:
        print_json(doc)
        return 0
    text = doc.get("config", {}).pop("text", None) if doc.get("config") else None
    for line in _lines("", doc):
        print(line)
    if text is not None:
        sys.stdout.write("--- normalised configuration ---\n" + text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    quick = quick_run_args(sys.argv[1:] if argv is None else argv)
    if quick is not None:
        return guarded(PROG, quick.debug, lambda: run_agent(quick))
    from common.cli import run

    return run(PROG, main_args, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
