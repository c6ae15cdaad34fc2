"""A throwaway PostgreSQL server for the tests, and one fresh database per test.

``VIGIL_TEST_PG_URL`` (e.g. ``postgresql://vigil@db.example/postgres``) points the tests at an existing
server instead; its role needs CREATEDB. Otherwise a cluster is created with ``initdb`` in a temporary
directory and started on a Unix socket there plus a free loopback port. As root, the server runs as the
``postgres`` system user (PostgreSQL refuses to run as root). When neither is possible, ``PgUnavailable``
says exactly why, and the PostgreSQL variants of the tests skip with that reason.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

ENV_URL = "VIGIL_TEST_PG_URL"
START_TIMEOUT_S = 60.0


class PgUnavailable(Exception):
    """PostgreSQL cannot be used for the tests; the message says why. ``configured`` when the server was
    named by VIGIL_TEST_PG_URL: a server someone asked for and cannot be had fails the tests it was for."""

    def __init__(self, message: str, configured: bool = False) -> None:
        super().__init__(message)
        self.configured = configured


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PgUnavailable("PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, no initdb "
                        "on PATH): install the Debian package 'postgresql' (./scripts/test does) or set "
                        f"{ENV_URL}")


def _scratch() -> str | None:
    """Memory-backed /dev/shm when there is one (a test cluster need not survive a reboot), else the default."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        return None
    st = os.statvfs(shm)
    return str(shm) if st.f_bavail * st.f_frsize >= 256 * 2**20 else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A server the tests may create and drop databases on, through ``admin_url``."""

    admin_url: URL
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def _admin(self) -> Engine:
        return create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database for one test (its URL, with the psycopg 3 driver); dropped afterwards
        even if a connection to it was left open."""
        name = f"vigil_test_{os.getpid()}_{next(self._names)}"
        engine = self._admin()
        try:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                yield self.admin_url.set(database=name).render_as_string(hide_password=False)
            finally:
                with engine.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            engine.dispose()


def _psycopg_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


@contextlib.contextmanager
def existing_server(url: str) -> Iterator[PgServer]:
    server = PgServer(_psycopg_url(url))
    try:
        with server._admin().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means the same to the tests: unusable
        raise PgUnavailable(f"{ENV_URL}={server.admin_url.render_as_string()} cannot be used: "
                            f"{str(exc).splitlines()[0]}", configured=True) from None
    yield server


@contextlib.contextmanager
def throwaway_server() -> Iterator[PgServer]:
    """initdb into a temporary directory, start the server, yield it, stop it and remove the directory."""
    bindir = _bindir()
    as_root = os.geteuid() == 0
    if as_root:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise PgUnavailable("running as root and there is no 'postgres' system user to run the server as "
                                "(PostgreSQL refuses to run as root); install the Debian package "
                                f"'postgresql' or set {ENV_URL}") from None
        prefix = ["runuser", "-u", "postgres", "--"]
    else:
        owner = pwd.getpwuid(os.geteuid())
        prefix = []
    # Not under pytest's tmp_path: as root that lies in a 0700 directory the postgres user cannot enter.
    top = Path(tempfile.mkdtemp(prefix="vigil-pg-", dir=_scratch()))
    try:
        os.chown(top, owner.pw_uid, owner.pw_gid)
        data, log = top / "data", top / "server.log"
        port = _free_port()

        def as_owner(*argv: str | Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*prefix, *map(str, argv)], capture_output=True, text=True, check=False,
                                  timeout=START_TIMEOUT_S)

        init = as_owner(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--locale=C", "--no-sync")
        if init.returncode != 0:
            raise PgUnavailable(f"initdb failed: {(init.stderr or init.stdout).strip()}")
        # Durability is not under test here: no fsync makes CREATE DATABASE per test cheap. A session time
        # zone other than UTC, as many servers have, so that nothing relies on the server's clock zone.
        opts = (f"-k {top} -h 127.0.0.1 -p {port} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200 -c timezone=Asia/Taipei")
        start = as_owner(bindir / "pg_ctl", "-D", data, "-l", log, "-o", opts, "-W", "start")
        if start.returncode != 0:
            raise PgUnavailable(f"pg_ctl start failed: {(start.stderr or start.stdout).strip()}")
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                ready = as_owner(bindir / "pg_isready", "-q", "-h", top, "-p", str(port), "-t", "5")
                if ready.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise PgUnavailable(f"the test server did not accept connections within {START_TIMEOUT_S:.0f} s: "
                                        f"{log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.05)  # polling interval, not a wait for the server
            yield PgServer(URL.create("postgresql+psycopg", username="postgres", host="127.0.0.1", port=port,
                                      database="postgres"))
        finally:
            as_owner(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(top, ignore_errors=True)


@contextlib.contextmanager
def server() -> Iterator[PgServer]:
    """The server the tests use: ``VIGIL_TEST_PG_URL`` if set, else a throwaway one."""
    url = os.environ.get(ENV_URL, "").strip()
    if url:
        with existing_server(url) as srv:
            yield srv
    else:
        with throwaway_server() as srv:
            yield srv
