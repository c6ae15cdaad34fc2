"""Records, hashing and the throughput cap."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from checks.fim.events import decode
from checks.fim.hashing import (
    CHUNK,
    COPY_NONE,
    COPY_PENDING,
    HEAD_SIZE,
    PAGE_FILL,
    T_DIR,
    T_FILE,
    T_LINK,
    DamagedPage,
    PageRow,
    PageView,
    RateLimiter,
    decode_page,
    describe,
    head,
    page_row,
    run_task,
)
from tests.checks.fim._helpers import write


def test_describe_regular_file(tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", "hello\n")
    got = describe(os.fsencode(p), content_max=100)
    assert got is not None
    state = decode(got.blob)
    assert state.type == "file"
    assert state.sha256 == hashlib.sha256(b"hello\n").hexdigest()
    assert state.size == 6 and state.inode == p.stat().st_ino
    assert got.content == b"hello\n" and got.nread == 6
    # The head of a fresh lstat is exactly the head of the record: the whole cost of verifying.
    assert head(os.lstat(p)) == got.blob[:HEAD_SIZE]


def test_content_only_when_small_enough(tmp_path: Path) -> None:
    p = write(tmp_path / "a.txt", "x" * 100)
    got = describe(os.fsencode(p), content_max=99)
    assert got is not None and got.content is None


def test_large_file_chunked(tmp_path: Path) -> None:
    data = os.urandom(CHUNK * 2 + 17)
    p = write(tmp_path / "big.bin", data)
    got = describe(os.fsencode(p))
    assert got is not None and decode(got.blob).sha256 == hashlib.sha256(data).hexdigest() and got.nread == len(data)


def test_symlink_dir_missing_and_fifo(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.symlink("d", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")  # must never be opened: that would block forever
    link = describe(os.fsencode(tmp_path / "link"))
    assert link is not None and link.blob[0] == T_LINK and decode(link.blob).link_target == "d"
    d = describe(os.fsencode(tmp_path / "d"))
    assert d is not None and d.blob[0] == T_DIR and decode(d.blob).size == 0 and decode(d.blob).mtime_ns == 0
    fifo = describe(os.fsencode(tmp_path / "fifo"), regular_hint=True)
    assert fifo is not None and decode(fifo.blob).type == "other"
    assert describe(os.fsencode(tmp_path / "gone")) is None


def test_regular_hint_does_not_follow_a_symlink(tmp_path: Path) -> None:
    write(tmp_path / "target", "secret")
    os.symlink(tmp_path / "target", tmp_path / "l")
    got = describe(os.fsencode(tmp_path / "l"), regular_hint=True)
    assert got is not None and got.blob[0] == T_LINK


def test_run_task_records_a_directory_and_skips_vanished(tmp_path: Path) -> None:
    write(tmp_path / "a", "1")
    (tmp_path / "sub").mkdir()
    os.symlink("a", tmp_path / "l")
    root = os.fsencode(tmp_path)
    d, pages, subdirs, notices, hashed, nread, chunks = run_task(
        (root, root, [(b"a", True, False), (b"l", False, False), (b"sub", False, True), (b"vanished", True, False)]),
        None, None)
    assert d == root and subdirs == [b"sub"] and notices == [] and chunks == []
    # A chunk's one page starts at its first listed name, and counts its entries, directories and pending copies.
    [(first, n, dirs, pending, _blob)] = pages
    assert (first, n, dirs, pending) == (b"a", 3, 1, 1)
    rows = _rows(pages)
    assert [(n, b[0], c) for n, b, c in rows] == [(b"a", T_FILE, COPY_PENDING), (b"l", T_LINK, 0), (b"sub", T_DIR, 0)]
    assert rows[0][1] == describe(os.fsencode(tmp_path / "a")).blob  # type: ignore[union-attr]
    assert hashed == 1 and nread == 1


def _rows(pages: list[PageRow]) -> list[tuple[bytes, bytes, int]]:
    return [row for page in pages for row in zip(*decode_page(page[4]), strict=True)]


def test_run_task_lists_and_shares_out_a_big_directory(tmp_path: Path) -> None:
    for i in range(600):
        write(tmp_path / f"f{i:04d}", str(i))
    root = os.fsencode(tmp_path)
    _, pages, _, _, hashed, _, chunks = run_task((root, root, None), None, None)
    rows = _rows(pages)
    assert hashed == len(rows) == 256 and [len(c) for c in chunks] == [256, 88]
    assert rows[0][0] == b"f0000" and chunks[0][0] == (b"f0256", True, False)
    # The directory's first page covers every name from b""; the next starts at its own first name.
    assert [(p[0], p[1]) for p in pages] == [(b"", PAGE_FILL), (b"f0128", 256 - PAGE_FILL)]


def test_page_round_trip_and_lookup() -> None:
    names = [b"", b"a", b"b\xff", b"z" * 300]
    records = [bytes([T_DIR]) + bytes(44), bytes([T_FILE]) + bytes(76), bytes([4]), bytes([T_LINK]) + b"target"]
    first, n, dirs, pending, blob = page_row(b"", names, records, bytearray([COPY_NONE, COPY_PENDING, 0, 0]))
    assert (first, n, dirs, pending) == (b"", 4, 1, 1)
    assert decode_page(blob) == (names, records, bytearray([COPY_NONE, COPY_PENDING, 0, 0]))
    assert PageView(blob).find(b"z" * 300) == (records[3], 0)
    assert PageView(blob).find(b"a") == (records[1], COPY_PENDING)
    assert PageView(blob).find(b"") == (records[0], COPY_NONE)
    assert PageView(blob).find(b"b") is None and PageView(blob).find(b"zz") is None
    assert decode_page(page_row(b"x", [], [], bytearray())[4]) == ([], [], bytearray())


def test_a_damaged_page_is_refused() -> None:
    blob = page_row(b"", [b"a", b"b"], [b"1", b"2"], bytearray(2))[4]
    for bad in (blob[:-1], blob + b"x", blob[:5], blob.replace(b"a\0b", b"a\0\0")):
        try:
            decode_page(bad)
        except DamagedPage:
            continue
        raise AssertionError(f"accepted {bad!r}")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_rate_limiter_holds_the_rate() -> None:
    clock = _Clock()
    lim = RateLimiter(10 * 2**20, clock=clock, sleep=clock.sleep)  # 10 MiB/s, burst of max(2.5 MiB, 1 MiB)
    for _ in range(100):
        lim.acquire(2**20)
    # 100 MiB at 10 MiB/s: the burst allowance aside, it took ~10 s of (fake) sleeping.
    assert 9.5 <= clock.now <= 10.0
    assert all(s <= 0.11 for s in clock.slept)  # smooth: no wait longer than one chunk's worth


def test_rate_limiter_zero_means_unlimited() -> None:
    clock = _Clock()
    lim = RateLimiter(0, clock=clock, sleep=clock.sleep)
    assert lim.acquire(10**12) == 0.0 and clock.slept == []


def test_small_reads_wait_at_most_for_the_last_chunk() -> None:
    clock = _Clock()
    lim = RateLimiter(64e6, clock=clock, sleep=clock.sleep)
    lim.acquire(int(64e6 * 0.25))  # drain the burst
    lim.acquire(CHUNK)  # a verification chunk: now in debt by one chunk
    waited = lim.acquire(4096)  # a real-time read of a small file
    assert waited <= (CHUNK + 4096) / 64e6 + 1e-9
