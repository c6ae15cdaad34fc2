"""Pure part of the ``ntp`` check: daemon output in, typed pieces out, and the merge into :class:`NtpResult`.

Nothing here touches the host; every parser is fed fixture files of real ``chronyc``, ``ntpq`` and
``timedatectl`` output in tests.

Offsets everywhere follow NTP's sign, as the proto does: reference time minus local time, so a clock
running *fast* has a *negative* offset. ``chronyc -c tracking`` and ``ntpq`` already use it;
``chronyc sources`` uses the opposite sign and is negated here.

Errors::

    CheckError
     └── NtpParseError (also ValueError): output of a time daemon's tool that this parser cannot read
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from checks.base import CheckError, Result
from checks.ntp.sntp import NTP_UNIX_DELTA, SntpMeasurement
from proto.vigil.v1 import ntp_pb2


class NtpParseError(CheckError, ValueError):
    """A time daemon's tool printed something this parser does not understand."""

    kind = "ERROR"


@dataclass(frozen=True)
class NtpSource:
    """One time source as the daemon sees it. ``offset_ms`` is reference minus local."""

    address: str
    stratum: int = 0
    offset_ms: float = 0.0
    # chronyc sources reports an error bound, not a delay, so chrony sources carry 0 here.
    delay_ms: float = 0.0
    selected: bool = False
    # selected, combined, not-combined, candidate, backup, outlier, excess, falseticker,
    # too-variable, unreachable or rejected: the daemon's own verdict, named the same for every daemon.
    state: str = ""

    def to_proto(self) -> ntp_pb2.NtpSource:
        return ntp_pb2.NtpSource(
            address=self.address,
            stratum=self.stratum,
            offset_ms=self.offset_ms,
            delay_ms=self.delay_ms,
            selected=self.selected,
            state=self.state,
        )

    @classmethod
    def from_proto(cls, msg: ntp_pb2.NtpSource) -> NtpSource:
        return cls(
            address=msg.address,
            stratum=msg.stratum,
            offset_ms=msg.offset_ms,
            delay_ms=msg.delay_ms,
            selected=msg.selected,
            state=msg.state,
        )


@dataclass(frozen=True)
class DaemonStatus:
    """What a time daemon says about the system clock.

    ``offset_ms`` is None when the daemon has no current estimate (it is not synchronised and its
    tool prints a meaningless 0); ``last_sync`` is None when it never synchronised.
    """

    synchronized: bool
    offset_ms: float | None = None
    stratum: int = 0
    reference: str = ""
    last_sync: datetime | None = None
    root_delay_ms: float = 0.0
    root_dispersion_ms: float = 0.0
    sources: tuple[NtpSource, ...] = ()


@dataclass(frozen=True)
class Daemon:
    """Which time daemon the host has, whether it runs, and (when it could be asked) its status."""

    name: str = ""
    running: bool = False
    status: DaemonStatus | None = None


@dataclass(frozen=True)
class TimesyncStatus:
    """The numbers only ``timedatectl timesync-status`` prints at full precision."""

    offset_ms: float | None = None
    delay_ms: float | None = None


@dataclass(frozen=True)
class TimedateStatus:
    """``timedatectl show``: systemd-timedated's view, whichever daemon keeps the time."""

    ntp_synchronized: bool | None = None
    ntp_enabled: bool | None = None
    timezone: str = ""


