"""What a network device (or an agentless Linux host) reports, as typed, plain data.

Every parser returns :class:`Facts`; each fills only what its command prints and leaves the rest
None (or empty): a field the output does not carry is *unknown*, never guessed. Facts of several
commands of one device combine with :meth:`Facts.merge`.

Example, ``show version`` of a Catalyst 2960-X::

    Facts(platform="cisco_ios", command="show version", vendor="Cisco", os_name="IOS",
          version="15.2(4)E10", hostname="SW1", model="WS-C2960X-48FPD-L", serial="FOC1234X5YZ",
          uptime="1 year, 12 weeks, 3 days, 4 hours, 21 minutes", uptime_seconds=39_068_460, ...)

NTP state is shaped like the ``ntp`` check's result (``synchronized``, ``offset_ms`` with NTP's sign
— reference minus local —, ``stratum``, ``reference``, ``sources``) so that the same judge can take it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class InventoryItem:
    """One line pair of ``show inventory`` or one row of ``show chassis hardware``."""

    name: str
    description: str = ""
    pid: str | None = None
    serial: str | None = None


@dataclass(frozen=True)
class NtpPeer:
    """One time source as the device sees it; the fields and states of :class:`checks.ntp.parse.NtpSource`.

    ``None`` where the device's output does not print the value (NX-OS prints no offset per peer).
    """

    address: str
    stratum: int | None = None
    offset_ms: float | None = None
    delay_ms: float | None = None
    selected: bool = False
    state: str = ""


@dataclass(frozen=True)
class NtpState:
    """The device's clock synchronisation, as its own NTP status command prints it.

    ``stratum`` is the device's own stratum (its reference's plus one where only the reference's is
    printed); ``offset_ms`` is reference minus local, None where not printed or not synchronised.
    """

    synchronized: bool
    offset_ms: float | None = None
    stratum: int | None = None
    reference: str | None = None
    sources: tuple[NtpPeer, ...] = ()

    def ntp_result_fields(self) -> dict[str, Any]:
        """Keyword arguments of :class:`checks.ntp.parse.NtpResult` for this state, so that the ``ntp``
        judge takes a device's clock as it takes a host's (unknown numbers become the result's 0)."""
        offset = self.offset_ms if self.synchronized else None
        return {
            "daemon": "device",
            "daemon_running": True,
            "synchronized": self.synchronized,
            "offset_ms": offset or 0.0,
            "offset_source": "daemon" if offset is not None else "",
            "daemon_offset_ms": offset or 0.0,
            "stratum": self.stratum or 0,
            "reference": self.reference or "",
            "sources": [
                {"address": p.address, "stratum": p.stratum or 0, "offset_ms": p.offset_ms or 0.0,
                 "delay_ms": p.delay_ms or 0.0, "selected": p.selected, "state": p.state}
                for p in self.sources
            ],
        }


@dataclass(frozen=True)
class SignatureDb:
    """An AV/IPS/application signature database as the device prints it.

    ``released`` is the text the device prints; ``released_at`` the same instant in UTC, None when the
    device prints no date or a time zone this parser cannot place. ``zone_assumed`` is True where the
    device prints no zone at all and the date was read as UTC (FortiOS).
    """

    name: str
    version: str
    released: str | None = None
    released_at: datetime | None = None
    zone_assumed: bool = False


@dataclass(frozen=True)
class ConfigFacts:
    """A running configuration after redaction and normalisation (see :mod:`checks.device.config`)."""

    digest: str
    text: str
    lines: int
    redacted: int
    ignored: int


@dataclass(frozen=True)
class Facts:
    """What one command's output says about a device; see the module docstring for an example."""

    platform: str
    command: str
    vendor: str | None = None
    os_name: str | None = None
    # Exactly as the vendor prints it: "15.2(4)E10", "7.0(3)I4(3)", "19.4R3-S1.3", "7.0.13", "10.1.6-h6".
    version: str | None = None
    build: str | None = None
    hostname: str | None = None
    model: str | None = None
    serial: str | None = None
    uptime: str | None = None
    uptime_seconds: int | None = None
    image: str | None = None
    kernel: str | None = None
    # Stack members, line cards, power supplies: what the inventory lists, chassis first.
    inventory: tuple[InventoryItem, ...] = ()
    ntp: NtpState | None = None
    signatures: tuple[SignatureDb, ...] = ()
    config: ConfigFacts | None = None

    def merge(self, other: Facts) -> Facts:
        """These facts completed by ``other``'s: a value ``other`` knows replaces one this does not."""
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("platform", "command"):
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if theirs not in (None, ()) and mine in (None, ()):
                changes[f.name] = theirs
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: datetimes in RFC 3339 UTC, tuples as lists, the normalised config text left out."""
        doc = _plain(dataclasses.asdict(self))
        assert isinstance(doc, dict)
        if doc.get("config"):
            doc["config"].pop("text", None)
        return doc


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value

