"""Which package manager made a change: dpkg's log and file lists (Debian, Ubuntu).

An event gets ``package = "dpkg:<name>"`` only when both hold:

* dpkg owns the path: it is listed in ``/var/lib/dpkg/info/<name>.list`` (or ``<name>:<arch>.list``);
* dpkg worked on that package when the change happened: the change falls inside one of the
  package's runs in ``/var/log/dpkg.log`` — from its first line (``upgrade``, ``install``, …) to its
  last (``status installed``), lines less than :data:`RUN_GAP_S` apart making one run — widened by
  :data:`BEFORE_S` before (the log has whole seconds) and :data:`AFTER_S` after (the time a real-time
  event takes to be stamped); or a dpkg process (run by root) is running and has logged the package
  since it started (looked for only when the log was written in the last 6 hours). A hand edit of a
  packaged file a minute after an upgrade is therefore not the package manager's.

Owning the file alone is not enough: an attacker replacing ``/usr/sbin/nginx`` changes a file dpkg
owns, and the controller treats any event with ``package`` as a package-manager change where a rule
says ``package_changes_expected: true``. Only root writes the log and the lists.

Memory: nothing is kept between batches. A batch first looks at the log's mtime (one ``stat``); only
when dpkg was active around the batch is the log's tail read (lines outside the window are skipped
as strings) and only the ``.list`` files of the packages active then are read, never the whole
database (34 MB on a plain Debian 12).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from checks.fim.model import Detector, FimEvent

# How far back the log is read for a batch of events.
WINDOW_S = 300.0
# A package's lines closer than this belong to one dpkg run; a change inside a run, widened by BEFORE_S
# and AFTER_S, is that run's.
RUN_GAP_S = 120.0
BEFORE_S = 2.0
AFTER_S = 5.0
# A dpkg run that wrote no log line for this long is not looked for among the processes (that look
# costs milliseconds; the log's mtime costs one stat).
_RUNNING_HORIZON_S = 6 * 3600.0
# How much of the log's end is read: a busy upgrade writes ~100 bytes a line, ~10 lines a package.
_TAIL_BYTES = 4 << 20
# dpkg unpacks to "<path>.dpkg-new" and renames; it keeps "<path>.dpkg-old"/"-tmp" while replacing.
_DPKG_SUFFIXES = (b".dpkg-new", b".dpkg-tmp", b".dpkg-old")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class DpkgLogEntry:
    """One line of ``/var/log/dpkg.log``.

    ``action``: ``startup``, ``install``, ``upgrade``, ``remove``, ``purge``, ``configure``,
    ``trigproc``, ``status`` or ``conffile``. ``package`` has no architecture ("nginx", not
    "nginx:amd64"; "" for startup and conffile lines); ``detail`` is the status ("installed",
    "half-configured", ...), the conffile's path, or the rest of a startup line. ``when`` is the
    local time dpkg wrote, without a zone (dpkg logs local time).
    """

    when: dt.datetime
    action: str
    package: str = ""
    arch: str = ""
    version: str = ""
    detail: str = ""


_PACKAGE_ACTIONS = frozenset({"install", "upgrade", "remove", "purge", "configure", "trigproc"})


def _split_package(token: str) -> tuple[str, str]:
    name, _, arch = token.partition(":")
    return name, arch


def parse_dpkg_log_line(line: str) -> DpkgLogEntry | None:
    """Parse one line of dpkg.log; None for anything that is not a well-formed entry.

    Formats (dpkg(1), "FILES"): ``YYYY-MM-DD HH:MM:SS startup <type> <command>``, ``... status <state>
    <pkg> <installed-version>``, ``... <action> <pkg> <installed-version> <available-version>`` with
    action one of install, upgrade, remove, purge, configure, trigproc, and ``... conffile <filename>
    <decision>``.
    """
    parts = line.split()
    if len(parts) < 3:
        return None
    try:
        when = dt.datetime.strptime(f"{parts[0]} {parts[1]}", _TIME_FORMAT)
    except ValueError:
        return None
    action, rest = parts[2], parts[3:]
    if action == "status" and len(rest) >= 2:
        name, arch = _split_package(rest[1])
        return DpkgLogEntry(when, action, name, arch, rest[2] if len(rest) > 2 else "", rest[0])
    if action in _PACKAGE_ACTIONS and rest:
        name, arch = _split_package(rest[0])
        # The version that is (or will be) on disk: the new one, or the old one for remove/purge.
        version = rest[2] if len(rest) > 2 and rest[2] != "<none>" else (rest[1] if len(rest) > 1 else "")
        return DpkgLogEntry(when, action, name, arch, version)
    if action == "conffile" and rest:
        return DpkgLogEntry(when, action, detail=rest[0])
    if action == "startup":
        return DpkgLogEntry(when, action, detail=" ".join(rest))
    return None


def parse_dpkg_log(text: str, *, since: str = "") -> list[DpkgLogEntry]:
    """Entries of a dpkg.log text, skipping (as strings, cheaply) lines before ``since`` ("YYYY-MM-DD HH:MM:SS")."""
    out: list[DpkgLogEntry] = []
    for line in text.splitlines():
        if since and line[:19] < since:
            continue
        entry = parse_dpkg_log_line(line)
        if entry is not None:
            out.append(entry)
    return out


def _event_time(ev: FimEvent) -> float:
    """When the change happened, as the controller judges it: real time by detection, scans by ctime."""
    if ev.detected_by is not Detector.REALTIME and ev.after is not None and ev.after.ctime_ns:
        return ev.after.ctime_ns / 1e9
    return ev.detected_at.timestamp()


class DpkgPackages:
    """Fills ``FimEvent.package`` for changes dpkg made (see the module docstring)."""

    def __init__(
        self,
        *,
        log: Path = Path("/var/log/dpkg.log"),
        info: Path = Path("/var/lib/dpkg/info"),
        running_since: Callable[[], float | None] | None = None,
        window_s: float = WINDOW_S,
        to_epoch: Callable[[dt.datetime], float] = lambda d: time.mktime(d.timetuple()),
        from_epoch: Callable[[float], str] = lambda t: time.strftime(_TIME_FORMAT, time.localtime(t)),
    ) -> None:
        self.log = log
        self.info = info
        self.dpkg_running_since = running_since or _dpkg_running_since
        self.window_s = window_s
        self._to_epoch = to_epoch
        self._from_epoch = from_epoch

    @classmethod
    def for_host(cls) -> DpkgPackages | None:
        """The resolver of this host, or None where there is no dpkg."""
        if not sys.platform.startswith("linux") or not Path("/var/lib/dpkg/info").is_dir():
            return None
        return cls()

    def annotate(self, events: Iterable[FimEvent]) -> None:
        """Set ``package`` on the events dpkg accounts for (in place); never raises for a host's oddities."""
        todo = [(ev, _event_time(ev)) for ev in events if not ev.package]
        if not todo:
            return
        # No package is the safe answer to anything odd on the host: the change is then judged like any other.
        with contextlib.suppress(OSError, ValueError, UnicodeError):
            self._annotate(todo)

    def _annotate(self, todo: list[tuple[FimEvent, float]]) -> None:
        first = min(t for _, t in todo) - self.window_s
        try:
            mtime = os.stat(self.log).st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime < first - _RUNNING_HORIZON_S:
            return  # the common case: dpkg did nothing for hours (one stat, no look at processes)
        running_since = None if mtime >= first else self.dpkg_running_since()
        if mtime < first and running_since is None:
            return
        since = first if running_since is None else min(first, running_since)
        active = self._active(since)  # package -> times dpkg logged it
        if not active:
            return
        lists: dict[str, frozenset[bytes] | None] = {}
        runs = {name: _runs(times) for name, times in active.items()}
        for ev, when in todo:
            candidates = [name for name, times in active.items()
                          if any(lo - BEFORE_S <= when <= hi + AFTER_S for lo, hi in runs[name])
                          or (running_since is not None and max(times) >= running_since)]
            if not candidates:
                continue
            paths = {_lookup_form(ev.path)}
            if ev.old_path:
                paths.add(_lookup_form(ev.old_path))
            for name in sorted(candidates):
                if name not in lists:
                    lists[name] = self._list(name)
                owned = lists[name]
                if owned is not None and paths & owned:
                    ev.package = f"dpkg:{name}"
                    break

    def _active(self, since: float) -> dict[str, list[float]]:
        with open(self.log, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
        out: dict[str, list[float]] = {}
        for entry in parse_dpkg_log(text, since=self._from_epoch(since - 1)):
            if entry.package:
                out.setdefault(entry.package, []).append(self._to_epoch(entry.when))
        return out

    def _list(self, name: str) -> frozenset[bytes] | None:
        """The paths package ``name`` installed, in lookup form; None when dpkg lists none."""
        candidates = [self.info / f"{name}.list", *sorted(self.info.glob(f"{name}:*.list"))]
        found: set[bytes] = set()
        seen = False
        for path in candidates:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            seen = True
            found.update(_lookup_form(line) for line in data.splitlines() if line.startswith(b"/"))
        return frozenset(found) if seen else None


def _runs(times: list[float]) -> list[tuple[float, float]]:
    """A package's log times grouped into runs: (first, last) of lines less than RUN_GAP_S apart."""
    out: list[tuple[float, float]] = []
    for t in sorted(times):
        if out and t - out[-1][1] < RUN_GAP_S:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def _dpkg_running_since() -> float | None:
    """When the oldest dpkg process run by root started (epoch seconds), or None if none runs."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    oldest: float | None = None
    for pid in pids:
        # /proc/<pid>/comm first: one small read per process; psutil only for the rare dpkg.
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                if f.read() != b"dpkg\n":
                    continue
        except OSError:
            continue
        import psutil

        try:
            proc = psutil.Process(int(pid))
            if proc.uids().real != 0:
                continue
            started = proc.create_time()
        except psutil.Error:
            continue
        oldest = started if oldest is None else min(oldest, started)
    return oldest


def _lookup_form(path: str | bytes) -> bytes:
    """A path as compared with dpkg's lists: bytes, dpkg's temporary suffix removed, directory resolved.

    Resolving the directory makes ``/bin/ls`` (as a merged-/usr package lists it) and ``/usr/bin/ls``
    (as the watch sees it) the same path.
    """
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
    for suffix in _DPKG_SUFFIXES:
        if raw.endswith(suffix):
            raw = raw[: -len(suffix)]
            break
    head, tail = os.path.split(raw)
    return os.path.join(_real_dir(head), tail)


_real_cache: dict[bytes, bytes] = {}


def _real_dir(d: bytes) -> bytes:
    # Few distinct directories per batch; bounded so that it never grows with the host.
    got = _real_cache.get(d)
    if got is None:
        got = os.path.realpath(d)
        if len(_real_cache) > 4096:
            _real_cache.clear()
        _real_cache[d] = got
    return got