@dataclass
class NtpResult(Result):
    """Clock synchronisation state of one host; see :class:`checks.ntp.Ntp` for an example."""

    daemon: str = ""
    daemon_running: bool = False
    synchronized: bool = False
    offset_ms: float = 0.0
    offset_source: str = ""
    daemon_offset_ms: float = 0.0
    stratum: int = 0
    reference: str = ""
    last_sync: datetime | None = None
    # None when there never was a sync; on the wire that is 0 with last_sync unset.
    seconds_since_sync: float | None = None
    root_delay_ms: float = 0.0
    root_dispersion_ms: float = 0.0
    sources: list[NtpSource] = field(default_factory=list)
    sntp: list[SntpMeasurement] = field(default_factory=list)

    def to_proto(self) -> ntp_pb2.NtpResult:
        msg = ntp_pb2.NtpResult(
            daemon=self.daemon,
            daemon_running=self.daemon_running,
            synchronized=self.synchronized,
            offset_ms=self.offset_ms,
            offset_source=self.offset_source,
            daemon_offset_ms=self.daemon_offset_ms,
            stratum=self.stratum,
            reference=self.reference,
            seconds_since_sync=self.seconds_since_sync or 0.0,
            root_delay_ms=self.root_delay_ms,
            root_dispersion_ms=self.root_dispersion_ms,
            sources=[s.to_proto() for s in self.sources],
            sntp=[m.to_proto() for m in self.sntp],
        )
        if self.last_sync is not None:
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(self.last_sync)
            msg.last_sync.CopyFrom(stamp)
        return msg

    @classmethod
    def from_proto(cls, msg: ntp_pb2.NtpResult) -> NtpResult:
        has_sync = msg.HasField("last_sync")
        return cls(
            daemon=msg.daemon,
            daemon_running=msg.daemon_running,
            synchronized=msg.synchronized,
            offset_ms=msg.offset_ms,
            offset_source=msg.offset_source,
            daemon_offset_ms=msg.daemon_offset_ms,
            stratum=msg.stratum,
            reference=msg.reference,
            last_sync=msg.last_sync.ToDatetime(tzinfo=UTC) if has_sync else None,
            seconds_since_sync=msg.seconds_since_sync if has_sync else None,
            root_delay_ms=msg.root_delay_ms,
            root_dispersion_ms=msg.root_dispersion_ms,
            sources=[NtpSource.from_proto(s) for s in msg.sources],
            sntp=[SntpMeasurement.from_proto(m) for m in msg.sntp],
        )


# ---------------------------------------------------------------------------------------- chrony

_CHRONY_TRACKING_FIELDS = 14
_CHRONY_SOURCES_FIELDS = 10
_CHRONY_UNSYNCHRONISED = "Not synchronised"
_CHRONY_STATES: Mapping[str, str] = {
    "*": "selected",
    "+": "combined",
    "-": "not-combined",
    "?": "unreachable",
    "x": "falseticker",
    "~": "too-variable",
}


