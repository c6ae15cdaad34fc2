"""The agent's durable spool: sequence numbers, bounds, acknowledgement and survival of a kill -9."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.spool import Spool

ROOT = Path(__file__).resolve().parents[2]


def payload(seq: int) -> bytes:
    return f"report-{seq}".encode()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


@pytest.fixture
def spool(path: Path) -> Iterator[Spool]:
    sp = Spool(path)
    try:
        yield sp
    finally:
        sp.close()


def put_many(sp: Spool, n: int) -> list[int | None]:
    return [sp.put(payload) for _ in range(n)]


# -- sequence numbers ---------------------------------------------------------------------------------


def test_sequences_start_at_one_and_build_receives_them(spool: Spool) -> None:
    seen: list[int] = []

    def build(seq: int) -> bytes:
        seen.append(seq)
        return payload(seq)

    assert [spool.put(build) for _ in range(3)] == [1, 2, 3]
    assert seen == [1, 2, 3]
    assert spool.pending() == [(1, b"report-1"), (2, b"report-2"), (3, b"report-3")]


def test_sequences_continue_across_close_and_reopen(path: Path) -> None:
    first = Spool(path)
    try:
        assert put_many(first, 3) == [1, 2, 3]
        # Even once everything is acknowledged, a number is never handed out twice.
        assert first.ack([1, 2, 3]) == 3
    finally:
        first.close()

    second = Spool(path)
    try:
        assert second.stats()["next_seq"] == 4
        assert put_many(second, 2) == [4, 5]
    finally:
        second.close()

    third = Spool(path)
    try:
        assert third.put(payload) == 6
        assert [seq for seq, _ in third.pending()] == [4, 5, 6]
    finally:
        third.close()


def test_pending_is_ordered_and_honours_after_and_limit(spool: Spool) -> None:
    put_many(spool, 6)
    assert [s for s, _ in spool.pending()] == [1, 2, 3, 4, 5, 6]
    assert spool.pending(after=2, limit=2) == [(3, b"report-3"), (4, b"report-4")]
    assert [s for s, _ in spool.pending(after=4)] == [5, 6]
    assert spool.pending(after=6) == []
    spool.ack([3, 5])
    assert [s for s, _ in spool.pending(after=1, limit=3)] == [2, 4, 6]


# -- acknowledgement ----------------------------------------------------------------------------------


def test_ack_deletes_and_frees_bytes(spool: Spool) -> None:
    put_many(spool, 3)
    total = sum(len(payload(s)) for s in (1, 2, 3))
    assert spool.stats().items() >= {"depth": 3, "bytes": total, "dropped": 0, "next_seq": 4}.items()

    assert spool.ack([1, 3]) == 2
    assert spool.pending() == [(2, b"report-2")]
    assert spool.stats()["depth"] == 1
    assert spool.stats()["bytes"] == len(payload(2))


def test_ack_of_unknown_or_repeated_sequences_frees_nothing(spool: Spool) -> None:
    put_many(spool, 2)
    assert spool.ack([]) == 0
    assert spool.ack([1]) == 1
    before = spool.stats()["bytes"]
    assert spool.ack([1, 99]) == 0
    assert spool.stats()["bytes"] == before == len(payload(2))


# -- bounds -------------------------------------------------------------------------------------------


def test_full_spool_counts_dropped_and_returns_none(path: Path) -> None:
    sp = Spool(path, max_bytes=20)
    try:
        assert sp.put(lambda seq: b"x" * 20) == 1
        assert sp.put(lambda seq: b"y") is None
        assert sp.put(lambda seq: b"z" * 5) is None
        stats = sp.stats()
        assert stats["dropped"] == 2
        assert stats["depth"] == 1
        assert stats["bytes"] == 20
        # A refused result uses no sequence number: the gap is the dropped count, not a hole.
        assert stats["next_seq"] == 2
        assert sp.pending() == [(1, b"x" * 20)]

        # Room comes back once the controller acknowledged.
        sp.ack([1])
        assert sp.put(lambda seq: b"w" * 20) == 2
    finally:
        sp.close()

    reopened = Spool(path, max_bytes=20)
    try:
        assert reopened.stats()["dropped"] == 2
    finally:
        reopened.close()


def test_essential_results_may_use_twice_the_bound(path: Path) -> None:
    sp = Spool(path, max_bytes=10)
    try:
        assert sp.put(lambda seq: b"a" * 10) == 1
        assert sp.put(lambda seq: b"b") is None
        assert sp.put(lambda seq: b"c" * 10, essential=True) == 2
        assert sp.stats()["bytes"] == 20
        assert sp.put(lambda seq: b"d", essential=True) is None
        assert sp.stats()["dropped"] == 2
        assert [s for s, _ in sp.pending()] == [1, 2]
    finally:
        sp.close()


def test_a_failing_build_leaves_the_spool_unchanged(spool: Spool) -> None:
    assert spool.put(payload) == 1

    def broken(seq: int) -> bytes:
        raise RuntimeError("serialisation failed")

    with pytest.raises(RuntimeError):
        spool.put(broken)
    assert spool.stats().items() >= {"depth": 1, "bytes": len(payload(1)), "dropped": 0, "next_seq": 2}.items()
    assert spool.put(payload) == 2


# -- durability and privacy ---------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from agent.spool import Spool

    spool = Spool(Path(sys.argv[1]))
    for _ in range(int(sys.argv[2])):
        spool.put(lambda seq: f"report-{seq}".encode())
    print("done", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_results_survive_sigkill_right_after_put(path: Path) -> None:
    n = 50
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(n)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout == "done\n"

    sp = Spool(path)
    try:
        assert sp.pending(limit=n + 10) == [(seq, payload(seq)) for seq in range(1, n + 1)]
        assert sp.stats()["next_seq"] == n + 1
        assert sp.put(payload) == n + 1
    finally:
        sp.close()


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_spool_files_are_private(path: Path) -> None:
    old = os.umask(0o022)
    try:
        sp = Spool(path)
    finally:
        os.umask(old)
    try:
        sp.put(payload)
        wal = path.with_name(path.name + "-wal")
        shm = path.with_name(path.name + "-shm")
        assert path.exists()
        assert wal.exists()
        assert shm.exists()
        for p in (path, wal, shm):
            assert _mode(p) == 0o600, f"{p.name} has mode {_mode(p):o}"
    finally:
        sp.close()
    assert _mode(path) == 0o600
