"""``vigil-controller backup`` and ``restore``: the database copied while the controller runs, checked, and
put back (docs/operations.md#backup-and-restore).

A backup is one self-contained SQLite file made with SQLite's online backup API (one consistent snapshot
while agents keep reporting), then checked as a restore would check it: SQLite's integrity check, a
controller schema this version knows, the audit chain end to end. The CA under ``DATA_DIR/pki/`` is not
in it: it is backed up as files, once (it changes only when it is created).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from sqlalchemy.orm import Session

from common.errors import UsageError
from common.sqlite_integrity import move_aside
from controller.storage.store import (
    CopyReport,
    DamagedDatabase,
    check_copy,
    copy_sqlite,
    parse_url,
    plain_engine,
    safe_url,
    sqlite_file,
    sqlite_url,
)

_PKI_REMINDER = ("keep a copy of {pki} with it (the CA: without it, every agent must enroll again); "
                 "it changes only when created, so one copy is enough")


def _database(args: argparse.Namespace, create: bool) -> tuple[Path, str, Path | None]:
    """The data directory, the database URL and, for SQLite, its file."""
    from controller.core import find_data_dir

    data_dir = find_data_dir(args.data_dir, create=create)
    if data_dir != args.data_dir.resolve():
        sys.stderr.write(f"vigil-controller: using the controller in {data_dir}\n")
    url = args.db or sqlite_url(data_dir)
    return data_dir, url, sqlite_file(url)


def _pg_command(url: str, tool: str, file: str) -> str:
    """The pg_dump / pg_restore command line for ``url``, without its password (the tool reads it from
    ~/.pgpass or PGPASSWORD)."""
    u = parse_url(url)
    parts = [tool, "--format=custom"]
    if tool == "pg_restore":
        parts += ["--clean", "--if-exists", "--single-transaction"]
    parts.append(f"--file={file}" if tool == "pg_dump" else "")
    if u.host:
        parts.append(f"--host={u.host}")
    if u.port:
        parts.append(f"--port={u.port}")
    if u.username:
        parts.append(f"--username={u.username}")
    parts.append(f"--dbname={u.database or ''}")
    if tool == "pg_restore":
        parts.append(file)
    return " ".join(p for p in parts if p)


def _verify_audit(path: Path) -> tuple[int, str]:
    from controller.domain import audit

    engine = plain_engine(path)
    try:
        with Session(engine) as s:
            res = audit.verify(s)
    finally:
        engine.dispose()
    if not res.ok:
        raise UsageError(f"{path}: the audit log does not verify: entry {res.first_bad_seq}: {res.reason} "
                         f"({res.entries} entries verified before it)")
    return res.entries, res.head


def _record(path: Path, actor: str, action: str, object_id: str, details: dict[str, object]) -> None:
    """One audit entry in the database at ``path`` (live or just restored), in its own transaction."""
    from controller.domain import audit

    engine = plain_engine(path)
    try:
        with Session(engine) as s, s.begin():
            audit.record(s, actor, action, "database", object_id, details)
    finally:
        engine.dispose()


def _summary(report: CopyReport, entries: int, head: str) -> str:
    rows = ", ".join(f"{table} {n}" for table, n in report.rows.items())
    return (f"  schema revision {report.revision}; rows: {rows}\n"
            f"  audit log verified: {entries} entries, head {head[:16]}\n"
            f"  size {report.size} bytes, sha256 {report.sha256}\n")


def backup(args: argparse.Namespace, actor: str, prog: str) -> int:
    data_dir, url, db_file = _database(args, create=False)
    if db_file is None:
        sys.stderr.write(
            f"{prog}: error: the database {safe_url(url)} is PostgreSQL: back it up with the server's own tool, "
            f"e.g.\n  {_pg_command(url, 'pg_dump', str(args.out))}\nand "
            + _PKI_REMINDER.format(pki=data_dir / "pki") + "\n")
        return 1
    if not db_file.is_file():
        raise UsageError(f"{db_file}: no such database to back up")
    out: Path = args.out.absolute()
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists; give another --out, or --force to overwrite it")
    if out.resolve() in {db_file.resolve(), *(Path(f"{db_file}{s}").resolve() for s in ("-wal", "-shm"))}:
        raise UsageError(f"--out {out} is the live database itself")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the directory {out.parent} does not exist")
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        copy_sqlite(db_file, partial)
        try:
            report = check_copy(partial)
            entries, head = _verify_audit(partial)
        except UsageError as exc:
            # The live database itself is damaged (or its audit log broken): no backup of it is written.
            why = str(exc).replace(str(partial), "the copy")
            raise DamagedDatabase(f"the copy of {db_file} does not check: {why}; nothing was written to {out}; "
                                  "see docs/operations.md#damaged-files") from None
        os.replace(partial, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        with contextlib.suppress(FileNotFoundError):
            Path(f"{partial}-journal").unlink()
    report.path = out
    # Recorded in the live database, after the copy: the backup holds everything up to this entry.
    _record(db_file, actor, "database.backup", str(out),
            {"file": str(out), "sha256": report.sha256, "size": report.size, "audit_entries": entries,
             "rows": report.rows})
    sys.stdout.write(f"backup written to {out}, checked:\n" + _summary(report, entries, head)
                     + "  " + _PKI_REMINDER.format(pki=data_dir / "pki") + "\n")
    return 0


def _same_owner_as(path: Path, data_dir: Path) -> None:
    """Run as root (as a restore often is), give the restored file the data directory's owner, so a
    controller running as its own user can write it."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        st = data_dir.stat()
        os.chown(path, st.st_uid, st.st_gid)


