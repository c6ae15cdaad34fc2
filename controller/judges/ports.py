"""The ``ports`` judge: every listening socket against the rule's allow list."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AfterValidator

from controller.baselines import Rule, StrictModel, fail
from controller.judges.base import InvalidFacts, Judge, Observation, TicketView, as_int, verdict

__all__ = ["JUDGE", "AllowEntry", "PortsExpect", "PortsParams", "parse_allow_entry", "parse_allow_entry_cached"]

# -- allow entries ------------------------------------------------------------------------------------

_ALLOW_RE = re.compile(
    r"^(?P<proto>[^/\s]+)/(?:(?P<address>\[[^\]]*\]|[^\s\[\]]*?):)?(?P<port>[^\s:\[\]]+)(?:\s+(?P<process>\S.*))?$"
)


@dataclass(frozen=True)
class AllowEntry:
    """One ``allow`` entry of a ports rule: ``tcp/22 sshd``, ``tcp/127.0.0.1:8080``, ``udp/[::1]:53``."""

    proto: str
    address: str | None
    port: int
    process: str | None

    def matches(self, proto: str, address: str, port: int, process: str) -> bool:
        """Whether a listener is allowed by this entry.

        ``tcp`` covers ``tcp6`` because one service commonly binds both families. An address in the
        entry means exactly that bind: ``0.0.0.0`` allows only the wildcard bind, not every address.
        ``process`` is ``""`` when the agent could not see the owner, and then it matches no entry that
        names a process: an unverified owner proves nothing to an auditor.
        """
        if proto not in (self.proto, self.proto + "6") or port != self.port:
            return False
        if self.address is not None and self.address != "*" and not _same_address(self.address, address):
            return False
        return self.process is None or self.process == process

    def __str__(self) -> str:
        where = ""
        if self.address is not None:
            where = f"[{self.address}]:" if ":" in self.address else f"{self.address}:"
        text = f"{self.proto}/{where}{self.port}"
        return f"{text} {self.process}" if self.process else text


def _same_address(a: str, b: str) -> bool:
    """Equal addresses, counting an IPv4-mapped IPv6 bind (``::ffff:127.0.0.1``) as its IPv4 address."""
    try:
        return _unmapped(ipaddress.ip_address(a)) == _unmapped(ipaddress.ip_address(b))
    except ValueError:
        return a == b


def _unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_allow_entry(text: str) -> AllowEntry:
    """Parse ``PROTO/PORT`` or ``PROTO/ADDRESS:PORT``, optionally followed by a space and a process name.

    Raises ValueError with the reason (for the baseline error message) when ``text`` is malformed.
    """
    m = _ALLOW_RE.match(text.strip())
    if not m:
        raise ValueError("write PROTO/PORT or PROTO/ADDRESS:PORT, then optionally a process name (tcp/22 sshd)")
    proto, address, port_text, process = m.group("proto", "address", "port", "process")
    if proto not in ("tcp", "udp"):
        raise ValueError(f"protocol must be tcp or udp, not {proto!r} (tcp also covers tcp6)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535, not {port_text!r}")
    if address is not None:
        if address.startswith("["):
            address = address[1:-1]
            if not _is_ip(address, version=6):
                raise ValueError(f"{address!r} in brackets must be an IPv6 address")
        elif address != "*" and not _is_ip(address, version=4):
            if ":" in address:
                raise ValueError("put an IPv6 address in brackets: tcp/[::1]:5432")
            raise ValueError(f"address must be an IP address or *, not {address!r}")
    return AllowEntry(proto, address, int(port_text), process.strip() if process else None)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


# Evaluation parses the same few entries for every ports report; they are immutable, so share them.
parse_allow_entry_cached = lru_cache(maxsize=4096)(parse_allow_entry)


def _check_allow(v: str) -> str:
    try:
        parse_allow_entry(v)
    except ValueError as exc:
        raise fail(f"{v!r} is not a valid allow entry: {exc}") from None
    return v


class _Listening(StrictModel):
    allow: list[Annotated[str, AfterValidator(_check_allow)]]


class PortsExpect(StrictModel):
    listening: _Listening


class PortsParams(StrictModel):
    """The agent's ports check takes no parameters."""


# -- judging --------------------------------------------------------------------------------------------

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
    provides = frozenset({"listeners"})
    params_model = PortsParams
    expect_model = PortsExpect

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
