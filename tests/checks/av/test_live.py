"""``Av.collect()`` against real ClamAV databases, binaries and processes on this host.

Databases are built on the spot by ClamAV's ``sigtool`` under ``faketime`` (Debian packages ``clamav``
and ``faketime``); a test that needs a missing tool skips and says which package to install.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from checks.av import NEVER_UPDATED_HOURS, Av, AvArgs, AvProduct, parse_cvd_header
from checks.av.products import clamav
from checks.base import Context


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian: apt-get install {package}); needed for this live test")
    return path


def build_daily(directory: Path, epoch: int) -> None:
    """A real daily.cvd whose header says it was built at ``epoch``."""
    sigtool, faketime = need("sigtool", "clamav"), need("faketime", "faketime")
    src = directory.parent / "src"
    src.mkdir()
    (src / "COPYING").write_text("Vigil live test database\n")
    (src / "daily.ndb").write_text(f"Vigil.Test.Live-1:0:*:{b'VigilLiveTest1'.hex()}\n")
    (directory.parent / "none").mkdir()
    subprocess.run(
        [faketime, f"@{epoch}", sigtool, "--build=daily.cvd", "--unsigned", "--cvd-version=27460", "--no-cdiff",
         f"--datadir={directory.parent / 'none'}"],
        cwd=src, input="vigil-live-test\n", capture_output=True, text=True, check=True, timeout=60,
        env={**os.environ, "TZ": "UTC"},
    )  # fmt: skip
    directory.mkdir()
    shutil.move(src / "daily.cvd", directory / "daily.cvd")


def collect(args: AvArgs) -> tuple[list[AvProduct], Context]:
    ctx = Context()
    [result] = Av().collect(args, ctx)
    return result.products, ctx


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="builds ClamAV databases with Debian's tools")
def test_database_built_three_days_ago_is_72_hours_old(tmp_path: Path) -> None:
    db = tmp_path / "clamav"
    target = int(time.time()) - 72 * 3600
    started = time.time()
    build_daily(db, target)
    build_s = time.time() - started
    before = time.time()
    products, ctx = collect(AvArgs(clamav_dirs=[str(db)]))
    after = time.time()

    [product] = products
    assert product.name == "clamav"
    assert ctx.warnings == []
    [daily] = product.databases
    assert (daily.name, daily.version, daily.signatures, daily.builder) == ("daily", "27460", 1, "vigil-live-test")
    # faketime starts the clock at the target and lets it run, so sigtool stamps the header at most
    # the build's duration (plus the second it truncates) after the target.
    assert daily.built_at is not None
    built = daily.built_at.timestamp()
    assert target <= built <= target + build_s + 1
    # The age is measured against a clock read during collect(): bound it by the clock around it.
    low = (before - built) / 3600 - 0.005  # 0.005: the age is rounded to 0.01 h
    high = (after - built) / 3600 + 0.005
    assert low <= product.signature_age_hours <= high
    assert abs(product.signature_age_hours - 72) < 0.1
    assert product.database_dir == str(db)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux process names")
def test_installed_clamav_without_databases_is_reported_never_updated(tmp_path: Path) -> None:
    if not any(clamav._find_binary(name) for name in ("clamd", "freshclam", "clamscan")):
        pytest.skip("ClamAV is not installed (Debian: apt-get install clamav clamav-daemon)")
    products, _ = collect(AvArgs(clamav_dirs=[str(tmp_path)]))
    [product] = products
    assert (product.name, product.databases, product.signature_age_hours) == ("clamav", (), NEVER_UPDATED_HOURS)
    if clamav._find_binary("clamd") or clamav._find_binary("freshclam"):
        assert product.engine_version[:1].isdigit()  # from `clamd --version`, e.g. "1.4.3"


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes named clamd and freshclam (copies of sleep), stopped after the test."""
    sleep = shutil.which("sleep")
    if sleep is None:
        pytest.skip("no sleep binary to stand in for the ClamAV daemons")
    procs = []
    for name in ("clamd", "freshclam"):
        exe = tmp_path / "bin" / name
        exe.parent.mkdir(exist_ok=True)
        shutil.copy(sleep, exe)
        procs.append(subprocess.Popen([str(exe), "60"]))
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process names as Linux reports them")
def test_running_daemons_are_seen(daemons: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    fixture = Path(__file__).parent / "fixtures" / "clamav" / "daily.cld"
    shutil.copyfile(fixture, db / "daily.cld")
    products, _ = collect(AvArgs(clamav_dirs=[str(db)]))
    [product] = products
    assert (product.engine_running, product.updater_running, product.updater_known) == (True, True, True)
    assert product.databases == (parse_cvd_header(fixture.read_bytes(), db / "daily.cld"),)


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.skipif(sys.platform == "win32", reason="shell scripts stand in for the ClamAV binaries")
def test_engine_version_from_the_first_binary_that_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clamav, "_VERSION_TIMEOUT_S", 0.5)
    hung = _script(tmp_path / "clamd", "exec sleep 30")
    fresh = _script(tmp_path / "freshclam", 'echo "ClamAV 1.0.7/27451/Tue Nov 19 08:40:00 2024"')
    ctx = Context()
    assert clamav._engine_version({"clamd": hung, "freshclam": fresh}, ctx) == "1.0.7"
    [warning] = ctx.warnings
    assert warning.startswith(f"clamav: {hung} --version failed:") and "timed out" in warning
    assert clamav._engine_version({"clamd": None, "freshclam": None}, Context()) == ""
