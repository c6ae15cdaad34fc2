"""The controller's shared state: database, CA, the baselines in force, and connected agents."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.errors import UsageError
from common.files import create_owner_only
from controller.baselines import BaselineDoc, decode_baseline, load_baseline
from controller.domain import audit, enrollment, liveness, tickets
from controller.domain.ca import CertificateAuthority
from controller.domain.eol import EolData
from controller.domain.policy import DEFAULT_HEARTBEAT_S, Applicable, applicable_rules
from controller.domain.sweeps import Sweeps
from controller.errors import Conflict
from controller.judges.registry import CHECK_SPECS
from controller.storage.models import Baseline
from controller.storage.serialize import agent_json
from controller.storage.store import (
    check_before_open,
    check_connection,
    checkpoint_and_close,
    make_engine,
    session_factory,
    sqlite_file,
    sqlite_url,
    upgrade,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long the baselines in force are taken as they are before the database is asked again.
BASELINE_RECHECK_S = 1.0
DEFAULT_BASELINE = Path(__file__).parent / "default_baselines" / "tw-securities-linux.yaml"
LOCK_FILE = "controller.lock"
# Where `vigil up --data-dir D` keeps its controller (next to its agent in D/agent).
UP_SUBDIR = "controller"


# -- the data directory ---------------------------------------------------------------------------------


def holds_controller(directory: Path) -> bool:
    """Whether ``directory`` is a controller's data directory: its SQLite database or its CA is there."""
    return (directory / "controller.db").is_file() or (directory / "pki" / "ca.pem").is_file()


def find_data_dir(directory: Path, create: bool = False) -> Path:
    """The controller data directory meant by ``--data-dir directory``.

    That is ``directory`` itself or, for the layout ``vigil up`` creates, ``directory/controller``. A
    directory holding neither is refused (UsageError) unless ``create``: only commands that run a
    controller make a new one, so a mistyped path never gets an empty controller and a CA of its own.
    """
    directory = directory.resolve()
    if holds_controller(directory):
        return directory
    if holds_controller(directory / UP_SUBDIR):
        return directory / UP_SUBDIR
    if create:
        return directory
    raise UsageError(
        f"{directory} holds no controller (no controller.db or pki/ca.pem, there or in {UP_SUBDIR}/); "
        "give the --data-dir of `vigil-controller serve` or `vigil up`"
    )


