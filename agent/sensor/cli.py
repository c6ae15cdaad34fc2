"""``vigil-agent device keyscan|trust|collect``: the operator's side of the sensor's SSH sessions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import UsageError

if TYPE_CHECKING:
    from common.cli import Parser

DEFAULT_PORT = 22


def add_parsers(dsub: argparse._SubParsersAction[Parser]) -> None:
    from common.cli import add_common

    ks = dsub.add_parser("keyscan", help="show a device's SSH host key fingerprint (trusts nothing)",
                         description="Connect, read the host key the device shows and print its SHA256 "
                                     "fingerprint, to compare with the device's console before `trust`.")
    _target_args(ks)
    add_common(ks)
    tr = dsub.add_parser("trust", help="pin a device's SSH host key after comparing its fingerprint",
                         description="Pin the device's host key in DATA_DIR/known_hosts if it shows the key "
                                     "whose fingerprint you give (as `keyscan` or the device's console prints "
                                     "it). Recorded in DATA_DIR/sensor-audit.jsonl. A different pinned key "
                                     "is replaced only with --replace.")
    tr.add_argument("--data-dir", type=Path, required=True)
    _target_args(tr)
    tr.add_argument("--fingerprint", required=True, help="SHA256:... of the key you verified")
    tr.add_argument("--replace", action="store_true", help="replace a different key pinned for the device")
    add_common(tr)
    co = dsub.add_parser("collect", help="collect from one device over SSH now and print what it reports",
                         description="Connect to one device with a pinned host key and a named credential "
                                     "(DATA_DIR/credentials.yaml), run the platform's commands and print the "
                                     "facts, as the sensor would report them.")
    co.add_argument("--data-dir", type=Path, required=True)
    _target_args(co)
    co.add_argument("--platform", required=True, help="Netmiko platform name: cisco_ios, juniper_junos, linux, ...")
    co.add_argument("--credential", required=True, help="a credential name from DATA_DIR/credentials.yaml")
    co.add_argument("--command", action="append", default=None,
                    help="a command to run (repeatable; default: every command Vigil parses on the platform)")
    co.add_argument("--timeout", type=float, default=60.0, help="seconds per command (default 60)")
    co.add_argument("--json", action="store_true")
    add_common(co)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="the device's address")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="SSH port (default 22)")


def main(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: not a TCP port")
    if args.device_cmd == "keyscan":
        return _keyscan(args)
    if args.device_cmd == "trust":
        return _trust(args)
    return _collect(args)


def _keyscan(args: argparse.Namespace) -> int:
    from agent.sensor.hostkeys import fingerprint, host_entry, presented_key

    key = presented_key(args.host, args.port)
    print(f"{host_entry(args.host, args.port)} {key.get_name()} {fingerprint(key)}")
    return 0


def _trust(args: argparse.Namespace) -> int:
    from agent.sensor import HostKeyError
    from agent.sensor.hostkeys import HostKeyStore, fingerprint, host_entry, presented_key

    key = presented_key(args.host, args.port)
    shown = fingerprint(key)
    where = host_entry(args.host, args.port)
    if shown != args.fingerprint.strip():
        raise HostKeyError(f"{where} shows {key.get_name()} {shown}, not {args.fingerprint}: nothing was pinned")
    replaced = HostKeyStore(args.data_dir).pin(args.host, args.port, key, replace=args.replace)
    print(f"pinned {where} {key.get_name()} {shown}" + (f" (replaced {replaced})" if replaced else ""))
    return 0


def _collect(args: argparse.Namespace) -> int:
    from agent.sensor.credentials import Credentials
    from agent.sensor.hostkeys import HostKeyStore
    from agent.sensor.ssh import Target, Timeouts, collect
    from checks.device import PLATFORMS, DeviceParseError, Facts, UnknownDeviceCommand, parse, parser_for
    from common.cli import print_json

    if args.platform not in PLATFORMS:
        raise UsageError(f"unknown platform {args.platform!r} (known: {', '.join(sorted(PLATFORMS))})")
    commands = args.command or list(PLATFORMS[args.platform])
    for c in commands:
        try:
            parser_for(args.platform, c)
        except UnknownDeviceCommand as exc:
            raise UsageError(str(exc)) from None
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: must be more than 0 seconds")
    credential = Credentials.load(args.data_dir).get(args.credential)
    outputs = collect(Target(args.host, args.platform, args.credential, args.port), commands, credential=credential,
                      hostkeys=HostKeyStore(args.data_dir),
                      timeouts=Timeouts(command=args.timeout, session=args.timeout * (len(commands) + 2)))
    merged: Facts | None = None
    problems: dict[str, str] = {}
    for out in outputs:
        try:
            facts = parse(args.platform, out.command, out.text)
        except DeviceParseError as exc:
            problems[out.command] = str(exc)
            continue
        merged = facts if merged is None else merged.merge(facts)
    doc = merged.to_dict() if merged is not None else {"platform": args.platform}
    doc.pop("command", None)
    if args.json:
        print_json({**doc, "problems": problems})
    else:
        from agent.cli import _lines

        for line in _lines("", doc):
            print(line)
        for command, problem in problems.items():
            print(f"problem: {command}: {problem}")
    return 1 if problems else 0
