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

from controller.baselines import Rule, StrictModel, fail
from controller.judges.base import InvalidFacts, Judge, Observation, cannot_judge
from controller.judges.ssh_device import ASSET_PREFIX, valid_address, valid_name, valid_network

_PORT_ITEM = re.compile(r"\s*\d{1,5}(\s*-\s*\d{1,5})?\s*")
_ALLOWED = re.compile(r"tcp/(\d{1,5})")


def _ports(v: str) -> str:
    parts = [p for p in v.split(",") if p.strip()]
    if not parts or not all(_PORT_ITEM.fullmatch(p) for p in parts):
        raise fail(f"ports {v!r}: write ports and ranges such as \"22,80,8000-8010\"")
    for p in parts:
        lo, _, hi = p.partition("-")
        a, b = int(lo), int(hi or lo)
        if not 1 <= a <= b <= 65535:
            raise fail(f"ports {v!r}: {p.strip()!r} is outside 1-65535 or reversed")
    return v


class TargetParams(StrictModel):
    name: Annotated[str, AfterValidator(valid_name)]
    address: Annotated[str, AfterValidator(valid_address)]


class NetscanParams(StrictModel):
    """``ranges`` the sensor may reach, the ``targets`` (inside them), the ``ports`` and how to scan."""

    ranges: list[Annotated[str, AfterValidator(valid_network)]] = Field(min_length=1)
    targets: list[TargetParams] = Field(min_length=1)
    ports: Annotated[str, AfterValidator(_ports)] = "1-1024"
    method: Literal["auto", "connect", "syn"] = "auto"
    timeout_s: float = Field(default=1.0, ge=0.05, le=30)

    @model_validator(mode="after")
    def _inside_and_unique(self) -> NetscanParams:
        nets = [ipaddress.ip_network(r, strict=False) for r in self.ranges]
        for t in self.targets:
            if not any(ipaddress.ip_address(t.address) in n for n in nets):
                raise fail(f"target {t.name} ({t.address}) is outside the ranges {', '.join(self.ranges)}: "
                           "the sensor would refuse it")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise fail("target names must be unique")
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
        return ASSET_PREFIX + target if target else None

    def evaluate(self, rule: Rule, facts: Mapping[str, Any], changes: Mapping[str, str]) -> list[Observation]:
        target = str(facts.get("target", ""))
        if not target:
            return []  # the run's own report
        if facts.get("error"):
            return [cannot_judge("scanned", f"{target} could not be scanned: {facts['error']}")]
        allowed = {int(a.split("/")[1]) for a in rule.expect.get("allowed", [])}
        out = []
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
        return out


JUDGE = Netscan()
