"""Engine and session set-up, and schema migration at start-up.

Two databases are supported: SQLite (the default, one file under the data directory) and PostgreSQL
through psycopg 3 (``postgresql://`` or ``postgresql+psycopg://``). The same Alembic migrations build
both schemas.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from common import sqlite_integrity
from common.errors import UsageError, VigilError

log = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).parent / "migrations"
# Seconds to wait for a PostgreSQL server before start-up fails (unless the URL sets connect_timeout).
PG_CONNECT_TIMEOUT_S = 10
# Seconds a PostgreSQL writer waits for a lock (unless the URL sets options), as SQLite's busy_timeout.
PG_LOCK_TIMEOUT_S = 30
# The key of the advisory lock held while migrating (the audit log uses another one).
_PG_MIGRATION_LOCK_KEY = 0x7669676D  # "vigm"


class DatabaseUnavailable(VigilError):
    """The database named by the URL cannot be reached or refuses us; the message names it."""


class DamagedDatabase(VigilError):
    """The SQLite file (or its write-ahead log) is damaged: the controller will not serve it."""


# Up to this size the database is checked with integrity_check (indexes against their tables too, about
# 3 s per GiB), above it with quick_check (every page, about half that).
THOROUGH_CHECK_MAX_BYTES = 2**30
# Where the error message sends an operator whose database is damaged.
RESTORE_DOC = "docs/operations.md#restore"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'controller.db').resolve()}"


def parse_url(url: str) -> URL:
    """The URL the engine is built from: a plain ``postgresql://`` (or ``postgres://``) means psycopg 3,
    the driver Vigil ships with, where SQLAlchemy on its own would pick psycopg2."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        shown = re.sub(r":[^:@/]*@", ":***@", url)  # whatever sits where a password would
        raise UsageError(f"--db {shown!r}: not a database URL (expected sqlite:///FILE or "
                         "postgresql://USER@HOST/DATABASE)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise UsageError(f"--db {safe_url(url)}: unsupported database {parsed.get_backend_name()!r} "
                         "(Vigil runs on sqlite or postgresql)")
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL as it may be shown to a user or written to a log: without its password."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparsable URL>"
    return parsed.render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets the API read while ingest writes; synchronous=FULL because an acknowledged
            # result must survive a power cut.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    if "options" not in parsed.query:
        # As SQLite's busy_timeout: a writer waits for a lock at most this long, then its transaction
        # fails and is retried, rather than a stuck transaction blocking every writer for ever.
        connect_args["options"] = f"-c lock_timeout={PG_LOCK_TIMEOUT_S}s"
    try:
        engine = create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args)
    except (ImportError, NoSuchModuleError):
        if parsed.get_driver_name() != "psycopg":
            raise UsageError(f"--db {safe_url(parsed)}: the driver {parsed.get_driver_name()!r} is not installed; "
                             "Vigil ships psycopg 3: write postgresql://") from None
        raise UsageError(f"--db {safe_url(parsed)}: the PostgreSQL driver (psycopg 3) is not installed; "
                         "install vigil[controller,postgresql]") from None
    event.listen(engine, "before_cursor_execute", _without_nul, retval=True)
    return engine


# PostgreSQL's text types cannot hold U+0000, which an agent's strings (a status message, a hostname) or a
# comment may carry; SQLite stores it. Rather than a batch that fails on every resend, such a string is
# stored with U+FFFD in its place; the report as received stays byte for byte in results.raw (bytea).
NUL, NUL_STANDIN = "\x00", "\ufffd"


def _nul_free(value: Any) -> Any:
    return value.replace(NUL, NUL_STANDIN) if isinstance(value, str) and NUL in value else value


def _nul_free_params(params: Any) -> Any:
    if isinstance(params, Mapping):
        if any(isinstance(v, str) and NUL in v for v in params.values()):
            return {k: _nul_free(v) for k, v in params.items()}
        return params
    if isinstance(params, (list, tuple)) and any(isinstance(v, str) and NUL in v for v in params):
        return type(params)(_nul_free(v) for v in params)
    return params


def _without_nul(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                 executemany: bool) -> tuple[str, Any]:
    if executemany and isinstance(parameters, (list, tuple)):
        return statement, [_nul_free_params(p) for p in parameters]
    return statement, _nul_free_params(parameters)


def check_connection(engine: Engine) -> None:
    """Connect once, so that an unreachable server or a refused login is one clear error at start-up."""
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        raise DatabaseUnavailable(f"cannot open the database {safe_url(engine.url)}: {_reason(exc)}") from None


