"""The ``ssh_device`` judge: each network device a sensor collected from, judged as an asset of its own.

A result names one device; its findings and tickets are filed under the asset ``dev:<name>`` (see
:meth:`SshDevice.asset_of`), never under the sensor. The run's own last report names no device and
judges nothing: it stands for the run (its status is the sensor's check-status finding).

Subjects of a device, each only when the rule's ``expect`` asks for it:

- ``reachable``: the sensor reached and logged in to the device (an unknown or changed host key, a
  refused login, a timeout fail it, with the reason). When it was not reached, every other subject the
  rule asks for is ``unknown`` ("cannot judge: not reached"), never passing.
- ``eol``: the device's OS version against the controller's EOL dataset (``supported: true``);
  a version the dataset cannot place is unknown.
- ``ntp``: ``synchronized`` and ``max_offset_ms``, from the device's own NTP status.
- ``config``: an **event**: a running-configuration change seen by the sensor, with the redacted diff as
  evidence; ``config_changes: 0`` fails every change. A later unchanged run does not resolve it.
- ``signatures:<name>``: each AV/IPS database the device prints, ``max_signature_age_hours``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from controller import eoldata
from controller.baselines import Rule, StrictModel, WholeNumber, fail
from controller.judges.base import Context, InvalidFacts, Judge, Observation, as_number, cannot_judge, verdict

ASSET_PREFIX = "dev:"
# Asset ids are at most 64 characters (tickets.asset): the prefix and a name of at most 60.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,59}")
Platform = Literal["arista_eos", "cisco_asa", "cisco_ios", "cisco_nxos", "cisco_xe", "fortinet", "juniper_junos",
                   "linux", "paloalto_panos"]
EVENT_PREFIXES = ("config",)
# The path a device's running configuration has in approved changes (``--paths /running-config``).
CONFIG_PATH = "/running-config"


def valid_name(v: str) -> str:
    if not _NAME.fullmatch(v):
        raise fail(f"device name {v!r}: 1-60 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return v


def valid_network(v: str) -> str:
    try:
        ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise fail(f"range {v!r} is not an address or network (10.20.0.0/24, 2001:db8::/64)") from None
    return v


def valid_address(v: str) -> str:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise fail(f"address {v!r} is not an IP address") from None
    return v


class DeviceParams(StrictModel):
    name: Annotated[str, AfterValidator(valid_name)]
    address: Annotated[str, AfterValidator(valid_address)]
    platform: Platform
    credential: str = Field(min_length=1, max_length=128)
    port: WholeNumber = Field(default=22, ge=1, le=65535)
    purpose: str = Field(default="", max_length=200)


class SshDeviceParams(StrictModel):
    """``ranges`` the sensor may reach (every device must be inside them), the ``devices``, and limits."""

    ranges: list[Annotated[str, AfterValidator(valid_network)]] = Field(min_length=1)
    devices: list[DeviceParams] = Field(min_length=1)
    command_timeout_s: float = Field(default=60.0, ge=1, le=600)
    workers: WholeNumber = Field(default=8, ge=1, le=64)

    @model_validator(mode="after")
    def _inside_and_unique(self) -> SshDeviceParams:
        inside_and_unique(self.ranges, [(d.name, d.address) for d in self.devices], "device")
        return self


def inside_and_unique(ranges: list[str], named: list[tuple[str, str]], kind: str) -> None:
    """Refuse a (name, address) outside ``ranges`` (the sensor would refuse it) or a name given twice."""
    nets = [ipaddress.ip_network(r, strict=False) for r in ranges]
    for name, address in named:
        if not any(ipaddress.ip_address(address) in n for n in nets):
            raise fail(f"{kind} {name} ({address}) is outside the ranges {', '.join(ranges)}: the sensor would "
                       "refuse it")
    names = [n for n, _ in named]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise fail(f"{kind} names must be unique: {', '.join(twice)} more than once")


class SshDeviceExpect(StrictModel):
    reachable: bool = True
    supported: bool | None = None
    synchronized: bool | None = None
    max_offset_ms: float | None = Field(default=None, ge=0)
    config_changes: WholeNumber | None = Field(default=None, ge=0, le=0)
    max_signature_age_hours: float | None = Field(default=None, ge=0)


def same_address(a: Any, b: Any) -> bool:
    """Whether two written addresses are one ("2001:DB8::3" is "2001:db8::3")."""
    try:
        return ipaddress.ip_address(str(a)) == ipaddress.ip_address(str(b))
    except ValueError:
        return False


class SshDevice(Judge):
    id = "ssh_device"
    default_interval_s = 3600
    params_model = SshDeviceParams
    expect_model = SshDeviceExpect
    records_changes = True  # a change inside an approved window is kept as a change record
    inventory_subjects = {"seen": "reachable", "support": "eol"}

    def validate(self, facts: dict[str, Any]) -> None:
        device = str(facts.get("device", ""))
        if device and not _NAME.fullmatch(device):
            raise InvalidFacts(f"ssh_device device name {device[:70]!r} is not a valid device name")
        if len(str(facts.get("config", {}).get("diff", ""))) > 64 * 1024 + 100:
            raise InvalidFacts("ssh_device config diff is larger than 64 KiB")

    def asset_of(self, facts: Mapping[str, Any]) -> str | None:
        device = str(facts.get("device", "")) if facts else ""
        return ASSET_PREFIX + device if device else None

    def declared_assets(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        out = []
        for d in params.get("devices", []) or []:
            if not isinstance(d, Mapping) or not d.get("name"):
                continue
            port = int(d.get("port", 22) or 22)
            out.append({"asset": ASSET_PREFIX + str(d["name"]), "name": str(d["name"]),
                        "address": str(d.get("address", "")), "port": port, "platform": str(d.get("platform", "")),
                        "credential": str(d.get("credential", "")), "purpose": str(d.get("purpose", "") or ""),
                        "connection": f"ssh:{port}", "ports_used": [f"tcp/{port}"]})
        return out

    def names_asset(self, rule: Rule, facts: Mapping[str, Any]) -> bool:
        return any(d.get("name") == facts.get("device") and same_address(d.get("address"), facts.get("address"))
                   for d in rule.params.get("devices", []) or [] if isinstance(d, Mapping))

    def event_subject(self, subject: str) -> bool:
        return subject.startswith(EVENT_PREFIXES)

    def prepare(self, facts: dict[str, Any], ctx: Context) -> tuple[dict[str, Any], dict[str, str]]:
        if not facts.get("device") or not facts.get("reached"):
            return facts, {}
        used: dict[str, str] = {}
        config = facts.get("config") or {}
        if config.get("changed"):
            # The change as an event on the device's configuration path, so that an approved change
            # naming the device (dev:<name>) and /running-config covers it as it covers a file.
            facts = {**facts, "events": [{"path": CONFIG_PATH, "kind": "MODIFIED", "detected_by": "REALTIME",
                                          "detected_at": config.get("detected_at") or ""}]}
            used = dict(ctx.approved_changes_of(ASSET_PREFIX + str(facts["device"]), facts))
        if not isinstance(ctx.eol_dataset, eoldata.Dataset):
            return facts, used
        # The device's lifecycle, from the controller's own dataset (as the eol judge does for hosts).
        if facts.get("os"):
            # A Linux target: its OS item, judged exactly as an agent's host's (os-release, ID_LIKE).
            (item,) = eoldata.enrich({"items": [facts["os"]]}, ctx.eol_dataset, ctx.today)["items"]
            info: dict[str, Any] = {"known": bool(item.get("known")), "reason": item.get("lifecycle_reason", ""),
                                    "dataset": ctx.eol_dataset.label, "product": item.get("product", ""),
                                    "cycle": item.get("cycle", ""), "eol": not item.get("supported", False),
                                    "eol_date": item.get("eol_date") or None}
            return {**facts, "eol": info}, used
        match = eoldata.device_match(ctx.eol_dataset, str(facts.get("platform", "")), str(facts.get("version", "")),
                                     ctx.today)
        info = {"known": match.cycle is not None, "reason": match.reason, "dataset": ctx.eol_dataset.label}
        if match.cycle is not None:
            info.update({"product": match.cycle.product, "cycle": match.cycle.cycle,
                         "eol": match.cycle.ended(ctx.today),
                         "eol_date": match.cycle.eol.isoformat() if isinstance(match.cycle.eol, dt.date) else None})
        return {**facts, "eol": info}, used

    def evaluate(self, rule: Rule, facts: Mapping[str, Any], changes: Mapping[str, str]) -> list[Observation]:
        device = str(facts.get("device", ""))
        if not device:
            return []  # the run's own report: nothing about any device
        want = rule.expect
        asked = [s for s in ("eol", "ntp", "config") if _asks(want, s)]
        if not facts.get("reached"):
            why = f"{device} not reached: {facts.get('error') or facts.get('error_kind') or 'unknown reason'}"
            out = [Observation("reachable", verdict(not want.get("reachable", True)), why,
                               {"error_kind": facts.get("error_kind", ""), "error": facts.get("error", ""),
                                "address": facts.get("address", "")})]
            return out + [cannot_judge(s, f"{device} was not reached") for s in asked]
        out = [Observation("reachable", "pass", f"{device} reached", {"address": facts.get("address", "")})]
        if "eol" in asked:
            out.append(_eol(device, facts))
        if "ntp" in asked:
            out.append(_ntp(device, facts, want))
        if "config" in asked and facts.get("config", {}).get("changed"):
            out.append(_config(device, facts, changes))
        limit = want.get("max_signature_age_hours")
        if limit is not None:
            out += [_signature(device, sig, float(limit)) for sig in facts.get("signatures", [])]
        return out


def _config(device: str, facts: Mapping[str, Any], changes: Mapping[str, str]) -> Observation:
    c = facts["config"]
    shown = f"({c.get('previous_digest', '')[:12]} -> {c.get('digest', '')[:12]})"
    evidence = {"diff": c.get("diff", ""), "digest": c.get("digest", ""),
                "previous_digest": c.get("previous_digest", ""), "detected_at": c.get("detected_at", "")}
    events = facts.get("events") or [{}]
    change_id = str(events[0].get("expected_change_id", "") or "")
    if change_id:
        reason = changes.get(change_id, "")
        return Observation("config", "pass", f"{device}: running configuration changed {shown} inside approved "
                           f"change {change_id}" + (f" ({reason})" if reason else ""),
                           {**evidence, "change_id": change_id})
    return Observation("config", "fail", f"{device}: running configuration changed {shown}", evidence)


def _asks(want: Mapping[str, Any], subject: str) -> bool:
    keys = {"eol": ("supported",), "ntp": ("synchronized", "max_offset_ms"), "config": ("config_changes",)}[subject]
    return any(want.get(k) is not None for k in keys)


def _eol(device: str, facts: Mapping[str, Any]) -> Observation:
    info = facts.get("eol") or {}
    version = facts.get("version") or "(no version)"
    evidence = {"platform": facts.get("platform"), "version": version, **info}
    if not info.get("known"):
        return cannot_judge("eol", f"{device} runs {version}: {info.get('reason') or 'no EOL dataset'}", evidence)
    label = f"{info.get('product')} {info.get('cycle')}"
    if info.get("eol"):
        since = f" since {info['eol_date']}" if info.get("eol_date") else ""
        return Observation("eol", "fail", f"{device} runs {version} ({label}): end of life{since}", evidence)
    return Observation("eol", "pass", f"{device} runs {version} ({label}): supported", evidence)


def _ntp(device: str, facts: Mapping[str, Any], want: Mapping[str, Any]) -> Observation:
    ntp = facts.get("ntp")
    if not ntp:
        return cannot_judge("ntp", f"{device} printed no NTP status")
    evidence = dict(ntp)
    if want.get("synchronized") is not None and bool(ntp.get("synchronized")) != bool(want["synchronized"]):
        have, expected = str(bool(ntp.get("synchronized"))).lower(), str(bool(want["synchronized"])).lower()
        return Observation("ntp", "fail", f"{device}: clock synchronized is {have}, expected {expected}", evidence)
    limit = want.get("max_offset_ms")
    if limit is not None:
        offset = as_number(ntp.get("offset_ms"))
        if offset is None:
            return cannot_judge("ntp", f"{device} printed no clock offset", evidence)
        if abs(offset) > float(limit):
            return Observation("ntp", "fail", f"{device}: clock offset {offset:g} ms, more than {limit:g} ms",
                               evidence)
    return Observation("ntp", "pass", f"{device}: clock synchronized", evidence)


def _signature(device: str, sig: Mapping[str, Any], limit: float) -> Observation:
    """The signature database's age as the sensor measured it at collection, like a host's av age."""
    subject = f"signatures:{str(sig.get('name', ''))[:200]}"
    age = as_number(sig.get("age_hours"))
    if not sig.get("released_at") or age is None:
        return cannot_judge(subject, f"{device} prints no usable date for {sig.get('name')} "
                                     f"({sig.get('released') or 'none'})", dict(sig))
    ok = age <= limit
    return Observation(subject, verdict(ok), f"{device}: {sig.get('name')} {sig.get('version')} is {age:.0f} h old"
                       + ("" if ok else f", more than {limit:g} h"), dict(sig))


JUDGE = SshDevice()