def _float(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise NtpParseError(f"{what}: expected a number, got {value!r}") from None


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise NtpParseError(f"{what}: expected an integer, got {value!r}") from None


def _refid_address(refid_hex: str) -> str:
    """chrony's hex reference id as ntpq shows it: 0AC90101 -> 10.201.1.1, 7F7F0101 -> 127.127.1.1."""
    value = int(refid_hex, 16)
    if value == 0:
        return ""
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def _epoch(seconds: float) -> datetime | None:
    # Daemons print 0 (1970-01-01) for "never".
    return datetime.fromtimestamp(seconds, UTC) if seconds > 0 else None


def parse_chronyc_tracking_csv(text: str) -> DaemonStatus:
    """``chronyc -c tracking``: one line of 14 comma-separated fields.

    Reference ID (hex), reference name/address, stratum, ref time (Unix s), system time offset (s),
    last offset, RMS offset, frequency, residual frequency, skew, root delay (s), root dispersion
    (s), update interval, leap status. The system time offset is what is still to be corrected —
    the clock's error as chronyd sees it — and is positive when the clock is *slow*.
    """
    line = text.strip()
    fields = line.split(",")
    if len(fields) != _CHRONY_TRACKING_FIELDS:
        raise NtpParseError(
            f"chronyc -c tracking: expected {_CHRONY_TRACKING_FIELDS} comma-separated fields, got {len(fields)} "
            f"in {line[:120]!r}"
        )
    refid, name, stratum, ref_time, system_time = fields[:5]
    leap = fields[13]
    synchronized = leap != _CHRONY_UNSYNCHRONISED
    try:
        reference = name or _refid_address(refid)
    except ValueError:
        raise NtpParseError(f"chronyc -c tracking: reference id {refid!r} is not hex") from None
    return DaemonStatus(
        synchronized=synchronized,
        offset_ms=_float(system_time, "chronyc -c tracking system time") * 1000 if synchronized else None,
        stratum=_int(stratum, "chronyc -c tracking stratum"),
        reference=reference,
        last_sync=_epoch(_float(ref_time, "chronyc -c tracking ref time")),
        root_delay_ms=_float(fields[10], "chronyc -c tracking root delay") * 1000,
        root_dispersion_ms=_float(fields[11], "chronyc -c tracking root dispersion") * 1000,
    )


def parse_chronyc_sources_csv(text: str) -> list[NtpSource]:
    """``chronyc -c sources``: mode, state, address, stratum, poll, reach, last rx, adjusted offset,
    measured offset, error bound (seconds).

    chronyc's offsets here are local minus source (a source 5 s ahead shows -5.0, as captured in
    ``chrony_no_majority``), the opposite of tracking's, so they are negated to NTP's sign.
    """
    sources: list[NtpSource] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != _CHRONY_SOURCES_FIELDS:
            raise NtpParseError(
                f"chronyc -c sources line {number}: expected {_CHRONY_SOURCES_FIELDS} fields, got {len(fields)}"
            )
        state = fields[1]
        offset = _float(fields[7], f"chronyc -c sources line {number} offset")
        sources.append(
            NtpSource(
                address=fields[2],
                stratum=_int(fields[3], f"chronyc -c sources line {number} stratum"),
                offset_ms=-offset * 1000 if offset else 0.0,
                selected=state == "*",
                state=_CHRONY_STATES.get(state, f"unknown ({state})"),
            )
        )
    return sources


# ------------------------------------------------------------------------------------------- ntpq

_NTPQ_TALLY: Mapping[str, str] = {
    "*": "selected",
    "o": "selected",  # system peer via PPS
    "+": "candidate",
    "#": "backup",
    "-": "outlier",
    ".": "excess",
    "x": "falseticker",
    " ": "rejected",
}
_NTPQ_COLUMNS = ("remote", "refid", "st", "t", "when", "poll", "reach", "delay", "offset", "jitter")
_UNITS_MS: Mapping[str, float] = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}
_NUMBER_UNIT = re.compile(r"^([-+]?[0-9.]+(?:e[-+]?\d+)?)([a-zµ]*)$")


def _ms(value: str, what: str) -> float:
    """A millisecond value as ntpq prints it; ntpsec's ``--units`` mode appends a unit."""
    match = _NUMBER_UNIT.match(value)
    if match is None or match.group(2) not in ("", *_UNITS_MS):
        raise NtpParseError(f"{what}: expected milliseconds, got {value!r}")
    return float(match.group(1)) * _UNITS_MS.get(match.group(2), 1.0)


def parse_ntpq_peers(text: str) -> list[NtpSource]:
    """``ntpq -pn``: the peer table of ntpd (classic or NTPsec). The first character is the tally code.

    Offsets and delays are in milliseconds and already reference minus local. Pool prototype rows
    (refid ``.POOL.``) are configuration, not sources, and are left out.
    """
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if line.split()[:2] == ["remote", "refid"]), None)
    if header is None:
        raise NtpParseError(f"ntpq -pn: no 'remote refid ...' header in {text[:120]!r}")
    rows: list[str] = []
    for line in lines[header + 1 :]:
        if not line.strip() or line.startswith("="):
            continue
        # Classic ntpq puts a long remote name on a line of its own and the rest on the next.
        if rows and len(rows[-1].split()) == 1:
            rows[-1] = f"{rows[-1]} {line.strip()}"
        else:
            rows.append(line)
    sources: list[NtpSource] = []
    for row in rows:
        tally, rest = row[0], row[1:].split()
        if len(rest) != len(_NTPQ_COLUMNS):
            raise NtpParseError(f"ntpq -pn: expected {len(_NTPQ_COLUMNS)} columns in {row!r}")
        col = dict(zip(_NTPQ_COLUMNS, rest, strict=True))
        if col["refid"] == ".POOL.":
            continue
        state = _NTPQ_TALLY.get(tally, f"unknown ({tally})")
        if state == "rejected" and col["reach"] == "0":
            state = "unreachable"
        sources.append(
            NtpSource(
                address=col["remote"],
                stratum=_int(col["st"], f"ntpq -pn stratum of {col['remote']}"),
                offset_ms=_ms(col["offset"], f"ntpq -pn offset of {col['remote']}"),
                delay_ms=_ms(col["delay"], f"ntpq -pn delay of {col['remote']}"),
                selected=tally in "*o",
                state=state,
            )
        )
    return sources


