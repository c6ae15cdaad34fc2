"""A damaged fim state database: what can still be read of it, and the first scan after the rebuild.

Imported only when a state database was found damaged: the agent that never meets one never loads it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from checks.fim.events import display
from checks.fim.hashing import DamagedPage, decode_page
from checks.fim.state import SCHEMA_VERSION, StateDB

# Meta keys worth keeping from a damaged database (the background copy pass starts over).
_SALVAGED_META = ("schema", "config", "baseline", "baseline_at", "last_verify_at", "rehash_cursor", "rehash_carry",
                  "cap_reached", "dirty_roots")
# Row ids probed one by one when the pages table cannot be read in one pass (a damaged b-tree page).
_MAX_PROBES = 2_000_000
_PROBE_RUN = 4096


@dataclass
class Salvage:
    """What could still be read from a damaged state database."""

    rows: list[tuple[bytes, bytes, int, int, int, bytes]] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    # Pages that could not be read or decoded; the directories of those whose parent is known.
    unreadable: int = 0
    lost: set[bytes] = field(default_factory=set)


def salvage(path: Path) -> Salvage:
    """Read what still decodes from the (damaged, moved aside) database at ``path``, read-only: the
    pages that SQLite can read and :func:`decode_page` accepts, and the meta rows."""
    out = Salvage()
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return out
    try:
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:  # not a database any more (a damaged header): nothing to read
            out.unreadable = 1
            return out
        with contextlib.suppress(sqlite3.Error):
            for key, value in db.execute("SELECT key, value FROM meta").fetchall():
                if key in _SALVAGED_META:
                    out.meta[str(key)] = str(value)
        try:
            rows = db.execute("SELECT parent, first, n, dirs, pending, data FROM pages ORDER BY rowid").fetchall()
        except sqlite3.Error:
            rows = _probe(db, out)
        for parent, first, n, dirs, pending, data in rows:
            try:
                decode_page(bytes(data))
            except DamagedPage:
                out.unreadable += 1
                out.lost.add(bytes(parent))
                continue
            out.rows.append((bytes(parent), bytes(first), int(n), int(dirs), int(pending), bytes(data)))
    finally:
        db.close()
    if out.meta.get("schema") != SCHEMA_VERSION:  # no schema we know: none of it can be trusted
        return Salvage(unreadable=out.unreadable + len(out.rows))
    return out


def _probe(db: sqlite3.Connection, out: Salvage) -> list[tuple[object, ...]]:
    """The rows of ``pages`` read one row id at a time, skipping those on damaged b-tree pages."""
    try:
        top: int | None = int(db.execute("SELECT max(rowid) FROM pages").fetchone()[0] or 0)
    except sqlite3.Error:
        top = None  # the right edge of the table is damaged too: probe until a long run finds nothing
    rows: list[tuple[object, ...]] = []
    failed = misses = 0  # in the current run of row ids that gave nothing
    rowid = 0
    while rowid < (top if top is not None else _MAX_PROBES):
        rowid += 1
        try:
            row = db.execute("SELECT parent, first, n, dirs, pending, data FROM pages WHERE rowid=?",
                             (rowid,)).fetchone()
        except sqlite3.Error:
            failed += 1
            row = None
        else:
            misses += row is None
        if row is not None:
            out.unreadable += failed  # row ids that failed between rows that read: damaged pages
            failed = misses = 0
            rows.append(tuple(row))
        elif top is None and failed + misses > _PROBE_RUN:
            break
    if failed:
        out.unreadable += 1  # the damaged tail: at least one page of records
    return rows


class Rebuild:
    """The first full scan after a damaged state database was replaced by what could be read of it.

    A directory is *lost* when its records could not be read: it has no page now and either was known
    as a directory, is a watched root, or lies in a lost directory (or it is a page known to be lost).
    Its entries are recorded without events (a rebuilt baseline) and named in a notice; everything
    else is compared with the records read, and what differs is reported as usual.
    """

    def __init__(self, db: StateDB, info: dict[str, object], roots: list[bytes]) -> None:
        self.unreadable = int(str(info.get("unreadable", 0)))
        raw_lost = info.get("lost", [])
        self.lost = {bytes.fromhex(str(h)) for h in raw_lost} if isinstance(raw_lost, list) else set()
        self.parents, self.dirs = db.known_directories()
        self.roots = set(roots)
        self._memo: dict[bytes, bool] = {}
        # Lost directories, and how many entries each recorded without an event.
        self.recorded: dict[bytes, int] = {}
        # A root whose own record was lost is named for itself, not for the directory holding it.
        self.named: dict[bytes, bytes] = {}

    def is_lost(self, d: bytes) -> bool:
        got = self._memo.get(d)
        if got is None:
            if d in self.lost:
                got = True
            elif self.unreadable == 0 or d in self.parents:
                got = False
            elif d in self.dirs or d in self.roots:
                got = True
            else:
                parent = os.path.dirname(d)
                got = parent != d and parent in self._memo and self._memo[parent]
            self._memo[d] = got
        return got

    def notice(self) -> str | None:
        if not self.recorded and not self.unreadable:
            return None
        names = sorted(self.recorded)
        shown = ", ".join(display(n) for n in names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        entries = sum(self.recorded.values())
        if not names:
            return (f"the fim state was rebuilt from its damaged database: {self.unreadable} pages of records "
                    "could not be read, but no watched directory lost its records")
        return (f"the fim state was rebuilt from its damaged database: the records of {len(names)} "
                f"director{'ies' if len(names) != 1 else 'y'} could not be read ({shown}); their {entries} "
                "entries were recorded as a rebuilt baseline, so changes made there before now cannot be told")
