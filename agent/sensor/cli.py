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


    cr = dsub.add_parser("credential", help="secrets in the sensor's encrypted vault (passwords, enable secrets)",
                         description="Keep device passwords and enable secrets in DATA_DIR/credentials.vault, "
                                     "encrypted with the vault passphrase (systemd credential 'vigil-vault', "
                                     "VIGIL_VAULT_PASSPHRASE_FILE, VIGIL_VAULT_PASSPHRASE, or asked on the "
                                     "terminal). Secrets are read from standard input, never from arguments.")
    crsub = cr.add_subparsers(dest="credential_cmd", required=True, metavar="ACTION")
    cs = crsub.add_parser("set", help="add or replace the secrets of one credential name")
    cs.add_argument("name")
    cs.add_argument("--data-dir", type=Path, required=True)
    cs.add_argument("--username", required=True)
    cs.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    cs.add_argument("--enable-secret-stdin", action="store_true",
                    help="read the enable secret from the next line of stdin")
    add_common(cs)
    cl = crsub.add_parser("list", help="the names in the vault and what each holds (never the secrets)")
    cl.add_argument("--data-dir", type=Path, required=True)
    cl.add_argument("--json", action="store_true")
    add_common(cl)
    cd = crsub.add_parser("delete", help="remove one credential name from the vault")
    cd.add_argument("name")
    cd.add_argument("--data-dir", type=Path, required=True)
    add_common(cd)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="the device's address")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="SSH port (default 22)")


def main(args: argparse.Namespace) -> int:
    if args.device_cmd == "credential":
        return _credential(args)
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
    from agent.cli import _lines
    from agent.sensor.credentials import Credentials
    from agent.sensor.device import commands_for, snapshots
    from agent.sensor.hostkeys import HostKeyStore
    from agent.sensor.ssh import Target, Timeouts
    from checks.device import PLATFORMS, UnknownDeviceCommand, parser_for
    from common.cli import print_json

    if args.platform not in PLATFORMS:
        raise UsageError(f"unknown platform {args.platform!r} (known: {', '.join(sorted(PLATFORMS))})")
    commands = args.command or commands_for(args.platform)
    for c in commands:
        try:
            parser_for(args.platform, c)
        except UnknownDeviceCommand as exc:
            raise UsageError(str(exc)) from None
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: must be more than 0 seconds")
    credential = Credentials.load(args.data_dir).get(args.credential)
    target = Target(args.host, args.platform, args.credential, args.port)
    (snap,) = snapshots([(target, credential)], hostkeys=HostKeyStore(args.data_dir), commands=commands,
                        timeouts=Timeouts(command=args.timeout, session=args.timeout * (len(commands) + 2)))
    if snap.error is not None:
        raise snap.error
    doc = snap.facts.to_dict() if snap.facts is not None else {"platform": args.platform}
    doc.pop("command", None)
    if args.json:
        print_json({**doc, "problems": snap.problems})
    else:
        for line in _lines("", doc):
            print(line)
        for command, problem in snap.problems.items():
            print(f"problem: {command}: {problem}")
    return 1 if snap.problems else 0


def _passphrase(data_dir: Path, creating: bool) -> str:
    import getpass
    import sys

    from agent.sensor.vault import passphrase_from_environment

    found = passphrase_from_environment()
    if found:
        return found
    if not sys.stdin.isatty():
        raise UsageError("no vault passphrase: set VIGIL_VAULT_PASSPHRASE_FILE or VIGIL_VAULT_PASSPHRASE, or run "
                         "this on a terminal")
    first = getpass.getpass(f"vault passphrase for {data_dir}: ")
    if creating and getpass.getpass("again: ") != first:
        raise UsageError("the two passphrases differ; nothing was written")
    if not first:
        raise UsageError("an empty passphrase is not accepted")
    return first


def _credential(args: argparse.Namespace) -> int:
    import sys

    from agent.sensor.hostkeys import record_audit
    from agent.sensor.vault import VAULT_FILE, Secret, Vault
    from common.cli import print_json

    path = args.data_dir / VAULT_FILE
    if args.credential_cmd == "set":
        if not (args.password_stdin or args.enable_secret_stdin):
            raise UsageError("give --password-stdin and/or --enable-secret-stdin: secrets come from standard input")
        lines = sys.stdin.read().splitlines()
        wanted = int(args.password_stdin) + int(args.enable_secret_stdin)
        if len(lines) < wanted or not all(lines[:wanted]):
            raise UsageError(f"expected {wanted} non-empty line(s) on standard input, got {len(lines)}")
        password = lines[0] if args.password_stdin else None
        enable = lines[int(args.password_stdin)] if args.enable_secret_stdin else None
        vault = Vault.open(args.data_dir, _passphrase(args.data_dir, not path.exists()), create=True)
        replaced = vault.get(args.name) is not None
        vault.set(args.name, Secret(args.username, password=password, enable_secret=enable))
        record_audit(args.data_dir, "credential.set", name=args.name, username=args.username,
                     password=password is not None, enable_secret=enable is not None, replaced=replaced)
        print(f"{'replaced' if replaced else 'added'} credential {args.name!r} in {path}")
        return 0
    vault = Vault.open(args.data_dir, _passphrase(args.data_dir, False))
    if args.credential_cmd == "list":
        rows = []
        for name in vault.names():
            secret = vault.get(name)
            assert secret is not None
            rows.append({"name": name, "username": secret.username, "password": secret.password is not None,
                         "enable_secret": secret.enable_secret is not None})
        if args.json:
            print_json(rows)
        else:
            for r in rows:
                held = [k for k in ("password", "enable_secret") if r[k]]
                print(f"{r['name']}  user {r['username']}  holds {', '.join(held) or 'nothing'}")
            if not rows:
                print("(none)")
        return 0
    if not vault.delete(args.name):
        raise UsageError(f"credential {args.name!r} is not in {path} (known: {', '.join(vault.names()) or 'none'})")
    record_audit(args.data_dir, "credential.delete", name=args.name)
    print(f"deleted credential {args.name!r} from {path}")
    return 0