_RV_PAIR = re.compile(r'([A-Za-z_][\w.]*)=("[^"]*"|[^\s,]*)')
_LEAP_UNSYNCHRONISED = 3
_STRATUM_UNSYNCHRONISED = 16


def _ntp_hex_time(value: str) -> datetime | None:
    """``eeabab32.61cecd5a`` (seconds.fraction since 1900, hex) -> UTC; all zeros means never."""
    seconds, _, fraction = value.partition(".")
    try:
        ntp = int(seconds, 16) + int(fraction or "0", 16) / 2**32
    except ValueError:
        raise NtpParseError(f"ntpq -c rv: reftime {value!r} is not an NTP hex timestamp") from None
    if ntp == 0:
        # ntpq itself prints this as 2036-02-07T06:28:16Z (era 1) — it means "never".
        return None
    return datetime.fromtimestamp(ntp - NTP_UNIX_DELTA, UTC)


def _leap(value: str) -> int:
    # ntpq shows the two leap bits in binary ("00", "11"); accept a plain number too.
    if len(value) == 2 and set(value) <= {"0", "1"}:
        return int(value, 2)
    return _int(value, "ntpq -c rv leap")


def parse_ntpq_rv(text: str) -> DaemonStatus:
    """``ntpq -c rv`` (association 0): ntpd's system variables as ``name=value`` pairs.

    Synchronised means leap bits other than 11 and a stratum below 16. The status word's clock
    source is not used: NTPsec reports ``sync_unspec`` while it already has a system peer and
    leap 00 (captured in ``ntpsec_synced``).
    """
    pairs = {key: value.strip('"') for key, value in _RV_PAIR.findall(text)}
    if "stratum" not in pairs:
        raise NtpParseError(f"ntpq -c rv: no stratum= in {text[:120]!r}")
    if "leap" in pairs:
        leap = _leap(pairs["leap"])
    elif "status" in pairs:
        leap = int(pairs["status"], 16) >> 14
    else:
        raise NtpParseError(f"ntpq -c rv: neither leap= nor status= in {text[:120]!r}")
    stratum = _int(pairs["stratum"], "ntpq -c rv stratum")
    synchronized = leap != _LEAP_UNSYNCHRONISED and 0 < stratum < _STRATUM_UNSYNCHRONISED
    offset = pairs.get("offset")
    return DaemonStatus(
        synchronized=synchronized,
        offset_ms=_ms(offset, "ntpq -c rv offset") if synchronized and offset else None,
        stratum=stratum,
        reference=pairs.get("refid", "").strip("."),
        last_sync=_ntp_hex_time(pairs["reftime"]) if "reftime" in pairs else None,
        root_delay_ms=_ms(pairs.get("rootdelay", "0"), "ntpq -c rv rootdelay"),
        root_dispersion_ms=_ms(pairs.get("rootdisp", "0"), "ntpq -c rv rootdisp"),
    )


# ------------------------------------------------------------------------------------ timedatectl


