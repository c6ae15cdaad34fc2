"""``vigil-controller``: serve, and the administrative commands that work on the data directory."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common.cli import Parser, add_common, print_json, run, setup_logging
from common.durations import parse_duration
from common.errors import UsageError

PROG = "vigil-controller"


def _admin_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="The Vigil controller: stores results, judges baselines, raises tickets.")
    add_common(p)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def data(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", type=Path, required=True,
                        help="controller data directory (that of `vigil up` also works: its controller/ is used)")
        sp.add_argument("--db", default=None, metavar="URL",
                        help="database URL: postgresql://USER@HOST/DATABASE or sqlite:///FILE "
                             "(default: SQLite under --data-dir)")
        add_common(sp)

    s = sub.add_parser("serve", help="run the controller")
    data(s)
    s.add_argument("--grpc", default="127.0.0.1:7443", help="agent channel, mutual TLS (default %(default)s)")
    s.add_argument("--enroll", default=None, help="enrollment listener (default: the --grpc port + 1)")
    s.add_argument("--http", default="127.0.0.1:8080", help="REST API and web UI (default %(default)s)")
    s.add_argument("--heartbeat", default="30s", help="agent heartbeat interval (default %(default)s)")
    s.add_argument("--notify-config", type=Path, default=None, metavar="FILE",
                   help="notification targets (default: DATA_DIR/notifications.yaml if it exists)")

    t = sub.add_parser("token", help="enrollment tokens").add_subparsers(dest="sub", required=True)
    tc = t.add_parser("create", help="print one single-use enrollment token")
    data(tc)
    tc.add_argument("--ttl", default="1h", help="lifetime (default %(default)s)")
    tc.add_argument("--tags", default="", help="comma-separated tags given to the agent")
    tc.add_argument("--count", type=int, default=1, help="print this many tokens, one per line (one per host)")

    u = sub.add_parser("user", help="web/API users").add_subparsers(dest="sub", required=True)
    uc = u.add_parser("create", help="create a user")
    data(uc)
    uc.add_argument("--username", required=True)
    uc.add_argument("--role", required=True, choices=["admin", "analyst", "viewer"])
    uc.add_argument("--password-stdin", action="store_true", required=True, help="read the password from stdin")
    uu = u.add_parser("unlock", help="unlock an account locked after too many failed sign-ins")
    data(uu)
    uu.add_argument("--username", required=True)
    ur = u.add_parser("reset-totp", help="forget a user's authenticator; they enrol a new one at the next login")
    data(ur)
    ur.add_argument("--username", required=True)
    # Disabling and enabling accounts.
    for verb, what in (("disable", "refuse a user's sign-ins and API keys and end their sessions"),
                       ("enable", "let a disabled user sign in again")):
        ud = u.add_parser(verb, help=what)
        data(ud)
        ud.add_argument("--username", required=True)
    ul = u.add_parser("list", help="users with their role and state")
    data(ul)
    ul.add_argument("--json", action="store_true")

    k = sub.add_parser("apikey", help="API keys").add_subparsers(dest="sub", required=True)
    kc = k.add_parser("create", help="print a new API key for a user")
    data(kc)
    kc.add_argument("--username", required=True)
    # Listing and revoking keys (the secret is never stored, so never shown again).
    kl = k.add_parser("list", help="API keys: id, user, created, revoked (never the secret)")
    data(kl)
    kl.add_argument("--username", default=None, help="only this user's keys")
    kl.add_argument("--json", action="store_true")
    kr = k.add_parser("revoke", help="revoke an API key for good")
    data(kr)
    kr.add_argument("key_id", help="the id `apikey list` shows (or the whole key)")

    a = sub.add_parser("audit", help="the audit log").add_subparsers(dest="sub", required=True)
    av = a.add_parser("verify", help="verify the hash chain end to end")
    data(av)
    av.add_argument("--json", action="store_true")

    b = sub.add_parser("baseline", help="hardening baselines").add_subparsers(dest="sub", required=True)
    ba = b.add_parser("apply", help="validate and apply a baseline YAML file")
    data(ba)
    ba.add_argument("file", type=Path)

    g = sub.add_parser("agent", help="enrolled agents").add_subparsers(dest="sub", required=True)
    gr = g.add_parser("revoke", help="revoke an agent's certificate")
    data(gr)
    gr.add_argument("agent_id")
    gr.add_argument("--reason", default="")
    _add_backup_commands(sub, data)
    return p


def _add_backup_commands(sub: Any, data: Callable[[argparse.ArgumentParser], None]) -> None:
    bk = sub.add_parser("backup", help="a consistent copy of the database while the controller runs, checked")
    data(bk)
    bk.add_argument("--out", type=Path, required=True, metavar="FILE", help="the backup file to write")
    bk.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    rs = sub.add_parser("restore", help="put a backup in place of the database (the controller must be stopped)")
    data(rs)
    rs.add_argument("--from", dest="source", type=Path, required=True, metavar="FILE",
                    help="a file written by `vigil-controller backup`")


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from controller.core import Controller, ControllerConfig, find_data_dir

    # Only `serve` creates a controller: any other command on a directory without one is a mistake.
    data_dir = find_data_dir(args.data_dir)
    if data_dir != args.data_dir.resolve():
        sys.stderr.write(f"{PROG}: using the controller in {data_dir}\n")
    return Controller.open(ControllerConfig(data_dir=data_dir, db_url=args.db))


def main_args(args: argparse.Namespace) -> int:
    if args.cmd == "serve":
        from controller.core import ControllerConfig, DataDirLock, find_data_dir
        from controller.server import Running, serve

        setup_logging(args.debug)
        data_dir = find_data_dir(args.data_dir, create=True)
        # One controller per data directory, for as long as this process lives (released by the kernel).
        lock = DataDirLock(data_dir).acquire()
        cfg = ControllerConfig(data_dir=data_dir, db_url=args.db, grpc_addr=args.grpc, enroll_addr=args.enroll,
                               http_addr=args.http, heartbeat_s=parse_duration(args.heartbeat))

        def ready(r: Running) -> None:
            sys.stdout.write(f"vigil-controller: agents on {args.grpc.rsplit(':', 1)[0]}:{r.grpc_port} "
                             f"(enrollment :{r.enroll_port}), API on {r.url}/api/v1, data in {data_dir}\n")
            sys.stdout.flush()

        try:
            asyncio.run(serve(cfg, ready, notify_config=args.notify_config))
        finally:
            lock.release()
        return 0

    if args.cmd in ("backup", "restore"):
        from controller.cli.backup import backup, restore
        return (backup if args.cmd == "backup" else restore)(args, _admin_actor(), PROG)

    ctl = _open(args)
    actor = _admin_actor()
    if args.cmd == "token":
        from controller.domain.enrollment import create_token
        ttl = dt.timedelta(seconds=parse_duration(args.ttl))
        tags = [t.strip() for t in args.tags.split(",") if t.strip()]
        if not 1 <= args.count <= 100_000:
            raise UsageError("--count must be between 1 and 100000")
        with ctl.sessions.begin() as s:
            tokens = [create_token(s, ctl.ca, ttl, tags, actor) for _ in range(args.count)]
        print("\n".join(tokens))
        return 0
    if args.cmd == "user" and args.sub in ("unlock", "reset-totp"):
        from controller.domain.users import reset_totp, unlock
        with ctl.sessions.begin() as s:
            (unlock if args.sub == "unlock" else reset_totp)(s, args.username, actor)
        sys.stderr.write(f"{'unlocked' if args.sub == 'unlock' else 'reset the authenticator of'} {args.username}\n")
        return 0
    if args.cmd == "user" and args.sub in ("disable", "enable"):
        from controller.domain import users
        with ctl.sessions.begin() as s:
            (users.disable if args.sub == "disable" else users.enable)(s, args.username, actor)
        sys.stderr.write(f"{args.sub}d {args.username}\n")
        return 0
    if args.cmd == "user" and args.sub == "list":
        from controller.cli.operator import table
        from controller.domain import users
        with ctl.sessions() as s:
            rows = [users.user_json(u) for u in users.list_users(s)]
        if args.json:
            print_json(rows)
        else:
            print(table(rows, ["username", "role", "locked", "disabled", "last_login_at"]))
        return 0
    if args.cmd == "user":
        from controller.domain.users import create_user
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("no password on stdin")
        with ctl.sessions.begin() as s:
            create_user(s, args.username, args.role, password, actor)
        sys.stderr.write(f"created {args.role} {args.username}\n")
        return 0
    if args.cmd == "apikey" and args.sub == "list":
        from controller.cli.operator import table
        from controller.domain import users
        with ctl.sessions() as s:
            keys = [users.api_key_json(k) for k in users.list_api_keys(s, args.username)]
        if args.json:
            print_json(keys)
        else:
            print(table(keys, ["id", "username", "created_at", "revoked_at"]))
        return 0
    if args.cmd == "apikey" and args.sub == "revoke":
        from controller.domain import users
        with ctl.sessions.begin() as s:
            row = users.revoke_api_key(s, args.key_id, actor)
            key_id, owner = row.id, row.username
        sys.stderr.write(f"revoked API key {key_id} of {owner}\n")
        return 0
    if args.cmd == "apikey":
        from controller.domain.users import create_api_key
        with ctl.sessions.begin() as s:
            key = create_api_key(s, args.username, actor)
        print(key)
        return 0
    if args.cmd == "audit":
        from controller.domain import audit
        with ctl.sessions() as s:
            res = audit.verify(s)
        if args.json:
            print_json({"ok": res.ok, "entries": res.entries, "first_bad_seq": res.first_bad_seq,
                        "reason": res.reason, "head": res.head})
        elif res.ok:
            print(f"audit log verified: {res.entries} entries, head {res.head[:16]}")
        else:
            sys.stderr.write(f"{PROG}: audit log BROKEN at entry {res.first_bad_seq}: {res.reason} "
                             f"({res.entries} entries verified before it)\n")
        return 0 if res.ok else 1
    if args.cmd == "baseline":
        from controller.cli.operator import read_baseline_file

        doc = ctl.apply_baseline(read_baseline_file(args.file), args.file.name, actor)
        print(f"applied baseline {doc.name} version {doc.version} ({len(doc.rules)} rules)")
        return 0
    if args.cmd == "agent":
        from controller.domain.enrollment import revoke
        with ctl.sessions.begin() as s:
            agent = revoke(s, args.agent_id, actor, args.reason)
        print(f"revoked {agent.id} ({agent.hostname})")
        return 0
    raise UsageError(f"unknown command {args.cmd}")


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, main_args, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
