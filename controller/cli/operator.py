"""``vigil``: the operator CLI over the REST API, and ``vigil up``, the newcomer's one command.

Uses only the standard library so it works from the base install on any admin workstation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.cli import Parser, add_common, print_json, run
from common.errors import UsageError, VigilError
from controller.cli import eol

PROG = "vigil"


class ApiError(VigilError):
    pass


class Client:
    def __init__(self, url: str, key: str, timeout: float = 30.0) -> None:
        self.base = url.rstrip("/")
        if not self.base.endswith("/api/v1"):
            self.base += "/api/v1"
        self.key = key
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:
        payload = self.fetch(method, path, body, raw, headers)
        return json.loads(payload) if payload else None

    def fetch(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
              headers: dict[str, str] | None = None) -> bytes:
        """The response body as bytes (a CSV export); errors as :meth:`call` raises them."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.key}")
        req.add_header("Accept", "application/json")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            try:
                doc = json.loads(text)
                detail = doc.get("detail", text)
            except ValueError:
                detail = text
            if isinstance(detail, list):  # FastAPI validation errors
                detail = "; ".join(str(d.get("msg", d)) for d in detail)
            raise ApiError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise ApiError(f"cannot reach the controller at {self.base}: {exc.reason}") from None
        return bytes(payload)


# The largest baseline file, as the controller's baseline language limits it (controller.baselines.MAX_BYTES;
# that module needs pydantic, which this CLI does without).
MAX_BASELINE_BYTES = 1024 * 1024
_NAME_LINE = re.compile(r"""^baseline:[ \t]*(?:"([^"\n]*)"|'([^'\n]*)'|([^\s#'"]+))""", re.MULTILINE)


