"""Collecting part of the ``ntp`` check on Linux: find the time daemon, ask its own tool, parse.

Only reads: the agent detects the daemon the host has and never installs, starts or reconfigures
one. Each tool gets a short timeout, because a wedged daemon must not hold up the agent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import psutil

from checks.ntp.parse import (
    DAEMONS,
    Daemon,
    DaemonStatus,
    NtpParseError,
    TimedateStatus,
    TimesyncStatus,
    merge_timesyncd,
    parse_chronyc_sources_csv,
    parse_chronyc_tracking_csv,
    parse_ntpq_peers,
    parse_ntpq_rv,
    parse_timedatectl_show,
    parse_timedatectl_timesync,
    parse_timedatectl_timesync_status,
    running_daemons,
)

COMMAND_TIMEOUT_S = 5.0
# Where the daemons' binaries live, to tell "installed but stopped" from "absent".
_SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TIMESYNCD_PATHS = ("/lib/systemd/systemd-timesyncd", "/usr/lib/systemd/systemd-timesyncd")

CHRONYC_TRACKING = ("chronyc", "-c", "tracking")
CHRONYC_SOURCES = ("chronyc", "-c", "sources")
NTPQ_RV = ("ntpq", "-c", "rv")
NTPQ_PEERS = ("ntpq", "-pn")
TIMEDATECTL_TIMESYNC = ("timedatectl", "show-timesync", "--all")
TIMEDATECTL_TIMESYNC_STATUS = ("timedatectl", "timesync-status")
TIMEDATECTL_SHOW = ("timedatectl", "show")


class CommandFailed(Exception):
    """A daemon's tool could not be run or did not succeed; the message says which and why."""


def run(command: Sequence[str]) -> str:
    """Run one of the daemons' read-only query tools and return its stdout."""
    env = dict(os.environ)
    # C locale: parsers expect English words and "." decimals; UTC: timedatectl prints local time.
    env.update(LC_ALL="C", TZ="UTC", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    if os.name == "posix":
        env["PATH"] = f"{env.get('PATH', '')}{os.pathsep}{_SBIN}"
    shown = " ".join(command)
    try:
        done = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise CommandFailed(f"`{shown}`: {command[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"`{shown}` did not answer within {COMMAND_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise CommandFailed(f"`{shown}` could not run: {exc}") from None
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise CommandFailed(f"`{shown}` exited with {done.returncode}: {' / '.join(message)[:300]}")
    return done.stdout


def process_names() -> list[str]:
    names: list[str] = []
    for proc in psutil.process_iter(["name"]):
        # process_iter fills info with None when a process vanished or is unreadable.
        name = proc.info.get("name")
        if name:
            names.append(name)
    return names


def installed() -> list[str]:
    """Time daemons whose binary is present, in :data:`DAEMONS` order."""
    found: list[str] = []
    for daemon in DAEMONS:
        if daemon == "systemd-timesyncd":
            present = any(os.path.exists(path) for path in _TIMESYNCD_PATHS)
        else:
            present = shutil.which(daemon, path=f"{os.environ.get('PATH', '')}{os.pathsep}{_SBIN}") is not None
        if present:
            found.append(daemon)
    return found


Runner = Callable[[Sequence[str]], str]


def chrony_status(run: Runner, warnings: list[str]) -> DaemonStatus:
    status = parse_chronyc_tracking_csv(run(CHRONYC_TRACKING))
    try:
        sources = parse_chronyc_sources_csv(run(CHRONYC_SOURCES))
    except (CommandFailed, NtpParseError) as exc:
        warnings.append(f"chronyd's sources are missing: {exc}")
        return status
    return replace(status, sources=tuple(sources))


def ntpd_status(run: Runner, warnings: list[str]) -> DaemonStatus:
    status = parse_ntpq_rv(run(NTPQ_RV))
    try:
        peers = parse_ntpq_peers(run(NTPQ_PEERS))
    except (CommandFailed, NtpParseError) as exc:
        warnings.append(f"ntpd's peers are missing: {exc}")
        return status
    return replace(status, sources=tuple(peers))


def timesyncd_status(run: Runner, warnings: list[str]) -> DaemonStatus:
    status = parse_timedatectl_timesync(run(TIMEDATECTL_TIMESYNC))
    timesync: TimesyncStatus | None = None
    timedate: TimedateStatus | None = None
    try:
        timesync = parse_timedatectl_timesync_status(run(TIMEDATECTL_TIMESYNC_STATUS))
    except (CommandFailed, NtpParseError) as exc:
        warnings.append(f"systemd-timesyncd's offset is missing: {exc}")
    try:
        timedate = parse_timedatectl_show(run(TIMEDATECTL_SHOW))
    except (CommandFailed, NtpParseError) as exc:
        warnings.append(f"the kernel's synchronised flag is missing: {exc}")
    return merge_timesyncd(status, timesync, timedate)


_STATUS: Mapping[str, Callable[[Runner, list[str]], DaemonStatus]] = {
    "chronyd": chrony_status,
    "ntpd": ntpd_status,
    "systemd-timesyncd": timesyncd_status,
}


def collect_daemon(warnings: list[str]) -> Daemon:
    """Which daemon runs (or is merely installed) and what it reports; problems become warnings."""
    running = running_daemons(process_names())
    if len(running) > 1:
        warnings.append(
            f"{len(running)} time daemons run at once ({', '.join(running)}): they fight over the clock; "
            f"reporting {running[0]}"
        )
    if not running:
        present = installed()
        return Daemon(name=present[0] if present else "", running=False)
    name = running[0]
    try:
        status: DaemonStatus | None = _STATUS[name](run, warnings)
    except (CommandFailed, NtpParseError) as exc:
        warnings.append(f"{name} runs but its state could not be read: {exc}")
        status = None
    return Daemon(name=name, running=True, status=status)
