"""Typed results of the ``av`` check and their conversion to and from ``vigil.v1.Av*`` messages."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2

from checks.base import Result
from proto.vigil.v1 import av_pb2

# Signature age reported when a product has no signatures at all (ClamAV installed but its database
# directory empty, as Debian ships it; Defender reporting "never updated"). A real number rather than
# 0 or -1 so that a baseline's ``signature_age_hours <= N`` rule fails without a special case.
NEVER_UPDATED_HOURS = 1e6


def age_hours(built_at: dt.datetime | None, now: dt.datetime) -> float:
    """Hours from ``built_at`` to ``now``, rounded to 0.01 h (36 s); :data:`NEVER_UPDATED_HOURS` for None.

    Not clamped at 0: a negative age means the host clock is behind the signature build time, which
    is itself worth seeing.
    """
    if built_at is None:
        return NEVER_UPDATED_HOURS
    return round((now - built_at).total_seconds() / 3600, 2)


def _timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _datetime(ts: timestamp_pb2.Timestamp) -> dt.datetime:
    return ts.ToDatetime(tzinfo=dt.UTC)


@dataclass(frozen=True)
class AvDatabase:
    """One signature database file, from its header.

    ``built_at`` is when the vendor built it (ClamAV header), always timezone-aware UTC.
    """

    name: str
    path: str
    version: str
    signatures: int
    functionality_level: int
    built_at: dt.datetime | None
    builder: str

    def to_proto(self) -> av_pb2.AvDatabase:
        return av_pb2.AvDatabase(
            name=self.name,
            path=self.path,
            version=self.version,
            signatures=self.signatures,
            functionality_level=self.functionality_level,
            built_at=_timestamp(self.built_at),
            builder=self.builder,
        )

    @classmethod
    def from_proto(cls, msg: av_pb2.AvDatabase) -> AvDatabase:
        return cls(
            name=msg.name,
            path=msg.path,
            version=msg.version,
            signatures=msg.signatures,
            functionality_level=msg.functionality_level,
            built_at=_datetime(msg.built_at) if msg.HasField("built_at") else None,
            builder=msg.builder,
        )


@dataclass(frozen=True)
class AvProduct:
    """One antivirus product found on the host; ``name`` is its stable id ("clamav", "windows-defender")."""

    name: str
    engine_version: str = ""
    # The newest signature set (ClamAV: the daily database version).
    signature_version: str = ""
    signature_built_at: dt.datetime | None = None
    signature_age_hours: float = NEVER_UPDATED_HOURS
    engine_running: bool = False
    updater_running: bool = False
    # False where the check cannot tell whether an updater runs (Defender updates from within its
    # service); a baseline should then ignore ``updater_running``.
    updater_known: bool = False
    realtime_protection: bool = False
    database_dir: str = ""
    databases: tuple[AvDatabase, ...] = ()

    def to_proto(self) -> av_pb2.AvProduct:
        return av_pb2.AvProduct(
            name=self.name,
            engine_version=self.engine_version,
            signature_version=self.signature_version,
            signature_built_at=_timestamp(self.signature_built_at),
            signature_age_hours=self.signature_age_hours,
            engine_running=self.engine_running,
            updater_running=self.updater_running,
            updater_known=self.updater_known,
            realtime_protection=self.realtime_protection,
            database_dir=self.database_dir,
            databases=[db.to_proto() for db in self.databases],
        )

    @classmethod
    def from_proto(cls, msg: av_pb2.AvProduct) -> AvProduct:
        return cls(
            name=msg.name,
            engine_version=msg.engine_version,
            signature_version=msg.signature_version,
            signature_built_at=_datetime(msg.signature_built_at) if msg.HasField("signature_built_at") else None,
            signature_age_hours=msg.signature_age_hours,
            engine_running=msg.engine_running,
            updater_running=msg.updater_running,
            updater_known=msg.updater_known,
            realtime_protection=msg.realtime_protection,
            database_dir=msg.database_dir,
            databases=tuple(AvDatabase.from_proto(m) for m in msg.databases),
        )


@dataclass
class AvResult(Result):
    """Every antivirus product found; empty when there is none, which a baseline can fail."""

    products: list[AvProduct] = field(default_factory=list)

    def to_proto(self) -> av_pb2.AvResult:
        return av_pb2.AvResult(products=[p.to_proto() for p in self.products])

    @classmethod
    def from_proto(cls, msg: av_pb2.AvResult) -> AvResult:
        return cls(products=[AvProduct.from_proto(m) for m in msg.products])
