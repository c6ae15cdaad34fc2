"""Is a SQLite database we own safe to use? Checked before use, by the agent and the controller.

SQLite itself is silent about two kinds of damage that lose committed data:

* A damaged frame in the ``-wal`` file. SQLite replays the WAL only up to the first frame whose
  checksum fails and ignores the rest without an error, so one flipped byte in an early transaction
  hides every later transaction: the database opens "fine", just truncated. We validate the WAL
  ourselves against the documented format (https://www.sqlite.org/fileformat2.html#walformat).
* A damaged page in the main file, which SQLite reports only when a query happens to read it;
  ``PRAGMA quick_check`` reads every page.

What is *not* damage: a torn tail (the last, uncommitted transaction cut short by a crash: SQLite
rightly ignores it, nothing committed is lost) and frames carrying other salts (leftovers of an earlier
WAL generation that SQLite overwrites from the start after a checkpoint).

One case the format cannot decide: a frame of the *last* transaction (the one whose commit frame ends
the log) failing its checksum is what a crash while that commit was being written leaves (nothing
acknowledged is lost: with ``synchronous=FULL`` a commit returns only after its frames are on disk, and
until then the kernel may write them in any order), and also what one flipped byte in the last
committed transaction leaves. :func:`inspect` returns it as a ``notice`` for the caller to log:
refusing every database a crash left mid-commit would be wrong, saying nothing would hide a loss.

Both functions must run before this process opens the database: closing a descriptor of a file drops
every POSIX lock the process holds on it, SQLite's included (see ``common.files``). ``check`` only reads
the ``-wal`` file (SQLite keeps no locks on it) and opens the database through SQLite, read-only
(``mode=ro``: a missing database is not created; SQLite may create the empty ``-wal`` and ``-shm`` it
needs to read a WAL database, and they are left in place).
"""

from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_WAL_HEADER = 32
_FRAME_HEADER = 24
_WAL_MAGIC = (0x377F0682, 0x377F0683)  # the low bit says the checksums are big-endian
_WAL_VERSION = 3007000
_COMPANIONS = ("-wal", "-shm", "-journal")

__all__ = ["Inspection", "check", "inspect", "move_aside"]


@dataclass(frozen=True)
class Inspection:
    """``problem``: one sentence saying what is damaged, or None. ``notice``: one sentence about the last
    transaction of the WAL that SQLite will ignore and that may have been committed, or None."""

    problem: str | None
    notice: str | None = None


def check(path: Path, *, thorough: bool = False) -> str | None:
    """Return None when the database at ``path`` (with its ``-wal``) is intact, else one sentence
    saying what is wrong. A missing database with no ``-wal`` is intact (it will be created).

    ``thorough`` runs ``integrity_check`` instead of ``quick_check``: it also compares every index with
    its table (a damaged index entry makes lookups silently miss rows), at about twice the cost."""
    return inspect(path, thorough=thorough).problem


def inspect(path: Path, *, thorough: bool = False) -> Inspection:
    """:func:`check`, with the notice of a last commit frame that fails its checksum (see above)."""
    wal = _companion(path, "-wal")
    if not path.exists():
        if wal.exists() and wal.stat().st_size > 0:
            return Inspection(f"{path} is missing but its write-ahead log {wal.name} is not")
        return Inspection(None)
    wal_problem, notice = _check_wal(wal) if wal.exists() and wal.stat().st_size > 0 else (None, None)
    if wal_problem is not None:
        return Inspection(f"{wal}: {wal_problem}; SQLite would silently open the database without them")
    if notice is not None:
        notice = (f"{wal}: {notice}; SQLite ignores that transaction. Either a crash cut it short while it was "
                  "being committed (then nothing acknowledged is lost) or the disk damaged the last committed "
                  "transaction (then it is lost)")
    return Inspection(_quick_check(path, "integrity_check" if thorough else "quick_check"), notice)


