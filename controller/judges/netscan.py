"""The ``netscan`` judge: the TCP ports a sensor reached on each target, against the rule's allow-list.

Each target is filed under ``dev:<name>``, the asset its ``ssh_device`` results use, so a device's
reachable ports sit with its version, clock and configuration. Subjects: ``tcp/<port>`` for every open
port (``allowed`` says which may be open: any other fails, with its banner as evidence), and
``scanned`` when the target could not be scanned at all (unknown, never passed). A port that closes
later resolves its ticket.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from common.portlist import PortListError, parse_ports
from controller.baselines import Rule, StrictModel, fail
from controller.judges.base import Context, InvalidFacts, Judge, Observation, cannot_judge
from controller.judges.ssh_device import (
    ASSET_PREFIX,
    inside_and_unique,
    same_address,
    valid_address,
    valid_name,
    valid_network,
)

_ALLOWED = re.compile(r"tcp/(\d{1,5})")


def _ports(v: str) -> str:
    try:
        parse_ports(v)
    except PortListError as exc:
        raise fail(f"{exc}; write ports and ranges such as \"22,80,8000-8010\"") from None
    return v


class TargetParams(StrictModel):
    name: Annotated[str, AfterValidator(valid_name)]
    address: Annotated[str, AfterValidator(valid_address)]
    # The agent running on the target (id or hostname): its findings go to that agent's asset, and a
    # reachable port its agent does not report listening (or only on loopback) is a finding of its own.
    agent: str | None = Field(default=None, min_length=1, max_length=255)


class NetscanParams(StrictModel):
    """``ranges`` the sensor may reach, the ``targets`` (inside them), the ``ports`` and how to scan."""

    ranges: list[Annotated[str, AfterValidator(valid_network)]] = Field(min_length=1)
    targets: list[TargetParams] = Field(min_length=1)
    ports: Annotated[str, AfterValidator(_ports)] = "1-1024"
    method: Literal["auto", "connect", "syn"] = "auto"
    timeout_s: float = Field(default=1.0, ge=0.05, le=30)

    @model_validator(mode="after")
    def _inside_and_unique(self) -> NetscanParams:
        inside_and_unique(self.ranges, [(t.name, t.address) for t in self.targets], "target")
        return self


def _allowed(v: list[str]) -> list[str]:
    for item in v:
        m = _ALLOWED.fullmatch(item)
        if not m or not 1 <= int(m.group(1)) <= 65535:
            raise fail(f"allowed entry {item!r}: write tcp/PORT, e.g. tcp/443")
    return v


class NetscanExpect(StrictModel):
    allowed: Annotated[list[str], AfterValidator(_allowed)] = Field(default_factory=list)


class Netscan(Judge):
    id = "netscan"
    default_interval_s = 3600
    params_model = NetscanParams
    expect_model = NetscanExpect
    provides = frozenset({"reachable_ports"})  # the inventory lists what a target exposes

    def validate(self, facts: dict[str, Any]) -> None:
        target = str(facts.get("target", ""))
        if len(target) > 60:
            raise InvalidFacts(f"netscan target name {target[:40]!r}… is longer than 60 characters")
        for p in facts.get("open", []):
            port = p.get("port", 0)
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise InvalidFacts(f"netscan open port {port!r} is not a TCP port")

    def asset_of(self, facts: Mapping[str, Any]) -> str | None:
        target = str(facts.get("target", "")) if facts else ""
        if not target:
            return None
        return str(facts.get("agent_id") or "") or ASSET_PREFIX + target

    def declared_assets(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        # Targets without an agent of their own are devices (an IoT camera, a printer) for the inventory;
        # a target that runs an agent is that agent's host, listed among the agents.
        return [{"asset": ASSET_PREFIX + str(t["name"]), "name": str(t["name"]), "address": str(t.get("address", "")),
                 "port": 0, "platform": "", "credential": "", "purpose": "", "connection": "scanned only",
                 "ports_used": []}
                for t in params.get("targets", []) or [] if isinstance(t, Mapping) and t.get("name")
                and not t.get("agent")]

    def names_asset(self, rule: Rule, facts: Mapping[str, Any]) -> bool:
        return any(t.get("name") == facts.get("target") and same_address(t.get("address"), facts.get("address"))
                   and (t.get("agent") or "") == (facts.get("agent") or "")
                   for t in rule.params.get("targets", []) or [] if isinstance(t, Mapping))

    def prepare(self, facts: dict[str, Any], ctx: Context) -> tuple[dict[str, Any], dict[str, str]]:
        # What the target's own agent reports listening, for the comparison only the sensor can make.
        ref = str(facts.get("agent", "") or "")
        if not ref or facts.get("error"):
            return facts, {}
        found = ctx.listeners_of(ref)
        if found is None:
            return {**facts, "agent_missing": True}, {}
        agent_id, listeners = found
        return {**facts, "agent_id": agent_id, "agent_listeners": listeners}, {}

    def evaluate(self, rule: Rule, facts: Mapping[str, Any], changes: Mapping[str, str]) -> list[Observation]:
        target = str(facts.get("target", ""))
        if not target:
            return []  # the run's own report
        if facts.get("error"):
            return [cannot_judge("scanned", f"{target} could not be scanned: {facts['error']}")]
        allowed = {int(a.split("/")[1]) for a in rule.expect.get("allowed", [])}
        out = []
        if facts.get("agent_missing"):
            out.append(cannot_judge("agent", f"{target}: no enrolled agent {facts.get('agent')!r} to compare "
                                              "the reachable ports with"))
        for p in facts.get("open", []):
            port = int(p.get("port", 0))
            banner = str(p.get("banner", ""))
            evidence = {"address": facts.get("address", ""), "method": facts.get("method", ""), "banner": banner}
            said = f" ({banner[:80]})" if banner else ""
            if port in allowed:
                out.append(Observation(f"tcp/{port}", "pass", f"{target}: tcp/{port} reachable, allowed{said}",
                                       evidence))
            else:
                out.append(Observation(f"tcp/{port}", "fail", f"{target}: tcp/{port} is reachable from the network "
                                       f"and not allowed{said}", evidence))
            if "agent_listeners" in facts:
                out.append(_exposure(target, port, str(facts.get("address", "")), facts.get("agent_listeners")))
        return out


_WILDCARDS = ("0.0.0.0", "::", "*", "")


def _exposure(target: str, port: int, address: str, listeners: Any) -> Observation:
    """A reachable port against what the target's own agent reports listening on it."""
    subject = f"exposure/tcp/{port}"
    if listeners is None:
        return cannot_judge(subject, f"{target}: its agent has reported no listening sockets yet")
    on_port = [lst for lst in listeners if str(lst.get("proto", "")).startswith("tcp") and
               int(lst.get("port", 0) or 0) == port]
    binds = sorted({str(lst.get("address", "")) for lst in on_port})
    evidence = {"address": address, "agent_listeners": on_port[:20]}
    if any(b in _WILDCARDS or b == address for b in binds):
        return Observation(subject, "pass", f"{target}: tcp/{port} is reachable and its agent reports it listening",
                           evidence)
    if binds and all(_loopback(b) for b in binds):
        return Observation(subject, "fail", f"{target}: tcp/{port} is reachable from the network although its agent "
                           f"reports it listening on loopback only ({', '.join(binds)})", evidence)
    if binds:
        return Observation(subject, "fail", f"{target}: tcp/{port} is reachable on {address}, which its agent does not "
                           f"report listening on ({', '.join(binds)})", evidence)
    return Observation(subject, "fail", f"{target}: tcp/{port} is reachable from the network but its agent reports "
                       "no listener on it (a forwarded port, another host answering, or a hidden service)", evidence)


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


JUDGE = Netscan()