def _key_values(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            pairs[key.strip()] = value.strip()
    return pairs


def _yes_no(value: str | None) -> bool | None:
    return {"yes": True, "no": False}.get(value or "")


_NTP_MESSAGE_SPLIT = re.compile(r",?\s+(?=\w+=)")


def _ntp_message(value: str) -> dict[str, str]:
    """``{ Leap=0, Version=4, ..., OriginateTimestamp=Sat 2026-11-21 05:31:49 UTC, ... }`` -> dict."""
    inner = value.strip().removeprefix("{").removesuffix("}").strip()
    # Split before each "Key=": timestamps contain spaces, and some systemd versions omit the
    # comma between Ignored= and PacketCount=.
    return {k: v.rstrip(",").strip() for k, _, v in (p.partition("=") for p in _NTP_MESSAGE_SPLIT.split(inner)) if k}


def _timedatectl_time(value: str) -> datetime | None:
    # collect() runs timedatectl with TZ=UTC, so timestamps end in "UTC"; anything else is not guessed.
    if not value.endswith(" UTC"):
        return None
    try:
        return datetime.strptime(value, "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_timedatectl_timesync(text: str) -> DaemonStatus:
    """``timedatectl show-timesync --all``: systemd-timesyncd's server and its last NTP message.

    Its timestamps have one-second resolution, too coarse for an offset, which therefore comes from
    :func:`parse_timedatectl_timesync_status`. Without ``NTPMessage`` timesyncd never got an answer.
    """
    pairs = _key_values(text)
    if "ServerName" not in pairs and "SystemNTPServers" not in pairs:
        raise NtpParseError(f"timedatectl show-timesync: no ServerName= or SystemNTPServers= in {text[:120]!r}")
    server = pairs.get("ServerAddress") or pairs.get("ServerName", "")
    message = _ntp_message(pairs["NTPMessage"]) if pairs.get("NTPMessage", "").startswith("{") else {}
    if not message:
        sources = (NtpSource(address=server, state="unreachable"),) if server else ()
        return DaemonStatus(synchronized=False, sources=sources)
    stratum = _int(message.get("Stratum", "0"), "timedatectl NTPMessage Stratum")
    leap = _int(message.get("Leap", "3"), "timedatectl NTPMessage Leap")
    ignored = _yes_no(message.get("Ignored")) is True
    packets = _int(message.get("PacketCount", "0"), "timedatectl NTPMessage PacketCount")
    synchronized = not ignored and packets > 0 and leap != _LEAP_UNSYNCHRONISED and 0 < stratum < 16
    return DaemonStatus(
        synchronized=synchronized,
        # timesyncd's own stratum is one more than its server's, as with chrony and ntpd.
        stratum=stratum + 1 if synchronized else 0,
        reference=server,
        last_sync=_timedatectl_time(message.get("DestinationTimestamp", "")) if synchronized else None,
        root_delay_ms=_span_ms(message.get("RootDelay", "0"), "timedatectl RootDelay"),
        root_dispersion_ms=_span_ms(message.get("RootDispersion", "0"), "timedatectl RootDispersion"),
        sources=(
            NtpSource(
                address=server, stratum=stratum, selected=synchronized, state="selected" if synchronized else "rejected"
            ),
        ),
    )


_SPAN_UNITS_MS: Mapping[str, float] = {
    "ns": 1e-6,
    "us": 1e-3,
    "µs": 1e-3,
    "ms": 1.0,
    "s": 1000.0,
    "min": 60_000.0,
    "h": 3_600_000.0,
    "d": 86_400_000.0,
}
_SPAN_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|min|s|h|d)")


def _span_ms(value: str, what: str) -> float:
    """A systemd time span (``+5.000527s``, ``-1min 3.5s``, ``25us``, ``0``) in milliseconds."""
    value = value.strip()
    sign = -1.0 if value.startswith("-") else 1.0
    body = value.lstrip("+-").strip()
    if body == "0":
        return 0.0
    parts = _SPAN_PART.findall(body)
    if not parts or _SPAN_PART.sub("", body).strip():
        raise NtpParseError(f"{what}: {value!r} is not a systemd time span")
    return sign * sum(float(number) * _SPAN_UNITS_MS[unit] for number, unit in parts)


def parse_timedatectl_timesync_status(text: str) -> TimesyncStatus:
    """``timedatectl timesync-status``: the only place timesyncd's offset and delay appear unrounded.

    timesyncd computes the offset the NTP way, so ``Offset: +5.000527s`` means the server is ahead.
    Before the first answer only ``Server``, ``Poll interval`` and ``Packet count: 0`` are shown.
    """
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            pairs[key.strip()] = value.strip()
    offset = pairs.get("Offset")
    delay = pairs.get("Delay")
    return TimesyncStatus(
        offset_ms=_span_ms(offset, "timedatectl timesync-status Offset") if offset else None,
        delay_ms=_span_ms(delay, "timedatectl timesync-status Delay") if delay else None,
    )


def parse_timedatectl_show(text: str) -> TimedateStatus:
    """``timedatectl show``: ``NTPSynchronized=yes`` is the kernel's "clock synchronised" flag."""
    pairs = _key_values(text)
    if "NTPSynchronized" not in pairs:
        raise NtpParseError(f"timedatectl show: no NTPSynchronized= in {text[:120]!r}")
    return TimedateStatus(
        ntp_synchronized=_yes_no(pairs.get("NTPSynchronized")),
        ntp_enabled=_yes_no(pairs.get("NTP")),
        timezone=pairs.get("Timezone", ""),
    )


def merge_timesyncd(
    status: DaemonStatus, timesync: TimesyncStatus | None, timedate: TimedateStatus | None
) -> DaemonStatus:
    """Combine timesyncd's three ``timedatectl`` views into one status."""
    synchronized = status.synchronized
    if timedate is not None and timedate.ntp_synchronized is not None:
        # The kernel flag is what timesyncd sets after adjusting the clock: authoritative.
        synchronized = timedate.ntp_synchronized
    offset = timesync.offset_ms if timesync is not None and synchronized else None
    sources = status.sources
    if timesync is not None and timesync.delay_ms is not None and sources:
        # timesyncd has a single server, so its offset and delay are that source's too.
        measured = replace(sources[0], offset_ms=timesync.offset_ms or 0.0, delay_ms=timesync.delay_ms)
        sources = (measured, *sources[1:])
    return replace(status, synchronized=synchronized, offset_ms=offset, sources=sources)


# ------------------------------------------------------------------------------------------ merge

# In order of preference when several run at once (which is itself a misconfiguration).
DAEMONS = ("chronyd", "ntpd", "systemd-timesyncd")
# The kernel keeps 15 characters of a process name; psutil usually restores the rest, not always.
_PROCESS_NAMES: Mapping[str, str] = {
    "chronyd": "chronyd",
    "ntpd": "ntpd",
    "systemd-timesyncd": "systemd-timesyncd",
    "systemd-timesyn": "systemd-timesyncd",
}


def running_daemons(process_names: Iterable[str]) -> list[str]:
    """The known time daemons among ``process_names``, in :data:`DAEMONS` order."""
    found = {_PROCESS_NAMES[name] for name in process_names if name in _PROCESS_NAMES}
    return [d for d in DAEMONS if d in found]


def build_result(daemon: Daemon, sntp: Iterable[SntpMeasurement], now: datetime) -> NtpResult:
    """Merge the daemon's view and the direct measurements into the result the baseline judges.

    ``offset_ms`` is the median of the good SNTP measurements ("sntp"), else the daemon's own
    offset when it is synchronised ("daemon"), else 0 with ``offset_source`` "".
    ``synchronized`` is only ever the daemon's claim: a good SNTP offset without a daemon means
    the clock is right *now*, not that anything keeps it so.
    """
    measurements = list(sntp)
    status = daemon.status if daemon.running else None
    good = [m.offset_ms for m in measurements if m.ok]
    if good:
        offset, source = statistics.median(good), "sntp"
    elif status is not None and status.synchronized and status.offset_ms is not None:
        offset, source = status.offset_ms, "daemon"
    else:
        offset, source = 0.0, ""
    if status is None:
        return NtpResult(
            daemon=daemon.name,
            daemon_running=daemon.running,
            offset_ms=offset,
            offset_source=source,
            sntp=measurements,
        )
    last_sync = status.last_sync
    return NtpResult(
        daemon=daemon.name,
        daemon_running=daemon.running,
        synchronized=status.synchronized,
        offset_ms=offset,
        offset_source=source,
        daemon_offset_ms=status.offset_ms or 0.0,
        stratum=status.stratum,
        reference=status.reference,
        last_sync=last_sync,
        seconds_since_sync=(now - last_sync).total_seconds() if last_sync is not None else None,
        root_delay_ms=status.root_delay_ms,
        root_dispersion_ms=status.root_dispersion_ms,
        sources=list(status.sources),
        sntp=measurements,
    )