def move_aside(path: Path, now: datetime | None = None, *, label: str = "damaged") -> Path:
    """Rename ``path`` and its ``-wal``/``-shm``/``-journal`` to ``<name>.<label>-<UTC time>[-N]``
    (the companions keep their suffix after the new name, so SQLite can still open the moved copy)
    and return the new path of the main file. N makes the name unique."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{path.name}.{label}-{stamp}"
    n = 0
    while True:
        target = path.with_name(base if n == 0 else f"{base}-{n}")
        if not any(_companion(target, s).exists() for s in ("", *_COMPANIONS)):
            break
        n += 1
    for suffix in _COMPANIONS:
        source = _companion(path, suffix)
        if source.exists():
            source.rename(_companion(target, suffix))
    if path.exists():
        path.rename(target)
    return target


def _companion(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    """SQLite's WAL checksum: over 32-bit words taken in pairs, cumulative from (s0, s1)."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _valid_page_size(size: int) -> bool:
    return 512 <= size <= 65536 and size & (size - 1) == 0


def _check_wal(wal: Path) -> tuple[str | None, str | None]:
    """(damage, notice) of a -wal file; see the module's docstring."""
    with open(wal, "rb") as f:  # frame by frame: a WAL a checkpoint could not empty may be large
        header = f.read(_WAL_HEADER)
        if len(header) < _WAL_HEADER:
            return None, None  # a header cut short: no frame can be in it
        magic, version, page_size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", header)
        big_endian = magic == _WAL_MAGIC[1]
        if not (magic in _WAL_MAGIC and version == _WAL_VERSION and _valid_page_size(page_size)
                and _checksum(header[:24], big_endian, 0, 0) == (c1, c2)):
            smallest = page_size if _valid_page_size(page_size) else 512
            if wal.stat().st_size >= _WAL_HEADER + _FRAME_HEADER + smallest:
                return "the log's header is damaged, so every transaction in it would be ignored", None
            return None, None
        frame_size = _FRAME_HEADER + page_size
        s0, s1 = c1, c2
        frame_no, failed_at, commits_after = 0, 0, 0
        while len(frame := f.read(frame_size)) == frame_size:
            frame_no += 1
            pgno, commit, f_salt1, f_salt2, f_c1, f_c2 = struct.unpack(">6I", frame[:_FRAME_HEADER])
            ours = (f_salt1, f_salt2) == (salt1, salt2)
            if failed_at == 0:
                s0, s1 = _checksum(frame[:8], big_endian, s0, s1)
                s0, s1 = _checksum(frame[_FRAME_HEADER:], big_endian, s0, s1)
                if not ours or pgno == 0 or (s0, s1) != (f_c1, f_c2):
                    failed_at, commits_after = frame_no, int(ours and commit != 0)
            elif ours and commit != 0:
                commits_after += 1
                if commits_after >= 2:
                    # A commit after the damaged frame's own one returned after an fsync of everything
                    # before it: the damaged frame was on disk, committed, and not torn by a crash.
                    return (f"frame {failed_at} is damaged, so the committed transactions after it "
                            f"(up to frame {frame_no} at least) would be ignored"), None
    if commits_after:
        return None, f"frame {failed_at}, in the last transaction, fails its checksum"
    return None, None


def _quick_check(path: Path, pragma: str) -> str | None:
    # Read-only: nothing is written to the database or its WAL. SQLite may create an empty -wal and the
    # -shm it needs even to read a WAL database; they are left alone, as a writer opening the database
    # meanwhile may already be using them.
    uri = f"{path.absolute().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            # A small page cache: the check reads every page once, and memory the process got for a
            # larger cache stays with it (the agent's idle footprint) after the connection is closed.
            conn.execute("PRAGMA cache_size=-128")
            rows = conn.execute(f"PRAGMA {pragma}").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return f"{path}: {exc}"
    answers = [str(r[0]) for r in rows]
    if answers != ["ok"]:
        shown = "; ".join(answers[:3]) + ("; ..." if len(answers) > 3 else "")
        return f"{path} fails SQLite's integrity check: {shown}"
    return None
