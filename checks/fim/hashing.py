"""Reading one path into a record: stat, sha256, and (when asked) the content for diffs.

This module is what the hashing worker processes import, so it stays light (no protobuf, no SQLite):
it also holds the work those processes do for a baseline (:func:`run_task`, :func:`worker_main`).

A record is a ``bytes`` blob: a fixed 45-byte head ``(type, size, mode, uid, gid, mtime_ns, ctime_ns,
inode)``, the 32-byte sha256 (zeros when not a regular file) and the symlink target. Comparing the
head of a fresh ``lstat`` with the head of the stored record is the whole cost of verifying an
unchanged file, which is why it is one ``bytes`` comparison and not a field-by-field one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
import sys
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import accumulate, pairwise
from typing import TYPE_CHECKING

from checks.fim.globs import PathMatcher, relative

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

T_FILE, T_DIR, T_LINK, T_OTHER = 1, 2, 3, 4
TYPE_NAMES = {T_FILE: "file", T_DIR: "dir", T_LINK: "symlink", T_OTHER: "other"}
HEAD = struct.Struct("<BQIIIqqQ")
HEAD_SIZE = HEAD.size
SHA_END = HEAD_SIZE + 32
NO_SHA = bytes(32)
# The ``copy`` column of a state row (see checks.fim.state), defined here so that hashing workers can
# fill it without importing SQLite.
COPY_NONE, COPY_PENDING, COPY_KEPT, COPY_BINARY = 0, 1, 2, 3
_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1
# Files up to this size are read with one read() call (two syscalls fewer than a chunked loop);
# larger ones in chunks of this size, so the throughput cap can be applied smoothly.
CHUNK = 1 << 20

_BASE_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# O_NOATIME keeps the walk from dirtying every inode's atime (a disk write per file once a day under
# relatime); only the owner or root may use it, so it is dropped after the first EPERM.
_noatime = [getattr(os, "O_NOATIME", 0) if hasattr(os, "geteuid") and os.geteuid() == 0 else 0]


class RateLimiter:
    """Token bucket over bytes read; ``acquire`` sleeps off the debt of whoever drew last.

    A caller takes its bytes at once and then waits until the bucket is back at zero, so two threads
    sharing a limiter stay under the rate together and a small real-time read waits at most for the
    chunk a verification thread drew just before it (1 MiB at 64 MB/s: 16 ms).
    """

    def __init__(
        self,
        bytes_per_s: float,
        *,
        burst_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = float(bytes_per_s)
        self.capacity = max(self.rate * burst_s, float(CHUNK))
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()
        self.slept_s = 0.0

    def acquire(self, n: int) -> float:
        """Draw ``n`` bytes; returns how long the caller slept."""
        if self.rate <= 0 or n <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            self.slept_s += wait
        if wait > 0:
            self._sleep(wait)
        return wait


def type_code(mode: int) -> int:
    if stat.S_ISREG(mode):
        return T_FILE
    if stat.S_ISDIR(mode):
        return T_DIR
    if stat.S_ISLNK(mode):
        return T_LINK
    return T_OTHER


_IFMT, _IFREG, _IFDIR = stat.S_IFMT(0o177777), stat.S_IFREG, stat.S_IFDIR
_pack = HEAD.pack


def head(st: os.stat_result) -> bytes:
    """The comparable part of a record, from an ``lstat`` (called once per entry by verification)."""
    mode = st.st_mode
    fmt = mode & _IFMT
    if fmt == _IFREG:
        return _pack(T_FILE, st.st_size, mode, st.st_uid & _M32, st.st_gid & _M32, st.st_mtime_ns, st.st_ctime_ns,
                     st.st_ino & _M64)
    if fmt == _IFDIR:
        # A directory's size and times change with every entry added or removed: not its own change.
        return _pack(T_DIR, 0, mode, st.st_uid & _M32, st.st_gid & _M32, 0, 0, st.st_ino & _M64)
    return _pack(type_code(mode), st.st_size & _M64, mode & _M32, st.st_uid & _M32, st.st_gid & _M32,
                 st.st_mtime_ns, st.st_ctime_ns, st.st_ino & _M64)


def record(st: os.stat_result, sha: bytes = NO_SHA, link: bytes = b"") -> bytes:
    return head(st) + sha + link


class Described:
    """What :func:`describe` read: the record, and the content when it was asked for and small enough."""

    __slots__ = ("blob", "content", "nread")

    def __init__(self, blob: bytes, content: bytes | None = None, nread: int = 0) -> None:
        self.blob = blob
        self.content = content
        self.nread = nread


def describe(
    path: bytes,
    *,
    content_max: int = -1,
    limiter: RateLimiter | None = None,
    follow: bool = False,
    regular_hint: bool = False,
) -> Described | None:
    """Record ``path`` as it is now; None when it does not exist.

    Regular files are hashed; their content is returned too when it is at most ``content_max`` bytes.
    ``follow`` is for a watched root given as a symlink; everything below a root is recorded as
    found (a symlink is a symlink, never followed). ``regular_hint`` (from ``scandir``'s d_type)
    skips the ``lstat`` and opens at once: O_NOFOLLOW and a type check on ``fstat`` keep that safe.
    Raises OSError for anything but "gone" (e.g. permission denied), for the caller to report.
    """
    if not regular_hint:
        try:
            st = os.stat(path) if follow else os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else b""
            return Described(record(st, NO_SHA, os.fsencode(link)))
    return _hash_regular(path, content_max, limiter, follow)


def _open(path: bytes, follow: bool) -> int:
    flags = _BASE_FLAGS | (0 if follow else _NOFOLLOW)
    if _noatime[0]:
        try:
            return os.open(path, flags | _noatime[0])
        except PermissionError:
            _noatime[0] = 0
    return os.open(path, flags)


def _hash_regular(path: bytes, content_max: int, limiter: RateLimiter | None, follow: bool) -> Described | None:
    for _attempt in range(3):
        try:
            fd = _open(path, follow)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            # ELOOP: it became a symlink since it was listed; ENXIO: a socket. Record what it is now.
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EMLINK):
                return describe(path, follow=follow)
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return describe(path, follow=follow)
            digest, content, nread = _read(fd, st.st_size, content_max, limiter)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        # Written to while being read: the hash would belong to neither version. Read it again.
        if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns) \
                and nread == st.st_size:
            return Described(record(st, digest), content, nread)
    return Described(record(after, digest), content, nread)


def _read(fd: int, size: int, content_max: int, limiter: RateLimiter | None) -> tuple[bytes, bytes | None, int]:
    if size < CHUNK:
        if limiter is not None:
            limiter.acquire(size)
        data = os.read(fd, size + 1)
        if len(data) > size:  # grew since fstat: take the rest too, the caller notices and retries
            rest = [data]
            while chunk := os.read(fd, CHUNK):
                rest.append(chunk)
            data = b"".join(rest)
        return hashlib.sha256(data).digest(), (data if len(data) <= content_max else None), len(data)
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
        while True:
            if limiter is not None:
                limiter.acquire(CHUNK)
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            total += n
    return h.digest(), None, total


# --- recording a baseline: the work of the hashing processes ------------------------------------

_SEP = os.fsencode(os.sep)
# openat()/fstatat() relative to the listed directory: one path component to resolve per file instead
# of the whole path (a third of the cost of opening a small file), and a directory swapped for a
# symlink mid-walk cannot redirect the walk.
_AT = os.open in os.supports_dir_fd and os.scandir in os.supports_fd
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
# A directory of more entries than this is shared out among the processes in chunks of _TASK_ENTRIES.
SPLIT_ENTRIES = 512
TASK_ENTRIES = 256

# One entry of a listed directory: (name, a regular file by d_type, a directory to descend into).
Entry = tuple[bytes, bool, bool]
# One unit of work: (root, directory, entries); entries None means "list the directory first".
Task = tuple[bytes, bytes, list[Entry] | None]
# One path's state (parent, name, record, copy).
Row = tuple[bytes, bytes, bytes, int]
# A page of one directory's records as stored (see below): (first, entries, directories among them,
# copies pending among them, blob).
PageRow = tuple[bytes, int, int, int, bytes]
# What a task gives back: (directory, its records in pages, names of subdirectories to walk,
# notices, files hashed, bytes read, further chunks of a big directory's entries for other
# processes). A few bytes objects per page, not objects per file: this crosses a pipe.
TaskResult = tuple[bytes, list[PageRow], list[bytes], list[str], int, int, list[list[Entry]]]

# --- pages: how the state database stores records ---------------------------------------------------
#
# The records of one directory are stored in pages of up to PAGE_MAX entries sorted by name, a SQLite
# row per page rather than per path: writing a row costs SQLite ~3 µs whatever its size, which was a
# third of the CPU of a 100,000-file baseline. A page covers the names from its ``first`` up to the
# next page's ``first`` (the directory's first page has ``first`` b""). The blob, little-endian:
#   u32 entries, u32 bytes of names, u32 bytes of records
#   the names joined by NUL (no file name holds one)
#   entries + 1 u32 offsets of the records in the record area
#   one byte per entry: its copy state (COPY_*)
#   the records, one after another
# Encoding and decoding are joins, splits and slices done in C, never a loop of Python per field.
PAGE_FILL = 128  # entries per page as a baseline writes them, leaving room to grow before a split
PAGE_MAX = 256  # a page that grows past this is cut into pages of ~PAGE_FILL
_PAGE_HEAD = struct.Struct("<III")
_U32 = "I" if array("I").itemsize == 4 else "L"
_U32_PAIR = struct.Struct("<II")
_BIG_ENDIAN = sys.byteorder == "big"


class DamagedPage(ValueError):
    """A page blob whose parts do not add up (the state database was damaged)."""


def encode_page(names: Sequence[bytes], records: Sequence[bytes], copies: bytes | bytearray) -> bytes:
    offsets = array(_U32, accumulate(map(len, records), initial=0))
    if _BIG_ENDIAN:
        offsets.byteswap()
    joined = b"\0".join(names)
    body = b"".join(records)
    return b"".join((_PAGE_HEAD.pack(len(names), len(joined), len(body)), joined, offsets.tobytes(),
                     bytes(copies), body))


def page_row(first: bytes, names: Sequence[bytes], records: Sequence[bytes], copies: bytes | bytearray) -> PageRow:
    """A page ready to store: the counts the database keeps next to the blob, and the blob."""
    dirs = sum(1 for r in records if r[0] == T_DIR)
    return first, len(names), dirs, copies.count(COPY_PENDING), encode_page(names, records, copies)


def _page_parts(blob: bytes) -> tuple[int, list[bytes], int, int]:
    """(entries, names, where the offsets start, where the records start)."""
    try:
        n, names_len, body_len = _PAGE_HEAD.unpack_from(blob)
    except struct.error:
        raise DamagedPage("page header cut short") from None
    at = _PAGE_HEAD.size
    names = blob[at:at + names_len].split(b"\0") if n else []
    offsets_at = at + names_len
    body_at = offsets_at + 4 * (n + 1) + n
    if len(names) != n or len(blob) != body_at + body_len:
        raise DamagedPage(f"page of {n} entries has {len(names)} names and {len(blob)} bytes")
    return n, names, offsets_at, body_at


def decode_page(blob: bytes) -> tuple[list[bytes], list[bytes], bytearray]:
    """(names, records, copy states) of a page, sorted by name."""
    n, names, offsets_at, body_at = _page_parts(blob)
    offsets = array(_U32)
    offsets.frombytes(blob[offsets_at:offsets_at + 4 * (n + 1)])
    if _BIG_ENDIAN:
        offsets.byteswap()
    if offsets[-1] != len(blob) - body_at:
        raise DamagedPage("page records do not add up")
    body = blob[body_at:]
    return names, [body[a:b] for a, b in pairwise(offsets)], bytearray(blob[body_at - n:body_at])


class PageView:
    """A stored page opened for lookups: its names split once, its records sliced on demand."""

    __slots__ = ("blob", "body_at", "n", "names", "offsets_at")

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.n, self.names, self.offsets_at, self.body_at = _page_parts(blob)

    def find(self, name: bytes) -> tuple[bytes, int] | None:
        """(record, copy state) of ``name``, without decoding the other records."""
        i = bisect_left(self.names, name)
        if i == self.n or self.names[i] != name:
            return None
        a, b = _U32_PAIR.unpack_from(self.blob, self.offsets_at + 4 * i)
        return self.blob[self.body_at + a:self.body_at + b], self.blob[self.body_at - self.n + i]


def pages_of(names: list[bytes], records: list[bytes], copies: bytearray, first: bytes) -> list[PageRow]:
    """A directory's sorted entries (or a chunk of them starting at ``first``) cut into pages."""
    out: list[PageRow] = []
    for i in range(0, len(names), PAGE_FILL):
        j = i + PAGE_FILL
        out.append(page_row(first if i == 0 else names[i], names[i:j], records[i:j], copies[i:j]))
    return out


def display_path(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


def _list(where: int | bytes, root: bytes, d: bytes, prefix: bytes, excl: PathMatcher | None) -> list[Entry]:
    """The entries of a directory that are watched, by name; d_type says which are files and directories."""
    out: list[Entry] = []
    rel_base = relative(root, d) if excl is not None else b""
    fsencode = os.fsencode
    with os.scandir(where) as it:  # an fd or bytes
        for e in it:
            name = e.name
            if not isinstance(name, bytes):
                name = fsencode(name)
            try:
                is_file = e.is_file(follow_symlinks=False)
                is_dir = not is_file and e.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = is_file = False
            if excl is not None:
                rel = rel_base + b"/" + name if rel_base else name
                if excl.matches(rel, prefix + name):
                    continue
                if is_dir and excl.prunes(rel, prefix + name):
                    is_dir = False  # recorded, not walked
            out.append((name, is_file, is_dir))
    out.sort()
    return out


def run_task(task: Task, limiter: RateLimiter | None, excl: PathMatcher | None, *, split: bool = True) -> TaskResult:
    """Record one task's entries (listing the directory first when the task says so).

    The same code runs in a hashing process and, for small trees, inline. Small regular files take
    the fast path below; anything else (symlinks, special files, big files, a file that changed type
    or size since it was listed, an error to report) goes through :func:`describe`.
    """
    root, d, entries = task
    prefix = d if d.endswith(_SEP) else d + _SEP
    # The first page of the directory covers every name from b""; a chunk's, names from its first.
    first = entries[0][0] if entries else b""
    names: list[bytes] = []
    records: list[bytes] = []
    copies = bytearray()
    subdirs: list[bytes] = []
    notices: list[str] = []
    chunks: list[list[Entry]] = []
    hashed = nread = 0
    dfd = -1
    try:
        if _AT:
            # Below a root nothing is followed: a directory replaced by a symlink is not walked into.
            dfd = os.open(d, _DIR_FLAGS | (0 if d == root else _NOFOLLOW))
        if entries is None:
            entries = _list(dfd if dfd >= 0 else d, root, d, prefix, excl)
            if split and len(entries) > SPLIT_ENTRIES:
                chunks = [entries[i:i + TASK_ENTRIES] for i in range(TASK_ENTRIES, len(entries), TASK_ENTRIES)]
                entries = entries[:TASK_ENTRIES]
    except (FileNotFoundError, NotADirectoryError):
        entries = []  # gone since it was listed, or no longer a directory: its parent's row says so
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            notices.append(f"cannot list {display_path(d)}: {exc.strerror}; its contents are not watched")
        entries = []
    # The hot loop: ~100,000 iterations for 100,000 files, so names are bound locally and a small
    # file costs openat, fstat, one read, close and one sha256 call.
    flags = _BASE_FLAGS | _NOFOLLOW | _noatime[0]
    open_, fstat, read, close, sha256, pack = os.open, os.fstat, os.read, os.close, hashlib.sha256, _pack
    add_name, add_record, add_copy = names.append, records.append, copies.append
    try:
        for name, is_file, is_dir in entries:
            if is_file and dfd >= 0:
                try:
                    fd = open_(name, flags, dir_fd=dfd)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # gone since it was listed
                except OSError:
                    fd = -1  # ELOOP (now a symlink), ENXIO (a socket), EPERM: describe() sorts it out
                if fd >= 0:
                    try:
                        st = fstat(fd)
                        size = st.st_size
                        data = read(fd, size + 1) if size < CHUNK and (st.st_mode & _IFMT) == _IFREG else None
                        if limiter is not None:
                            limiter.acquire(size)
                    finally:
                        close(fd)
                    # No second fstat: the record carries the times from *before* the read, so a write
                    # that lands during it changes mtime/ctime and the next comparison re-hashes the file
                    # (and the real-time watch, started before the baseline, sees the write anyway).
                    if data is not None and len(data) == size:
                        add_name(name)
                        add_record(pack(T_FILE, size, st.st_mode, st.st_uid & _M32, st.st_gid & _M32,
                                        st.st_mtime_ns, st.st_ctime_ns, st.st_ino & _M64) + sha256(data).digest())
                        add_copy(COPY_PENDING)
                        hashed += 1
                        nread += size
                        continue
            try:
                got = describe(prefix + name, limiter=limiter, regular_hint=is_file)
            except OSError as exc:
                notices.append(f"cannot read {display_path(prefix + name)}: {exc.strerror or exc}")
                continue
            if got is None:
                continue
            add_name(name)
            add_record(got.blob)
            if got.blob[0] == T_FILE:
                # Whether a copy is kept for diffs is settled by the background copy pass.
                add_copy(COPY_PENDING)
                hashed += 1
                nread += got.nread
            else:
                add_copy(COPY_NONE)
                if is_dir and got.blob[0] == T_DIR:
                    subdirs.append(name)
    finally:
        if dfd >= 0:
            close(dfd)
    return d, pages_of(names, records, copies, first), subdirs, notices, hashed, nread, chunks


def worker_main(conn: Connection, bytes_per_s: float, lower: bool, exclude: tuple[str, ...]) -> None:
    """A hashing process: tasks in, results out, until the pipe says None or closes."""
    limiter = RateLimiter(bytes_per_s) if bytes_per_s > 0 else None
    excl = PathMatcher(exclude) if exclude else None
    if lower:
        lower_priority(thread_only=False)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            conn.send([run_task(t, limiter, excl) for t in task])
        except (BrokenPipeError, OSError):
            return


def lower_priority(*, thread_only: bool) -> None:
    """nice 10 and the lowest best-effort I/O priority, for bulk hashing.

    Best-effort 7 rather than the idle class: on a host whose disks are never idle (a busy database
    server) the idle class can starve a verification forever, which would be a silent gap. With
    ``thread_only`` only the calling thread is lowered (Linux schedules threads separately), so the
    real-time path of the same agent keeps its priority; elsewhere that is not possible and nothing
    is changed.
    """
    linux = sys.platform.startswith("linux")
    if thread_only and not linux:
        return
    who = threading.get_native_id() if thread_only else os.getpid()
    try:
        if hasattr(os, "setpriority"):
            current = os.getpriority(os.PRIO_PROCESS, who)
            if current < 10:
                os.setpriority(os.PRIO_PROCESS, who, 10)
        if linux:
            import psutil

            psutil.Process(who).ionice(psutil.IOPRIO_CLASS_BE, 7)
        elif sys.platform == "win32" and not thread_only:
            import psutil

            psutil.Process(who).nice(psutil.BELOW_NORMAL_PRIORITY_CLASS)
    except Exception:  # psutil.Error is no OSError
        pass  # a priority is a courtesy to the host, not a reason to stop watching
