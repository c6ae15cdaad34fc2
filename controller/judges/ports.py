"""The ``ports`` judge: every listening socket against the rule's allow list."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.baselines import AllowEntry, Rule, parse_allow_entry_cached
from controller.judges.base import InvalidFacts, Judge, Observation, TicketView, as_int, verdict

_PROTOS = {"tcp", "tcp6", "udp", "udp6"}


@dataclass(frozen=True)
class _Listener:
    proto: str
    address: str
    port: int
    pid: int
    process: str
    exe: str
    user: str
    owner_known: bool

    @classmethod
    def from_facts(cls, d: Mapping[str, Any]) -> _Listener:
        return cls(
            proto=str(d.get("proto", "")),
            address=str(d.get("address", "")),
            port=as_int(d.get("port", 0)),
            pid=as_int(d.get("pid", 0)),
            process=str(d.get("process", "")),
            exe=str(d.get("exe", "")),
            user=str(d.get("user", "")),
            owner_known=bool(d.get("owner_known", False)),
        )

    @property
    def subject(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.proto}/{address}:{self.port}"

    @property
    def owner(self) -> str:
        # Without owner_known the process name is not evidence, whatever the field holds.
        return self.process if self.owner_known else ""

    def describe(self) -> str:
        if not self.owner_known:
            return f"{self.subject} (owner unknown)"
        return f"{self.subject} ({self.process or '?'}, pid {self.pid})"

    def evidence(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "address": self.address,
            "port": self.port,
            "pid": self.pid,
            "process": self.process,
            "exe": self.exe,
            "user": self.user,
            "owner_known": self.owner_known,
        }


def _ports(rule: Rule, facts: Mapping[str, Any]) -> list[Observation]:
    entries = [parse_allow_entry_cached(str(e)) for e in rule.expect.get("listening", {}).get("allow", [])]
    # One socket shared by forked workers (nginx, gunicorn) is reported once per process, but it is
    # one subject: one finding and at most one ticket per (asset, rule, subject).
    by_subject: dict[str, list[_Listener]] = {}
    for raw in facts.get("listeners", []):
        listener = _Listener.from_facts(raw)
        by_subject.setdefault(listener.subject, []).append(listener)

    out: list[Observation] = []
    for subject in sorted(by_subject):
        listeners = by_subject[subject]
        verdicts = [(lst, _allowed_by(entries, lst)) for lst in listeners]
        refused = [(lst, entry) for lst, entry in verdicts if entry is None]
        lst, entry = refused[0] if refused else verdicts[0]
        evidence = lst.evidence()
        evidence["allowed_by"] = None if entry is None else str(entry)
        if len(listeners) > 1:
            evidence["owners"] = [
                {"pid": x.pid, "process": x.process, "user": x.user, "owner_known": x.owner_known} for x in listeners
            ]
        if entry is not None:
            message = f"{lst.describe()} is allowed by {str(entry)!r}"
        else:
            message = f"{lst.describe()} is not in the allow list of {rule.id}"
            if not lst.owner_known:
                would = next(
                    (e for e in entries if e.process and e.matches(lst.proto, lst.address, lst.port, e.process)), None
                )
                if would is not None:
                    message += (
                        f"; {str(would)!r} would allow it, but the agent could not see which process listens "
                        "(it needs the rights to inspect other users' processes)"
                    )
        out.append(Observation(subject, verdict(entry is not None), message, evidence))
    return out


def _allowed_by(entries: Iterable[AllowEntry], lst: _Listener) -> AllowEntry | None:
    return next((e for e in entries if e.matches(lst.proto, lst.address, lst.port, lst.owner)), None)


class Ports(Judge):
    id = "ports"
    default_interval_s = 300

    def validate(self, facts: dict[str, Any]) -> None:
        for i, lst in enumerate(facts.get("listeners", [])):
            if lst.get("proto") not in _PROTOS:
                raise InvalidFacts(f"listeners[{i}].proto {lst.get('proto')!r} is not one of {sorted(_PROTOS)}")
            port = int(lst.get("port", 0))
            if not 0 < port < 65536:
                raise InvalidFacts(f"listeners[{i}].port {port} is out of range")
            try:
                ipaddress.ip_address(str(lst.get("address", "")).split("%")[0])
            except ValueError as exc:
                raise InvalidFacts(f"listeners[{i}].address {lst.get('address')!r} is not an IP address") from exc

    def evaluate(self, rule: Rule, facts: Mapping[str, Any], changes: Mapping[str, str]) -> list[Observation]:
        return _ports(rule, facts)

    def hint(self, ticket: TicketView) -> str | None:
        ev = ticket.evidence
        proto, addr, port = ev.get("proto"), str(ev.get("address") or ""), ev.get("port")
        if not (proto and port):
            return None
        where = f"{addr}:{port}" if addr and addr not in ("0.0.0.0", "::") else str(port)
        if ":" in addr and addr != "::":
            where = f"[{addr}]:{port}"
        proc = str(ev.get("process") or "") if ev.get("owner_known") else ""
        entry = f"{proto}/{where}" + (f" {proc}" if proc else "")
        return f'rule {ticket.rule_id} in baseline {ticket.baseline}: add "{entry}" to expect.listening.allow'


JUDGE = Ports()
