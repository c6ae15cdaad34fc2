"""The typed result of the ``ssh_device`` check, one per device, and its ``vigil.v1.SshDeviceResult``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from checks.base import Result
from checks.eol.model import EolItem
from proto.vigil.v1 import ssh_device_pb2


@dataclass(frozen=True)
class DeviceNtp:
    synchronized: bool
    offset_ms: float | None = None
    stratum: int = 0
    reference: str = ""


@dataclass(frozen=True)
class DeviceConfig:
    digest: str
    lines: int
    redacted: int
    ignored: int
    first: bool = False
    changed: bool = False
    previous_digest: str = ""
    diff: str = ""
    detected_at: dt.datetime | None = None


@dataclass(frozen=True)
class DeviceSignature:
    name: str
    version: str
    released: str = ""
    released_at: dt.datetime | None = None
    zone_assumed: bool = False
    age_hours: float = 0.0


@dataclass(frozen=True)
class SshDeviceResult(Result):
    """One device as the sensor saw it.  Example: SshDeviceResult(device="core-sw-01", address="10.20.0.2",
    platform="cisco_ios", reached=True, version="15.2(4)E10", model="WS-C2960X-48FPD-L",
    ntp=DeviceNtp(synchronized=False), config=DeviceConfig(digest="9f...", changed=True, diff="..."))"""

    device: str
    address: str
    port: int
    platform: str
    purpose: str = ""
    reached: bool = False
    error_kind: str = ""
    error: str = ""
    vendor: str = ""
    os_name: str = ""
    version: str = ""
    model: str = ""
    serial: str = ""
    hostname: str = ""
    ntp: DeviceNtp | None = None
    config: DeviceConfig | None = None
    signatures: tuple[DeviceSignature, ...] = ()
    problems: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    os: EolItem | None = None

    def to_proto(self) -> ssh_device_pb2.SshDeviceResult:
        msg = ssh_device_pb2.SshDeviceResult(
            device=self.device, address=self.address, port=self.port, platform=self.platform, purpose=self.purpose,
            reached=self.reached, error_kind=self.error_kind, error=self.error[:2000], vendor=self.vendor,
            os_name=self.os_name, version=self.version, model=self.model, serial=self.serial,
            hostname=self.hostname, problems={k: v[:500] for k, v in self.problems.items()},
            elapsed_s=round(self.elapsed_s, 3))
        if self.ntp is not None:
            msg.ntp.synchronized = self.ntp.synchronized
            msg.ntp.stratum = self.ntp.stratum
            msg.ntp.reference = self.ntp.reference
            if self.ntp.offset_ms is not None:
                msg.ntp.offset_ms = self.ntp.offset_ms
        if self.config is not None:
            c = self.config
            msg.config.CopyFrom(ssh_device_pb2.DeviceConfig(
                digest=c.digest, lines=c.lines, redacted=c.redacted, ignored=c.ignored, first=c.first,
                changed=c.changed, previous_digest=c.previous_digest, diff=c.diff))
            if c.detected_at is not None:
                msg.config.detected_at.FromDatetime(c.detected_at.astimezone(dt.UTC))
        if self.os is not None:
            msg.os.CopyFrom(self.os.to_proto())
        for s in self.signatures:
            sig = msg.signatures.add(name=s.name, version=s.version, released=s.released, zone_assumed=s.zone_assumed,
                                     age_hours=s.age_hours)
            if s.released_at is not None:
                sig.released_at.FromDatetime(s.released_at.astimezone(dt.UTC))
        return msg
