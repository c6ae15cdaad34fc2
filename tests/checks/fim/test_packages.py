"""dpkg's log parser (on a fixture) and which events dpkg accounts for (on a fake dpkg database)."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest

from checks.fim.model import Detector, FileState, FimEvent, Kind
from checks.fim.packages import DpkgLogEntry, DpkgPackages, parse_dpkg_log, parse_dpkg_log_line
from tests.checks.fim._helpers import Collector, engine, write

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


def test_parse_the_documented_line_kinds() -> None:
    when = dt.datetime(2026, 11, 21, 5, 12, 3)
    assert parse_dpkg_log_line("2026-11-21 05:12:03 status installed nginx:amd64 1.22.1-9") == DpkgLogEntry(
        when, "status", "nginx", "amd64", "1.22.1-9", "installed")
    assert parse_dpkg_log_line("2026-11-21 05:12:03 upgrade nginx:amd64 1.22.1-8 1.22.1-9") == DpkgLogEntry(
        when, "upgrade", "nginx", "amd64", "1.22.1-9")
    assert parse_dpkg_log_line("2026-11-21 05:12:03 remove nginx-common:all 1.22.1-9 <none>") == DpkgLogEntry(
        when, "remove", "nginx-common", "all", "1.22.1-9")
    assert parse_dpkg_log_line("2026-11-21 05:12:03 conffile /etc/nginx/nginx.conf keep") == DpkgLogEntry(
        when, "conffile", detail="/etc/nginx/nginx.conf")
    assert parse_dpkg_log_line("2026-11-21 05:12:03 startup archives unpack") == DpkgLogEntry(
        when, "startup", detail="archives unpack")
    for bad in ("", "not a dpkg line", "2026-11-21 05:2", "2026-13-40 05:12:03 status installed x 1",
                "2026-11-21 05:12:03 frobnicate nginx"):
        assert parse_dpkg_log_line(bad) is None


def test_parse_a_real_log() -> None:
    entries = parse_dpkg_log((FIXTURES / "dpkg.log").read_text())
    assert len(entries) == 35  # every line but the two damaged ones
    assert entries[1] == DpkgLogEntry(dt.datetime(2025, 6, 24, 14, 36, 25), "upgrade", "libsystemd0", "amd64",
                                      "252.38-1~deb12u1")
    assert {e.package for e in entries if e.action == "status"} == {
        "libc-bin", "libsystemd0", "nginx", "nginx-common"}
    later = parse_dpkg_log((FIXTURES / "dpkg.log").read_text(), since="2026-11-21 05:20:00")
    assert [e.action for e in later] == ["startup", "status", "remove", "status", "status", "purge", "status"]


def _event(path: Path, at: float, kind: Kind = Kind.MODIFIED, detector: Detector = Detector.REALTIME) -> FimEvent:
    state = FileState(type="file", sha256="ab", size=1, ctime_ns=int(at * 1e9))
    return FimEvent(kind=kind, path=str(path), detected_by=detector,
                    detected_at=dt.datetime.fromtimestamp(at, dt.UTC), before=state, after=state)


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@pytest.fixture
def dpkg(tmp_path: Path) -> tuple[Path, Path]:
    info = tmp_path / "info"
    info.mkdir()
    (info / "nginx.list").write_text("/.\n/usr\n/usr/sbin\n/usr/sbin/nginx\n")
    (info / "libc6:amd64.list").write_text("/usr/lib/libc.so.6\n")
    log = tmp_path / "dpkg.log"
    return log, info


def test_a_file_dpkg_owns_and_just_upgraded_names_the_package(dpkg: tuple[Path, Path], tmp_path: Path) -> None:
    log, info = dpkg
    now = time.time()
    log.write_text(f"{_stamp(now - 60)} upgrade nginx:amd64 1.22.1-8 1.22.1-9\n"
                   f"{_stamp(now - 59)} status installed nginx:amd64 1.22.1-9\n"
                   f"{_stamp(now - 58)} status installed libc6:amd64 2.36-9\n")
    res = DpkgPackages(log=log, info=info, running_since=lambda: None)
    owned, other, libc = (_event(Path("/usr/sbin/nginx"), now - 59.5),
                          _event(Path("/var/www/html/index.php"), now - 59.5),
                          _event(Path("/usr/lib/libc.so.6.dpkg-new"), now - 57, Kind.CREATED))
    res.annotate([owned, other, libc])
    assert (owned.package, other.package, libc.package) == ("dpkg:nginx", "", "dpkg:libc6")


def test_a_hand_edit_of_a_packaged_file_after_the_upgrade_is_not_the_package_manager(dpkg: tuple[Path, Path]
                                                                                     ) -> None:
    log, info = dpkg
    now = time.time()
    log.write_text(f"{_stamp(now - 60)} upgrade nginx:amd64 1.22.1-8 1.22.1-9\n"
                   f"{_stamp(now - 59)} status installed nginx:amd64 1.22.1-9\n")
    res = DpkgPackages(log=log, info=info, running_since=lambda: None)
    during, right_after, a_minute_later = (_event(Path("/usr/sbin/nginx"), t) for t in (now - 60, now - 56, now))
    res.annotate([during, right_after, a_minute_later])
    assert (during.package, right_after.package, a_minute_later.package) == ("dpkg:nginx", "dpkg:nginx", "")


def test_an_owned_file_changed_without_dpkg_at_work_names_no_package(dpkg: tuple[Path, Path]) -> None:
    log, info = dpkg
    now = time.time()
    log.write_text(f"{_stamp(now - 3600)} status installed nginx:amd64 1.22.1-9\n")
    os.utime(log, (now - 3600, now - 3600))
    res = DpkgPackages(log=log, info=info, running_since=lambda: None)
    ev = _event(Path("/usr/sbin/nginx"), now)
    res.annotate([ev])
    assert ev.package == ""  # an attacker replacing a packaged binary is not "the package manager"
    # ... unless dpkg is running now and logged nginx since it started (a long unpack).
    DpkgPackages(log=log, info=info, running_since=lambda: now - 4000).annotate([ev])
    assert ev.package == "dpkg:nginx"


def test_a_scan_judges_by_the_files_ctime(dpkg: tuple[Path, Path]) -> None:
    log, info = dpkg
    now = time.time()
    log.write_text(f"{_stamp(now - 7200)} status installed nginx:amd64 1.22.1-9\n")
    res = DpkgPackages(log=log, info=info, running_since=lambda: None)
    found_now = _event(Path("/usr/sbin/nginx"), now, detector=Detector.STARTUP)
    changed_then = _event(Path("/usr/sbin/nginx"), now - 7199, detector=Detector.STARTUP)
    found_now.detected_at = changed_then.detected_at = dt.datetime.fromtimestamp(now, dt.UTC)
    res.annotate([found_now, changed_then])
    assert (found_now.package, changed_then.package) == ("", "dpkg:nginx")


def test_no_log_or_no_database_names_no_package(tmp_path: Path) -> None:
    ev = _event(Path("/usr/sbin/nginx"), time.time())
    DpkgPackages(log=tmp_path / "none.log", info=tmp_path / "none", running_since=lambda: None).annotate([ev])
    assert ev.package == ""


def test_the_engine_reports_the_package(tmp_path: Path, db: Path, dpkg: tuple[Path, Path]) -> None:
    log, info = dpkg
    root = tmp_path / "srv"
    write(root / "app.conf", "a\n")
    (info / "app.list").write_text(f"{root}\n{root / 'app.conf'}\n")
    with engine(db, root) as eng:
        eng.build_baseline()
        eng.packages = DpkgPackages(log=log, info=info, running_since=lambda: None)
        log.write_text(f"{_stamp(time.time())} upgrade app:all 1 2\n")
        write(root / "app.conf", "b\n")
        write(root / "dropped.php", "<?php ?>\n")
        sink = Collector()
        eng.verify(sink)
    assert {Path(e.path).name: e.package for e in sink.events} == {"app.conf": "dpkg:app", "dropped.php": ""}
    assert {FimEvent.from_proto(e.to_proto()).package for e in sink.events} == {"dpkg:app", ""}


def test_looking_for_a_running_dpkg_on_this_host_does_not_fail() -> None:
    from checks.fim.packages import _dpkg_running_since

    got = _dpkg_running_since()
    assert got is None or got > 0