def restore(args: argparse.Namespace, actor: str, prog: str) -> int:
    from controller.core import DataDirLock

    data_dir, url, db_file = _database(args, create=True)
    source: Path = args.source.absolute()
    if db_file is None:
        sys.stderr.write(
            f"{prog}: error: the database {safe_url(url)} is PostgreSQL: restore a pg_dump with the server's "
            f"own tool while every controller is stopped, e.g.\n  {_pg_command(url, 'pg_restore', str(source))}\n")
        return 1
    if not source.is_file():
        raise UsageError(f"--from {source}: no such file")
    if source.resolve() == db_file.resolve():
        raise UsageError(f"--from {source} is the database it would replace")
    # No controller may run on the directory while its database is replaced (held until we return).
    lock = DataDirLock(data_dir).acquire()
    try:
        _same_owner_as(lock.path, data_dir)  # the controller takes this lock too, as its own user
        checked = check_copy(source)
        _verify_audit(source)
        incoming = db_file.with_name(f".{db_file.name}.restoring-{os.getpid()}")
        try:
            # Through the backup API, so a source that has a WAL beside it is copied with what it holds.
            copy_sqlite(source, incoming)
            report = check_copy(incoming)
            entries, head = _verify_audit(incoming)
            _same_owner_as(incoming, data_dir)
            replaced = move_aside(db_file, label="replaced") if db_file.exists() else None
            os.replace(incoming, db_file)
        finally:
            for leftover in (incoming, Path(f"{incoming}-journal")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        _record(db_file, actor, "database.restore", str(source),
                {"file": str(source), "sha256": checked.sha256, "audit_entries": entries,
                 "replaced": str(replaced) if replaced else None})
    finally:
        lock.release()
    report.size, report.sha256 = checked.size, checked.sha256  # what was restored: the file as given
    sys.stdout.write(f"restored {source} into {db_file} (the restore is audit entry {entries + 1}):\n"
                     + _summary(report, entries, head))
    if replaced is not None:
        sys.stdout.write(f"  the database it replaced is kept as {replaced}\n")
    if not (data_dir / "pki" / "ca.pem").is_file():
        sys.stdout.write(f"  {data_dir / 'pki'} is missing: put back the CA from its backup before `serve`, "
                         "or a new CA is created and every agent must enroll again\n")
    sys.stdout.write("  the next `vigil-controller serve` migrates it if it is from an older version\n")
    return 0