class DataDirLock:
    """An exclusive lock on a data directory, so that one controller at a time runs on it.

    ``flock`` on ``<data dir>/controller.lock``, which holds the owner's pid: the kernel releases the
    lock when the process ends however it ends, so a crash never leaves a stale lock behind.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(
                f"{self.directory} is in use by another controller (pid {holder}); stop it, or give another "
                "--data-dir"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class ControllerConfig:
    data_dir: Path
    db_url: str | None = None
    grpc_addr: str = "127.0.0.1:7443"
    enroll_addr: str | None = None
    http_addr: str = "127.0.0.1:8080"
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    # An agent silent for this many heartbeats is offline; "lost" follows the baseline's max_silence.
    offline_after_beats: int = 3
    default_lost_after_s: int = 300
    liveness_every_s: float = 5.0

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.data_dir)

    @property
    def enroll_address(self) -> str:
        if self.enroll_addr:
            return self.enroll_addr
        host, _, port = self.grpc_addr.rpartition(":")
        return f"{host}:{int(port) + 1 if int(port) else 0}"


@dataclass
class Controller:
    config: ControllerConfig
    sessions: sessionmaker[Session]
    ca: CertificateAuthority
    is_sqlite: bool
    _baselines: list[BaselineDoc] = field(default_factory=list)
    _baseline_gen: tuple[int, str] = (0, "")
    _baseline_checked: float = float("-inf")  # time.monotonic() of the last look at the database
    # (baseline generation, tags) -> the rules that apply; emptied when the baselines change.
    _rules: dict[tuple[tuple[int, str], tuple[str, ...]], list[Applicable]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    writer: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "vigil-writer"))
    # Called (from any thread) when the baselines changed, so connected agents get a new policy.
    on_policy_change: list[Callable[[], None]] = field(default_factory=list)
    eol: EolData = field(default_factory=EolData)  # the EOL dataset ingest judges with
    # Called with an agent id once its revocation is committed, so that its open stream closes. The
    # composition root (controller/server.py) wires the agent channel here; transports never reach into it.
    on_agent_revoked: list[Callable[[str], None]] = field(default_factory=list)
    # How many agents hold an open stream now (0 without an agent channel); wired like on_agent_revoked.
    agent_streams: Callable[[], int] = field(default=lambda: 0)
    # Sweeps sent from this process; the composition root gives it the agent channel to send through.
    sweeps: Sweeps = field(default_factory=Sweeps)

    @classmethod
    def open(cls, config: ControllerConfig) -> Controller:
        """Open (creating or migrating) the database and the CA. A damaged SQLite database is refused
        (DamagedDatabase) before anything touches it, so it is never served truncated or migrated."""
        notice = check_before_open(config.database_url, config.data_dir)
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if config.database_url == sqlite_url(config.data_dir):
            # Password, API-key and token hashes live here: owner-only before SQLite creates it (its -wal
            # and -shm files take the same mode).
            db_file = config.data_dir / "controller.db"
            create_owner_only(db_file)
            os.chmod(db_file, 0o600)
        engine = make_engine(config.database_url)
        check_connection(engine)
        upgrade(engine)
        ca = CertificateAuthority.load_or_create(config.data_dir / "pki")
        # SQLite has one write lock, so one writer thread; PostgreSQL locks rows, so writers run side by side.
        is_sqlite = engine.dialect.name == "sqlite"
        ctl = cls(
            config=config,
            sessions=session_factory(engine),
            ca=ca,
            is_sqlite=is_sqlite,
            writer=ThreadPoolExecutor(1 if is_sqlite else 4, "vigil-writer"),
            eol=EolData(config.data_dir),  # an operator-imported EOL dataset there wins over the packaged one
        )
        ctl.ensure_default_baseline()
        if notice is not None:
            # The first write replaces the frame SQLite ignored, so this is recorded once, by whichever
            # command opened the database first after it was left so.
            with ctl.sessions.begin() as s:
                audit.record(s, "system", "store.last_transaction_ignored", "database",
                             str(sqlite_file(config.database_url)), {"notice": notice})
        return ctl

    def close(self) -> None:
        """After the last writer stopped: empty the WAL into the database file and close the connections,
        so that after a clean stop ``controller.db`` alone holds everything (a file copy is a backup)."""
        engine = self.sessions.kw.get("bind")
        if engine is not None:
            checkpoint_and_close(engine)

    def ensure_default_baseline(self) -> None:
        with self.sessions.begin() as s:
            if s.execute(select(func.count()).select_from(Baseline)).scalar_one() == 0:
                text = DEFAULT_BASELINE.read_text()
                self._store_baseline(s, load_baseline(text, DEFAULT_BASELINE.name, CHECK_SPECS), text, "system")

    # -- baselines -------------------------------------------------------------------------------
    def _store_baseline(self, s: Session, doc: BaselineDoc, source: str, actor: str) -> Baseline:
        row = s.get(Baseline, doc.name)
        now = dt.datetime.now(dt.UTC)
        if row is not None:
            if doc.version <= row.version:
                raise Conflict(
                    f"baseline {doc.name!r} version {doc.version} must be greater than the running version "
                    f"{row.version}"
                )
            old = row.version
            row.version, row.source, row.document = doc.version, source, doc.to_document()
            row.applied_at, row.applied_by = now, actor
        else:
            old = None
            row = Baseline(name=doc.name, version=doc.version, source=source, document=doc.to_document(),
                           applied_at=now, applied_by=actor)
            s.add(row)
        audit.record(s, actor, "baseline.apply", "baseline", doc.name,
                     {"version": doc.version, "previous_version": old, "rules": [r.id for r in doc.rules]})
        return row

    def apply_baseline(
        self, data: str | bytes, filename: str, actor: str, expect_name: str | None = None
    ) -> BaselineDoc:
        """Validate as a whole, then replace; on any error nothing changes.

        ``data`` is the file as given: bytes are decoded strictly (a byte that is not UTF-8 is refused
        by its offset, never replaced), and a file over ``baselines.MAX_BYTES`` is refused unparsed.
        """
        text = decode_baseline(data, filename)
        doc = load_baseline(text, filename, CHECK_SPECS)
        if expect_name is not None and doc.name != expect_name:
            raise UsageError(f"{filename}: the file is baseline {doc.name!r}, not {expect_name!r}")
        with self.sessions.begin() as s:
            self._store_baseline(s, doc, text, actor)
        self.policy_changed()
        return doc

    def policy_changed(self) -> None:
        with self._lock:
            self._baseline_gen = (-1, "")
            self._baseline_checked = float("-inf")
        for cb in list(self.on_policy_change):
            cb()

    def baselines(self) -> list[BaselineDoc]:
        """The baselines in force, re-read only when another writer (or replica) changed them.

        The database is asked at most once per BASELINE_RECHECK_S (a change applied here is seen at
        once; one applied on another replica within that time), not once per ingest batch.
        """
        with self._lock:
            if time.monotonic() - self._baseline_checked < BASELINE_RECHECK_S:
                return list(self._baselines)
        with self.sessions() as s:
            gen_row = s.execute(select(func.count(), func.max(Baseline.applied_at))).one()
        gen = (int(gen_row[0]), str(gen_row[1]))
        with self._lock:
            if gen != self._baseline_gen:
                with self.sessions() as s:
                    rows = s.execute(select(Baseline)).scalars().all()
                    self._baselines = [BaselineDoc.from_document(r.document) for r in rows]
                self._baseline_gen = gen
                self._rules = {}
            self._baseline_checked = time.monotonic()
            return list(self._baselines)

    def rules_for(self, tags: list[str]) -> list[Applicable]:
        """The rules that apply to an agent with ``tags``, computed once per set of baselines and tags."""
        docs = self.baselines()
        with self._lock:
            key = (self._baseline_gen, tuple(sorted(set(tags))))
            cached = self._rules.get(key)
        if cached is None:
            cached = applicable_rules(docs, tags)
            with self._lock:
                if key[0] == self._baseline_gen:  # not computed from baselines replaced meanwhile
                    self._rules[key] = cached
        return list(cached)

    # -- agents ------------------------------------------------------------------------------------
    def revoke_agent(self, agent_id: str, actor: str, reason: str) -> dict[str, Any]:
        """Revoke an agent (audited); after the commit its open stream, if any, is closed. Returns the agent's
        JSON form. Raises NotFound for an unknown agent; revoking twice changes nothing."""
        with self.sessions.begin() as s:
            out = agent_json(enrollment.revoke(s, agent_id, actor, reason))
        for cb in list(self.on_agent_revoked):
            cb(agent_id)
        return out

    # -- periodic work ----------------------------------------------------------------------------
    def housekeeping(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """Work that follows the clock rather than reports: lapsed exceptions give their findings back
        to the ticket workflow. Called from the controller's periodic round; idempotent."""
        with self.sessions.begin() as s:
            reopened = tickets.release_lapsed_exceptions(s, now)
        return {"tickets_reopened_by_lapsed_exceptions": reopened}

    def check_liveness(self, now: dt.datetime | None = None) -> dict[str, int]:
        """One liveness round: silent agents become offline, then lost with a ticket; rules without results
        within their interval become unknown (domain/liveness.py)."""
        when = now or dt.datetime.now(dt.UTC)
        docs = self.baselines()  # once per round, not once per agent
        offline_after = dt.timedelta(seconds=self.config.heartbeat_s * self.config.offline_after_beats)
        with self.sessions.begin() as s:
            applied = {str(n): at for n, at in s.execute(select(Baseline.name, Baseline.applied_at))}
            return liveness.check_liveness(s, docs, offline_after, self.config.default_lost_after_s, when, applied)

    # -- running database work off the event loop ----------------------------------------------
    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.writer, fn, *args)