def read_baseline_file(path: Path) -> bytes:
    """A baseline file's bytes, refused with one line when too large or not UTF-8, before anything parses it.

    The size is checked before reading, and reading stops past the limit whatever the file claims
    (a pipe or a device has no size).
    """
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BASELINE_BYTES:
                raise UsageError(f"{path.name}: the file is {size} bytes, more than the "
                                 f"{MAX_BASELINE_BYTES // 1024} KiB a baseline may hold")
            data = f.read(MAX_BASELINE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_BASELINE_BYTES:
        raise UsageError(f"{path.name}: the file is larger than the {MAX_BASELINE_BYTES // 1024} KiB "
                         "a baseline may hold")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UsageError(f"{path.name}:{line}: not UTF-8 at byte {exc.start}") from None
    return data


def _baseline_name(text: str) -> str | None:
    """The top-level ``baseline:`` name, found without parsing the YAML (the controller parses and validates)."""
    m = _NAME_LINE.search(text.removeprefix("\ufeff"))
    return next((g for g in m.groups() if g), None) if m else None


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    """Rows as aligned columns under upper-case headings (also for vigil-controller's listings)."""
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    widths = [min(w, 60) for w in widths]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))]
    for row in cells:
        lines.append("  ".join(v[:w].ljust(w) for v, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = Parser(prog=PROG, description="Operate a Vigil controller over its REST API.")
    p.add_argument("--url", default=os.environ.get("VIGIL_URL"), help="controller URL (or VIGIL_URL)")
    p.add_argument("--api-key", default=os.environ.get("VIGIL_API_KEY"), help="API key (or VIGIL_API_KEY)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON document")
    add_common(p)
    sub = p.add_subparsers(dest="noun", required=True, metavar="NOUN")

    up = sub.add_parser("up", help="start a controller and a local agent on SQLite (newcomer's command)")
    up.add_argument("--data-dir", type=Path, default=Path("vigil-data"))
    up.add_argument("--http", default="127.0.0.1:8080")
    up.add_argument("--grpc", default="127.0.0.1:7443")
    add_common(up)

    def verb(noun: str, help_: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        return sub.add_parser(noun, help=help_).add_subparsers(dest="verb", required=True, metavar="VERB")

    def leaf(vs: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_: str
             ) -> argparse.ArgumentParser:
        lp = vs.add_parser(name, help=help_)
        lp.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        add_common(lp)
        return lp

    ag = verb("agents", "enrolled agents")
    leaf(ag, "list", "list agents")
    leaf(ag, "show", "one agent with its findings").add_argument("id")
    leaf(ag, "revoke", "revoke an agent's certificate (admin)").add_argument("id")

    dv = verb("devices", "network devices that sensors collect from (inventory)")
    leaf(dv, "list", "list devices: purpose, address, platform, version, support, last collected").add_argument(
        "--csv", type=Path, default=None, metavar="FILE", help="write the inventory as CSV to FILE (- for stdout)")

    tk = verb("tickets", "incident tickets")
    tl = leaf(tk, "list", "list tickets")
    tl.add_argument("--status", default=None, help="e.g. open or open,acknowledged")
    tl.add_argument("--severity", default=None)
    tl.add_argument("--check", default=None)
    leaf(tk, "show", "one ticket with its timeline").add_argument("id", type=int)
    tt = leaf(tk, "transition", "move a ticket to another state")
    tt.add_argument("id", type=int)
    tt.add_argument("--to", required=True, help="acknowledged, in_progress, resolved, closed, false_positive, open")
    tt.add_argument("--reason", default="", help="why (required for false_positive)")
    tt.add_argument("--exception-owner", default=None,
                    help="with --to false_positive: accept the risk, owned by this user, until --exception-expires")
    tt.add_argument("--exception-expires", default=None, help="RFC 3339 time the exception ends")
    ta = leaf(tk, "assign", "give a ticket to an analyst (empty name unassigns)")
    ta.add_argument("id", type=int)
    ta.add_argument("assignee")
    tc = leaf(tk, "comment", "add a comment to a ticket's timeline")
    tc.add_argument("id", type=int)
    tc.add_argument("text")
    tr = leaf(tk, "report", "file a report stage of a critical/high incident (initial, formal, closure)")
    tr.add_argument("id", type=int)
    tr.add_argument("--stage", required=True, choices=("initial", "formal", "closure"))
    tr.add_argument("--text", required=True)

    ex = verb("exceptions", "accepted risk: an owner, a reason and an expiry")
    el = leaf(ex, "list", "list exceptions")
    el.add_argument("--state", default=None, help="active, expired or revoked")
    ec = leaf(ex, "create", "accept the risk of a rule's failures on some assets until a date (analyst)")
    ec.add_argument("--rule", required=True, help="rule id, e.g. PORTS-ALLOWED")
    ec.add_argument("--assets", required=True, help="comma-separated agent ids, hostnames, tag:NAME, or '*'")
    ec.add_argument("--subject", default="*", help="the finding subject or a glob (default: every subject)")
    ec.add_argument("--owner", required=True, help="the user who answers for the risk")
    ec.add_argument("--reason", required=True)
    ec.add_argument("--expires", required=True, help="RFC 3339 time, at most a year ahead")
    er = leaf(ex, "revoke", "end an exception now (its creator or an admin)")
    er.add_argument("id")
    er.add_argument("--reason", default="")

    fd = verb("findings", "evaluated findings")
    fl = leaf(fd, "list", "list findings")
    fl.add_argument("--status", default=None, help="pass or fail")
    fl.add_argument("--check", default=None)
    fl.add_argument("--asset", default=None)

    bl = verb("baseline", "hardening baselines")
    leaf(bl, "apply", "validate and apply a baseline YAML file (admin)").add_argument("file", type=Path)
    leaf(bl, "show", "show a baseline").add_argument("name")
    leaf(bl, "list", "list baselines")

    sw = verb("sweep", "run checks now")
    sr = leaf(sw, "run", "ask every connected agent to run its checks now")
    sr.add_argument("--checks", default="", help="comma-separated check ids (default: all)")
    sr.add_argument("--wait", action="store_true", help="accepted for compatibility; sweeps report via tickets")

    ch = verb("change", "approved change windows (a change needs a requester and a different approver)")
    cc = leaf(ch, "create", "request a change window (analyst); prints its id")
    cc.add_argument("--assets", required=True, help="comma-separated agent ids, hostnames or tag:NAME")
    cc.add_argument("--paths", required=True, help="comma-separated absolute paths or globs (/var/www/html/**)")
    cc.add_argument("--start", required=True, help="RFC 3339 time, e.g. 2026-03-02T08:00:00Z")
    cc.add_argument("--end", required=True, help="RFC 3339 time (at most 30 days after --start)")
    cc.add_argument("--reason", required=True, help="what is changed and why")
    leaf(ch, "approve", "approve a requested change (admin, not the requester)").add_argument("id")
    cr = leaf(ch, "reject", "reject a requested change (admin)")
    cr.add_argument("id")
    cr.add_argument("--reason", required=True)
    cx = leaf(ch, "cancel", "withdraw a request or end an approved window early")
    cx.add_argument("id")
    cx.add_argument("--reason", default="")
    cl = leaf(ch, "list", "list changes")
    cl.add_argument("--status", default=None, help="requested, approved, rejected, cancelled (comma-separated)")
    leaf(ch, "show", "one change with its change records").add_argument("id")

    nt = verb("notifications", "the notification outbox (docs/notifications.md)")
    leaf(nt, "targets", "each target with what waits for it and its last attempt")
    nl = leaf(nt, "list", "deliveries, newest first")
    nl.add_argument("--status", default=None, help="pending, delivered or skipped")
    nl.add_argument("--target", default=None)
    nl.add_argument("--stuck", action="store_true", help="only deliveries pending longer than retry.stuck_after")
    leaf(nt, "test", "try a target's connection and credentials (admin)").add_argument("target")

    us = verb("users", "users and their sign-in state (admin)")
    leaf(us, "list", "users with role, locked, disabled and last sign-in")
    for name, what in (("disable", "refuse a user's sign-ins and API keys and end their sessions"),
                       ("enable", "let a disabled user sign in again"),
                       ("unlock", "lift a sign-in lock, for everyone and for every source")):
        leaf(us, name, what).add_argument("username")

    ak = verb("apikeys", "API keys, never their secrets (admin)")
    leaf(ak, "list", "API keys: id, user, created, revoked").add_argument("--username", default=None)
    leaf(ak, "revoke", "revoke an API key for good").add_argument("key_id")

    au = verb("audit", "the audit log")
    leaf(au, "verify", "verify the audit hash chain")
    eol.add_cli(sub)
    return p


def _client(args: argparse.Namespace) -> Client:
    if not args.url:
        raise UsageError("no controller URL: pass --url or set VIGIL_URL")
    if not args.api_key:
        raise UsageError("no API key: pass --api-key or set VIGIL_API_KEY (see 'vigil-controller apikey create')")
    return Client(args.url, args.api_key)


def main_args(args: argparse.Namespace) -> int:
    if args.noun == "up":
        from controller.cli.up import up
        return up(args.data_dir, args.http, args.grpc, args.debug)
    if args.noun == "eol":
        doc, text = eol.run_cli(args, _client(args) if eol.needs_controller(args) else None)
        if args.json:
            print_json(doc)
        else:
            print(text)
        return 0
    c = _client(args)
    out: Any
    human: str
    if args.noun == "agents":
        if args.verb == "list":
            out = c.call("GET", "/agents")
            human = table(out, ["id", "hostname", "status", "last_seen", "version", "tags"])
        elif args.verb == "show":
            out = c.call("GET", f"/agents/{urllib.parse.quote(args.id)}")
            human = json.dumps(out, indent=2)
        else:
            out = c.call("POST", f"/agents/{urllib.parse.quote(args.id)}/revoke", {})
            human = f"revoked {out['id']} ({out['hostname']})"
    elif args.noun == "devices":
        if args.csv is not None:
            data = c.fetch("GET", "/devices?format=csv")
            if str(args.csv) == "-":
                sys.stdout.write(data.decode("utf-8"))
                return 0
            try:
                args.csv.write_bytes(data)
            except OSError as exc:
                raise UsageError(f"cannot write {args.csv}: {exc.strerror}") from None
            rows = max(data.decode("utf-8").count("\r\n") - 1, 0)
            print(f"wrote {rows} device(s) to {args.csv}")
            return 0
        out = c.call("GET", "/devices")
        human = table(out, ["name", "address", "platform", "version", "support", "last_collected", "reached",
                            "open_tickets", "purpose"])
    elif args.noun == "tickets":
        if args.verb == "list":
            q = {k: v for k, v in (("status", args.status), ("severity", args.severity), ("check", args.check)) if v}
            out = c.call("GET", "/tickets" + ("?" + urllib.parse.urlencode(q) if q else ""))
            human = table(out, ["id", "severity", "status", "check", "rule_id", "asset_name", "occurrences",
                                 "title"])
        elif args.verb == "show":
            out = c.call("GET", f"/tickets/{args.id}")
            human = json.dumps(out, indent=2)
        else:
            out, human = _ticket(c, args)
    elif args.noun == "exceptions":
        if args.verb == "list":
            out = c.call("GET", "/exceptions" + ("?" + urllib.parse.urlencode({"state": args.state})
                                                 if args.state else ""))
            human = table(out, ["id", "state", "rule_id", "assets", "subject", "owner", "expires_at", "reason"])
        elif args.verb == "create":
            out = c.call("POST", "/exceptions", {
                "rule_id": args.rule, "assets": [a.strip() for a in args.assets.split(",") if a.strip()],
                "subject": args.subject, "owner": args.owner, "reason": args.reason, "expires": args.expires})
            human = str(out["id"])
        else:
            out = c.call("POST", f"/exceptions/{urllib.parse.quote(args.id)}/revoke", {"reason": args.reason})
            human = f"exception {out['id']} revoked"
    elif args.noun == "findings":
        q = {k: v for k, v in (("status", args.status), ("check", args.check), ("asset", args.asset)) if v}
        out = c.call("GET", "/findings" + ("?" + urllib.parse.urlencode(q) if q else ""))
        human = table(out, ["id", "status", "severity", "check", "rule_id", "asset", "subject", "message"])
    elif args.noun == "baseline":
        if args.verb == "apply":
            data = read_baseline_file(args.file)
            name = _baseline_name(data.decode("utf-8")) or args.file.stem
            out = c.call("PUT", f"/baselines/{urllib.parse.quote(name)}", raw=data,
                         headers={"Content-Type": "application/yaml", "X-Vigil-Filename": args.file.name})
            human = f"applied baseline {out['name']} version {out['version']} ({len(out['rules'])} rules)"
        elif args.verb == "show":
            out = c.call("GET", f"/baselines/{urllib.parse.quote(args.name)}")
            human = out.get("source", "")
        else:
            out = c.call("GET", "/baselines")
            human = table(out, ["name", "version", "applied_at", "applied_by"])
    elif args.noun == "change":
        out, human = _change(c, args)
    elif args.noun == "notifications":
        out, human = _notifications(c, args)
    elif args.noun == "users":
        if args.verb == "list":
            out = c.call("GET", "/users")
            human = table(out, ["username", "role", "locked", "disabled", "last_login_at"])
        else:
            out = c.call("POST", f"/users/{urllib.parse.quote(args.username, safe='')}/{args.verb}", {})
            human = (f"{out['username']}: {'disabled' if out['disabled'] else 'enabled'}, "
                     f"{'locked' if out['locked'] else 'not locked'}")
    elif args.noun == "apikeys":
        if args.verb == "list":
            q = {"username": args.username} if args.username else {}
            out = c.call("GET", "/apikeys" + ("?" + urllib.parse.urlencode(q) if q else ""))
            human = table(out, ["id", "username", "created_at", "revoked_at"])
        else:
            out = c.call("POST", f"/apikeys/{urllib.parse.quote(args.key_id, safe='')}/revoke", {})
            human = f"revoked API key {out['id']} of {out['username']}"
    elif args.noun == "sweep":
        checks = [x for x in args.checks.split(",") if x]
        out = c.call("POST", "/sweeps", {"checks": checks})
        human = f"sweep {out['id']}: sent to {len(out['agents'])} connected agents"
    else:
        out = c.call("GET", "/audit/verify")
        human = (f"audit log verified: {out['entries']} entries" if out["ok"]
                 else f"audit log BROKEN at entry {out['first_bad_seq']}: {out['reason']}")
        if not out["ok"]:
            if args.json:
                print_json(out)
            else:
                sys.stderr.write(f"{PROG}: {human}\n")
            return 1
    if args.json:
        print_json(out)
    else:
        print(human)
    return 0


def _ticket(c: Client, args: argparse.Namespace) -> tuple[Any, str]:
    path = f"/tickets/{args.id}"
    if args.verb == "assign":
        out = c.call("POST", path + "/assign", {"assignee": args.assignee})
        return out, f"ticket {out['id']} assigned to {out['assignee'] or 'nobody'}"
    if args.verb == "comment":
        out = c.call("POST", path + "/comments", {"text": args.text})
        return out, f"comment added to ticket {args.id}"
    if args.verb == "report":
        out = c.call("POST", path + "/reports", {"stage": args.stage, "text": args.text})
        return out, f"{args.stage} report filed on ticket {args.id}"
    body: dict[str, Any] = {"to": args.to, "reason": args.reason}
    if args.exception_owner or args.exception_expires:
        if not (args.exception_owner and args.exception_expires):
            raise UsageError("--exception-owner and --exception-expires go together")
        body["exception"] = {"owner": args.exception_owner, "expires": args.exception_expires}
    out = c.call("POST", path + "/transition", body)
    human = f"ticket {out['id']} is now {out['status']}"
    if out.get("exception"):
        human += f"; exception {out['exception']['id']} until {out['exception']['expires_at']}"
    return out, human


def _notifications(c: Client, args: argparse.Namespace) -> tuple[Any, str]:
    if args.verb == "targets":
        out = c.call("GET", "/notifications/targets")
        rows = [{**t, "last_attempt": "" if not t["last_attempt"] else
                 f"{t['last_attempt']['at']} {'ok' if t['last_attempt']['ok'] else t['last_attempt']['detail'][:60]}"}
                for t in out]
        return out, table(rows, ["name", "type", "enabled", "pending", "stuck", "oldest_pending", "last_attempt"])
    if args.verb == "list":
        q = {k: v for k, v in (("status", args.status), ("target", args.target)) if v}
        if args.stuck:
            q["stuck"] = "true"
        out = c.call("GET", "/notifications/deliveries" + ("?" + urllib.parse.urlencode(q) if q else ""))
        return out, table(out, ["outbox_id", "target", "status", "attempts", "kind", "ticket_id", "created_at",
                                 "last_error"])
    out = c.call("POST", "/notifications/test", {"target": args.target})
    if not out["ok"]:
        raise VigilError(f"target {out['target']} ({out['type']}) failed: {out['detail']}")
    return out, f"target {out['target']} ({out['type']}) answers: {out['detail']}"


def _change(c: Client, args: argparse.Namespace) -> tuple[Any, str]:
    if args.verb == "create":
        out = c.call("POST", "/changes", {
            "assets": [a.strip() for a in args.assets.split(",") if a.strip()],
            "paths": [p.strip() for p in args.paths.split(",") if p.strip()],
            "start": args.start, "end": args.end, "reason": args.reason,
        })
        return out, str(out["id"])
    if args.verb == "list":
        out = c.call("GET", "/changes" + ("?" + urllib.parse.urlencode({"status": args.status}) if args.status else ""))
        return out, table(out, ["id", "status", "start", "end", "requested_by", "approved_by", "assets", "reason"])
    path = f"/changes/{urllib.parse.quote(args.id)}"
    if args.verb == "show":
        out = c.call("GET", path)
        return out, json.dumps(out, indent=2)
    if args.verb == "approve":
        out = c.call("POST", path + "/approve", {})
        window = out.get("effective") or {}
        return out, f"change {out['id']} approved by {out['approved_by']}: {window.get('start')} to {window.get('end')}"
    out = c.call("POST", f"{path}/{args.verb}", {"reason": args.reason})
    return out, f"change {out['id']} is now {out['status']}"


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, main_args, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