def _reason(exc: DBAPIError) -> str:
    """The driver's own first line (e.g. 'connection refused', 'password authentication failed')."""
    text = str(exc.orig).strip() if exc.orig is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent); a database that refuses (no right to create
    tables, say) is one clear error and, PostgreSQL migrating in one transaction, leaves nothing half done."""
    try:
        _upgrade(engine)
    except DBAPIError as exc:
        raise DatabaseUnavailable(f"cannot migrate the database {safe_url(engine.url)}: {_reason(exc)}") from None


def _upgrade(engine: Engine) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas starting together against one database migrate one after the other; PostgreSQL
            # runs the whole upgrade in this one transaction, so the next one finds the schema at head.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


# -- integrity at start, clean stop ---------------------------------------------------------------------


def sqlite_file(url: str) -> Path | None:
    """The file a ``sqlite:///FILE`` URL names; None for PostgreSQL (the server owns its integrity) and for
    an in-memory database."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def check_before_open(url: str, data_dir: Path) -> str | None:
    """Refuse (DamagedDatabase) a SQLite database that is damaged, before anything opens or migrates it;
    return the notice of a last WAL transaction SQLite will ignore (logged here too), else None.

    SQLite would open a database whose WAL holds a damaged frame without an error, silently without the
    transactions after it; served, the controller would have "lost" them for good (and the audit log
    would verify, shorter). The operator decides what to do: nothing is moved aside.
    """
    path = sqlite_file(url)
    if path is None:
        return None
    thorough = path.is_file() and path.stat().st_size <= THOROUGH_CHECK_MAX_BYTES
    seen = sqlite_integrity.inspect(path, thorough=thorough)
    if seen.problem is not None or seen.notice is not None:
        # A controller still running elsewhere (an admin command beside `serve`) may be rewriting the WAL
        # while it is read: only what is seen twice counts.
        seen = sqlite_integrity.inspect(path, thorough=thorough)
    problem = seen.problem
    if seen.notice is not None:
        log.warning("%s. Starting anyway; if the controller was not stopped by a crash or power loss, compare "
                    "with the last backup (%s)", seen.notice, RESTORE_DOC)
    if problem is not None:
        raise DamagedDatabase(
            f"{problem}. The controller will not serve a damaged database: stop, keep the damaged files for "
            f"inspection, and restore the last backup with `vigil-controller restore --data-dir {data_dir} "
            f"--from BACKUP` ({RESTORE_DOC})")
    return seen.notice


def checkpoint_and_close(engine: Engine) -> None:
    """On a clean stop, after the last writer stopped: move everything from the WAL into the database file
    (``wal_checkpoint(TRUNCATE)``), so that ``controller.db`` alone holds every row, then close the pool."""
    try:
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                busy, _log, _done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
                if busy:
                    log.warning("the database's write-ahead log could not be emptied at stop (another "
                                "process is reading it); it is kept and replayed at the next start")
    except DBAPIError as exc:
        log.warning("checkpointing the database at stop failed: %s", _reason(exc))
    finally:
        engine.dispose()


# -- a store that cannot be written -------------------------------------------------------------------

# SQLite's messages and PostgreSQL's SQLSTATEs for "the write failed because of where the data lives",
# not because of what was written: disk full, a read-only file or server, an I/O error.
_SQLITE_UNWRITABLE = ("database or disk is full", "attempt to write a readonly database", "disk i/o error",
                      "unable to open database file")
_PG_UNWRITABLE = {"53100": "the database server's disk is full", "25006": "the database is read-only",
                  "58030": "the database server has an I/O error", "53200": "the database server is out of memory"}


def unwritable_reason(exc: BaseException) -> str | None:
    """If ``exc`` says the store cannot be written (disk full, read-only, I/O error), one sentence saying so
    for a 503; else None (the error is about the request or a bug, and is reported as such)."""
    if not isinstance(exc, DBAPIError) or exc.orig is None:
        return None
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        text_ = str(orig).strip().lower()
        if any(m in text_ for m in _SQLITE_UNWRITABLE):
            return (f"the controller's database cannot be written ({str(orig).strip()}); nothing was "
                    "changed: free space on its file system or fix its permissions, then retry")
        return None
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str) and state in _PG_UNWRITABLE:
        return (f"the controller's database cannot be written ({_PG_UNWRITABLE[state]}: {_reason(exc)}); "
                "nothing was changed: retry once it is fixed")
    return None


# -- backup and restore (SQLite) ----------------------------------------------------------------------

# The tables a backup summary counts: what an operator would miss first.
SUMMARY_TABLES = ("agents", "results", "findings", "tickets", "ticket_events", "users", "api_keys",
                  "baselines", "audit_log")


@dataclass
class CopyReport:
    """What a checked copy of a controller database holds."""

    path: Path
    revision: str
    rows: dict[str, int]
    size: int
    sha256: str


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def copy_sqlite(source: Path, dest: Path) -> None:
    """A consistent copy of the live database ``source`` (with what its WAL holds) into the new file
    ``dest``, through SQLite's online backup API: writers go on meanwhile, the copy is one snapshot. The
    copy is one self-contained file (rollback journal, no WAL beside it)."""
    src = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
            dst.commit()
        finally:
            dst.close()
    finally:
        src.close()
    with open(dest, "rb") as f:
        os.fsync(f.fileno())


def check_copy(path: Path) -> CopyReport:
    """Check a backup copy of a controller database: SQLite's full integrity check, a Vigil controller
    schema at a revision this version knows. Raises UsageError naming the file and the problem.
    The audit chain is checked by the caller (the domain's verify) on :func:`plain_engine`."""
    problem = sqlite_integrity.check(path)
    if problem is not None:
        raise UsageError(f"{problem}; it cannot be used as a controller database")
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        answer = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if answer != ["ok"]:
            raise UsageError(f"{path} fails SQLite's integrity check: {'; '.join(answer[:3])}")
        tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alembic_version" not in tables or not {"audit_log", "agents"} <= tables:
            raise UsageError(f"{path} is a SQLite database but not a Vigil controller's (no controller schema)")
        revs = [str(r[0]) for r in conn.execute("SELECT version_num FROM alembic_version")]
        if len(revs) != 1 or revs[0] not in known_revisions():
            raise UsageError(f"{path}: schema revision {', '.join(revs) or 'none'} is not one this version of "
                             "Vigil knows (a backup from a newer controller?)")
        rows = {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])
                for t in SUMMARY_TABLES if t in tables}
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path}: {exc}; it cannot be used as a controller database") from None
    finally:
        conn.close()
    return CopyReport(path, revs[0], rows, path.stat().st_size, sha256_of(path))


def plain_engine(path: Path) -> Engine:
    """An engine on a database file that changes nothing about it on connect (no WAL switch), for checking
    and auditing a copy."""
    return create_engine(f"sqlite:///{path.absolute()}", poolclass=NullPool, connect_args={"timeout": 30})


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
