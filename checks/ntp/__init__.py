"""The ``ntp`` check: which time daemon runs, whether it is synchronised, and the clock's measured offset.

Public: :class:`Ntp` (the check), :class:`NtpArgs`, :class:`NtpResult`, :class:`NtpSource`,
:class:`SntpMeasurement`, and the pure parsers, each fed real captured output in tests:

- :func:`parse_chronyc_tracking_csv`, :func:`parse_chronyc_sources_csv` (chrony)
- :func:`parse_ntpq_rv`, :func:`parse_ntpq_peers` (ntpd, classic or NTPsec)
- :func:`parse_timedatectl_timesync`, :func:`parse_timedatectl_timesync_status`,
  :func:`parse_timedatectl_show` (systemd-timesyncd)
- :func:`parse_w32tm_status` (Windows, English output)

``parse`` holds the pure part and :func:`build_result`, ``sntp`` the SNTP client, ``linux`` and
``windows`` the parts that ask the host, ``check`` the check class.
"""

from __future__ import annotations

from checks.ntp.check import Ntp, NtpArgs, NtpArgsError
from checks.ntp.parse import (
    Daemon,
    DaemonStatus,
    NtpParseError,
    NtpResult,
    NtpSource,
    TimedateStatus,
    TimesyncStatus,
    build_result,
    merge_timesyncd,
    parse_chronyc_sources_csv,
    parse_chronyc_tracking_csv,
    parse_ntpq_peers,
    parse_ntpq_rv,
    parse_timedatectl_show,
    parse_timedatectl_timesync,
    parse_timedatectl_timesync_status,
)
from checks.ntp.sntp import SntpMeasurement, build_request, measure, parse_response
from checks.ntp.windows import parse_w32tm_status

__all__ = [
    "Daemon",
    "DaemonStatus",
    "Ntp",
    "NtpArgs",
    "NtpArgsError",
    "NtpParseError",
    "NtpResult",
    "NtpSource",
    "SntpMeasurement",
    "TimedateStatus",
    "TimesyncStatus",
    "build_request",
    "build_result",
    "measure",
    "merge_timesyncd",
    "parse_chronyc_sources_csv",
    "parse_chronyc_tracking_csv",
    "parse_ntpq_peers",
    "parse_ntpq_rv",
    "parse_response",
    "parse_timedatectl_show",
    "parse_timedatectl_timesync",
    "parse_timedatectl_timesync_status",
    "parse_w32tm_status",
]
