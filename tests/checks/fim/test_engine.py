"""The engine on real files: baseline, verification, rotation, restart, excludes, nodiff, cap, pool."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from checks.fim.hashing import HEAD_SIZE, head
from checks.fim.model import Detector, Kind
from checks.fim.scan import EVENTS_PER_RESULT, FimEngine, chunks
from checks.fim.state import COPY_KEPT, COPY_PENDING
from tests.checks.fim._helpers import Collector, args, engine, set_times, write


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "www"
    write(r / "index.php", "<?php echo 'home'; ?>\n")
    write(r / "about.html", "<h1>About</h1>\n")
    write(r / "lib" / "util.php", "<?php function f() { return 1; } ?>\n")
    write(r / "img" / "logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(64))
    return r


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


def test_first_scan_records_the_baseline_and_reports_nothing(root: Path, db: Path) -> None:
    sink = Collector()
    with engine(db, root) as eng:
        assert not eng.baseline_complete
        stats = eng.startup(sink)
        assert stats.baseline_created and eng.baseline_complete
        assert sink.events == []
        assert eng.files_watched == 7  # the root, 2 directories, 4 files
        assert stats.files_hashed == 4


def test_unchanged_tree_is_verified_without_hashing(root: Path, db: Path) -> None:
    with engine(db, root) as eng:
        eng.build_baseline()
        sink = Collector()
        stats = eng.verify(sink)
        assert sink.events == [] and stats.files_hashed == 0 and stats.events == 0


def test_verify_reports_every_kind_of_change(root: Path, db: Path) -> None:
    with engine(db, root) as eng:
        eng.build_baseline()
        assert eng.fill_copies() > 0
        write(root / "index.php", "<?php echo 'hacked'; ?>\n")
        write(root / "uploads" / "x.php", "<?php system($_GET['c']); ?>\n")
        (root / "about.html").unlink()
        os.chmod(root / "lib" / "util.php", 0o666)
        os.rename(root / "img" / "logo.png", root / "img" / "logo2.png")
        sink = Collector()
        stats = eng.verify(sink)
    by_path = {e.path: e for e in sink.events}
    assert {p: e.kind for p, e in by_path.items()} == {
        f"{root}/index.php": Kind.MODIFIED,
        f"{root}/uploads": Kind.CREATED,
        f"{root}/uploads/x.php": Kind.CREATED,
        f"{root}/about.html": Kind.DELETED,
        f"{root}/lib/util.php": Kind.PERMISSIONS,
        f"{root}/img/logo2.png": Kind.RENAMED,
    }
    assert stats.events == 6
    assert all(e.detected_by is Detector.VERIFY for e in sink.events)
    mod = by_path[f"{root}/index.php"]
    assert mod.before is not None and mod.after is not None and mod.before.sha256 != mod.after.sha256
    assert "-<?php echo 'home'; ?>" in mod.diff and "+<?php echo 'hacked'; ?>" in mod.diff
    assert "sha256" in mod.changed_fields
    shell = by_path[f"{root}/uploads/x.php"]
    assert shell.diff.startswith("--- /dev/null") and "system($_GET" in shell.diff
    perm = by_path[f"{root}/lib/util.php"]
    assert perm.before is not None and perm.after is not None
    assert stat.S_IMODE(perm.before.mode) == 0o644 and stat.S_IMODE(perm.after.mode) == 0o666
    assert perm.changed_fields[0] == "mode" and perm.diff == ""
    ren = by_path[f"{root}/img/logo2.png"]
    assert ren.old_path == f"{root}/img/logo.png" and ren.changed_fields == ("path",)
    assert by_path[f"{root}/about.html"].after is None


def test_touch_r_tampering_is_found_by_verification(root: Path, db: Path) -> None:
    target = root / "index.php"
    before = target.stat()
    with engine(db, root) as eng:
        eng.build_baseline()
        # Same size, content changed, timestamps put back as they were (touch -r): only ctime moves.
        write(target, "<?php echo 'HOME'; ?>\n")
        set_times(target, before.st_mtime_ns)
        assert target.stat().st_size == before.st_size and target.stat().st_mtime_ns == before.st_mtime_ns
        sink = Collector()
        eng.verify(sink)
    [ev] = sink.events
    assert ev.kind is Kind.MODIFIED and ev.detected_by is Detector.VERIFY
    assert "sha256" in ev.changed_fields and "mtime" not in ev.changed_fields and "size" not in ev.changed_fields


def _hide_change(eng: FimEngine, path: Path) -> None:
    """What an attacker who also resets ctime achieves: the stored metadata equals the file's again."""
    parent, name = os.fsencode(path.parent), os.fsencode(path.name)
    row = eng.db.get(parent, name)
    assert row is not None
    with eng.db.tx():
        eng.db.put(parent, name, head(os.lstat(path)) + row[0][HEAD_SIZE:], row[1])


def test_tampering_with_every_timestamp_restored_is_found_by_the_rehash(root: Path, db: Path) -> None:
    target = root / "lib" / "util.php"
    with engine(db, root) as eng:
        eng.build_baseline()
        write(target, "<?php function f() { return 2; } ?>\n")
        _hide_change(eng, target)
        quiet = Collector()
        eng.verify(quiet)
        assert quiet.events == []  # stat says nothing changed, and this run's rotation slice was empty
        sink = Collector()
        stats = eng.verify(sink, rehash_all=True)
    [ev] = sink.events
    assert ev.kind is Kind.MODIFIED and ev.detected_by is Detector.REHASH and ev.path == str(target)
    assert ev.changed_fields == ("sha256",)
    assert any("timestamps restored" in n for n in stats.notices)


def test_a_short_rehash_period_makes_every_run_rehash_everything(root: Path, db: Path) -> None:
    target = root / "index.php"
    with engine(db, root, rehash_days=1e-9) as eng:
        eng.build_baseline()
        write(target, "<?php echo 'evil'; ?>\n")
        _hide_change(eng, target)
        time.sleep(0.001)
        sink = Collector()
        stats = eng.verify(sink)
    assert [(e.path, e.detected_by) for e in sink.events] == [(str(target), Detector.REHASH)]
    assert stats.files_hashed == 4


def test_rotation_rehashes_every_file_once_per_period(tmp_path: Path, db: Path) -> None:
    root = tmp_path / "tree"
    for i in range(40):
        write(root / f"d{i % 4}" / f"f{i}.txt", f"{i}\n")
    with engine(db, root, rehash_days=1) as eng:
        eng.build_baseline()
        total = eng.files_watched  # 45 rows: root, 4 dirs, 40 files
        hashed = 0
        for _ in range(4):
            # A quarter of the period passed since the last verification: a quarter of the rows is due.
            eng.db.set_meta("last_verify_at", str(time.time() - 86400 / 4))
            stats = eng.verify(None)
            assert 0 < stats.files_hashed <= total // 4 + 1
            hashed += stats.files_hashed
        assert hashed == 40  # every file once (directories have nothing to hash)


def test_restart_reports_exactly_what_changed_while_stopped(root: Path, db: Path) -> None:
    with engine(db, root) as eng:
        eng.build_baseline()
        eng.fill_copies()
    # The agent is stopped; the host changes.
    write(root / "index.php", "<?php echo 'changed while down'; ?>\n")
    write(root / "new" / "dropped.php", "<?php eval($_POST['x']); ?>\n")
    (root / "about.html").unlink()
    os.chmod(root / "img" / "logo.png", 0o600)
    os.rename(root / "lib" / "util.php", root / "lib" / "util2.php")
    sink = Collector()
    with engine(db, root) as eng:
        assert eng.baseline_complete
        stats = eng.startup(sink)
        assert not stats.baseline_created
        again = Collector()
        eng.rescan(again)
    assert sorted((e.path, e.kind.name) for e in sink.events) == sorted([
        (f"{root}/index.php", "MODIFIED"),
        (f"{root}/new", "CREATED"),
        (f"{root}/new/dropped.php", "CREATED"),
        (f"{root}/about.html", "DELETED"),
        (f"{root}/img/logo.png", "PERMISSIONS"),
        (f"{root}/lib/util2.php", "RENAMED"),
    ])
    assert {e.detected_by for e in sink.events} == {Detector.STARTUP}
    assert next(e for e in sink.events if e.path.endswith("index.php")).diff.count("changed while down") == 1
    assert again.events == []  # nothing is reported twice


def test_excluded_paths_are_neither_recorded_nor_reported(root: Path, db: Path) -> None:
    write(root / "logs" / "access.log", "1\n")
    write(root / "cache" / "a" / "b.php", "1\n")
    write(root / "app.log", "1\n")
    with engine(db, root, exclude=["*.log", "cache/**"]) as eng:
        eng.build_baseline()
        watched = eng.files_watched
        write(root / "logs" / "access.log", "2\n")
        write(root / "app.log", "2\n")
        write(root / "cache" / "a" / "c.php", "new\n")
        write(root / "cache" / "deep" / "d.php", "new\n")
        sink = Collector()
        eng.verify(sink)
        assert sink.events == []
        # Real time gets the same answer for the same paths.
        rt = Collector()
        eng.reconcile([os.fsencode(root / "app.log"), os.fsencode(root / "cache" / "a" / "c.php")], rt)
        assert rt.events == []
    assert watched == 7 + 2  # + logs/ and cache/ themselves


def test_nodiff_content_never_leaves_the_host_nor_is_copied(root: Path, db: Path) -> None:
    write(root / "config" / "secrets.php", "<?php $password = 'hunter2'; ?>\n")
    with engine(db, root, nodiff=["config/**"]) as eng:
        eng.build_baseline()
        eng.fill_copies()
        parent = os.fsencode(root / "config")
        assert eng.db.get_copy(parent, b"secrets.php") is None
        assert eng.db.get_copy(os.fsencode(root), b"index.php") is not None
        write(root / "config" / "secrets.php", "<?php $password = 'changed'; ?>\n")
        write(root / "config" / "new.php", "<?php $token = 'x'; ?>\n")
        sink = Collector()
        eng.verify(sink)
        assert eng.db.get_copy(parent, b"secrets.php") is None and eng.db.get_copy(parent, b"new.php") is None
    assert {(e.kind, e.diff_omitted, e.diff) for e in sink.events} == {
        (Kind.MODIFIED, "nodiff", ""), (Kind.CREATED, "nodiff", "")}


def test_diff_evidence_for_binary_large_and_not_yet_copied_files(root: Path, db: Path) -> None:
    write(root / "big.txt", "x\n" * 2048)  # 4 KiB, over a 1 KiB cap
    with engine(db, root, diff_max_kb=1) as eng:
        eng.build_baseline()
        write(root / "index.php", "<?php echo 'before the copy pass'; ?>\n")
        sink = Collector()
        eng.verify(sink)
        assert [e.diff_omitted for e in sink.events] == ["first seen"]  # no copy yet to diff against
        eng.fill_copies()
        write(root / "img" / "logo.png", b"\x89PNG\x00" + os.urandom(32))
        write(root / "big.txt", "y\n" * 2048)
        write(root / "index.php", "<?php echo 'after'; ?>\n")
        sink = Collector()
        eng.verify(sink)
    omitted = {Path(e.path).name: e.diff_omitted for e in sink.events}
    assert omitted == {"logo.png": "binary", "big.txt": "too large", "index.php": ""}


def test_file_cap_is_reported_never_silent(tmp_path: Path, db: Path) -> None:
    root = tmp_path / "many"
    for i in range(10):
        write(root / f"f{i:02d}", str(i))
    with engine(db, root, max_files=5) as eng:
        stats = eng.build_baseline()
        assert eng.files_watched == 5 and eng.cap_reached
        assert stats.skipped_by_cap == 6 and any("NOT watched" in n for n in stats.notices)
        stats = eng.verify(Collector())
        assert eng.cap_reached and stats.skipped_by_cap == 6
        for i in range(6):
            (root / f"f{i + 4:02d}").unlink(missing_ok=True)
        for i in range(4, 10):
            (root / f"f{i:02d}").unlink(missing_ok=True)
        sink = Collector()
        stats = eng.verify(sink)
        assert not eng.cap_reached and stats.skipped_by_cap == 0
        assert len(sink.events) == 0  # the deleted files were the ones that were never watched


@pytest.mark.parametrize(("start", "isolate"), [(None, False), ("forkserver", False), ("spawn", False),
                                               ("spawn", True)])
def test_pool_baseline_equals_inline_baseline(tmp_path: Path, start: str | None, isolate: bool) -> None:
    root = tmp_path / "tree"
    for i in range(600):
        write(root / f"d{i % 7}" / f"s{i % 3}" / f"f{i}.bin", os.urandom(i % 300))
    os.symlink("d0", root / "link")
    inline = FimEngine(args(root), tmp_path / "a.db", processes=1)
    pooled = FimEngine(args(root), tmp_path / "b.db", processes=2, pool_threshold=50, mp_start=start,
                       isolate=isolate)
    try:
        s1 = inline.build_baseline()
        s2 = pooled.build_baseline()
        assert (s1.files_hashed, s1.bytes_hashed) == (s2.files_hashed, s2.bytes_hashed) == (
            600, sum(i % 300 for i in range(600)))
        rows1 = sorted(inline.db.subtree(os.fsencode(root), b"/"))
        rows2 = sorted(pooled.db.subtree(os.fsencode(root), b"/"))
        assert rows1 == rows2 and len(rows1) == 600 + 7 + 21 + 1
    finally:
        inline.close()
        pooled.close()


@pytest.mark.parametrize("isolate", [False, True])
def test_pool_baseline_shares_out_a_big_directory_and_keeps_the_cap(tmp_path: Path, isolate: bool) -> None:
    root = tmp_path / "flat"
    for i in range(1500):
        write(root / f"f{i:04d}", str(i))
    write(root / "sub" / "deep" / "x", "x")
    pooled = FimEngine(args(root), tmp_path / "a.db", processes=2, pool_threshold=10, isolate=isolate)
    capped = FimEngine(args(root, max_files=700), tmp_path / "b.db", processes=2, pool_threshold=10,
                       isolate=isolate)
    try:
        stats = pooled.build_baseline()
        assert stats.files_hashed == 1501 and pooled.files_watched == 1 + 1500 + 2 + 1
        assert pooled.verify(Collector()).files_hashed == 0  # what the pool recorded is what a walk sees
        stats = capped.build_baseline()
        # Every listed entry is either watched or counted as not watched, whichever process listed it:
        # root + 1500 files + "sub", plus "deep" and "x" when "sub" and "deep" made it under the cap.
        assert capped.files_watched == 700 and capped.cap_reached
        assert 1 + 1500 + 1 <= capped.files_watched + stats.skipped_by_cap <= 1 + 1500 + 3
    finally:
        pooled.close()
        capped.close()


def test_realtime_and_verification_never_report_a_change_twice(tmp_path: Path, db: Path) -> None:
    root = tmp_path / "tree"
    for i in range(300):
        write(root / f"f{i}", "old\n")
    with engine(db, root) as eng:
        eng.build_baseline()
        for i in range(300):
            write(root / f"f{i}", f"new {i}\n")
        sink = Collector()
        lock = threading.Lock()

        def locked(events: list) -> None:  # type: ignore[type-arg]
            with lock:
                sink(events)

        paths = [os.fsencode(root / f"f{i}") for i in range(300)]
        threads = [threading.Thread(target=eng.reconcile, args=(paths[i::3], locked)) for i in range(3)]
        threads.append(threading.Thread(target=eng.verify, args=(locked,)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    seen = [e.path for e in sink.events]
    assert len(seen) == len(set(seen)) == 300


def test_deleted_and_replaced_directories(root: Path, db: Path) -> None:
    with engine(db, root) as eng:
        eng.build_baseline()
        for p in (root / "lib").iterdir():
            p.unlink()
        (root / "lib").rmdir()
        write(root / "lib", "now a file\n")
        (root / "img" / "logo.png").unlink()
        (root / "img").rmdir()
        sink = Collector()
        eng.verify(sink)
    assert sorted((Path(e.path).relative_to(root).as_posix(), e.kind.name) for e in sink.events) == [
        ("img", "DELETED"), ("img/logo.png", "DELETED"), ("lib", "MODIFIED"), ("lib/util.php", "DELETED")]


def test_symlink_retarget_and_non_utf8_names(root: Path, db: Path) -> None:
    os.symlink("index.php", root / "current")
    with engine(db, root) as eng:
        eng.build_baseline()
        (root / "current").unlink()
        os.symlink("about.html", root / "current")
        (Path(os.fsdecode(os.fsencode(root) + b"/\xff.php"))).write_text("x")
        sink = Collector()
        eng.verify(sink)
    kinds = {e.path: (e.kind, e.changed_fields[:1]) for e in sink.events}
    assert kinds[f"{root}/current"][0] is Kind.MODIFIED
    assert f"{root}/\\xff.php" in kinds  # reported (escaped), not skipped and not a crash


def test_missing_root_is_a_notice_and_a_deleted_root_reports_its_files(tmp_path: Path, db: Path, root: Path) -> None:
    missing = tmp_path / "not-yet"
    with engine(db, root, missing) as eng:
        stats = eng.build_baseline()
        assert any("does not exist" in n for n in stats.notices)
        for p in sorted(root.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        root.rmdir()
        sink = Collector()
        eng.verify(sink)
        assert len(sink.events) == 7 and {e.kind for e in sink.events} == {Kind.DELETED}
        write(missing / "a", "1")
        sink = Collector()
        eng.verify(sink)
        assert sorted(Path(e.path).name for e in sink.events) == ["a", "not-yet"]


def test_an_unreadable_directory_is_not_reported_as_emptied(root: Path, db: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import checks.fim.scan as scan

    with engine(db, root) as eng:
        eng.build_baseline()
        real = os.scandir
        lib = os.fsencode(root / "lib")

        def scandir(path: bytes) -> object:
            if path == lib:
                raise PermissionError(13, "Permission denied")
            return real(path)

        monkeypatch.setattr(scan.os, "scandir", scandir)  # type: ignore[attr-defined]
        sink = Collector()
        stats = eng.verify(sink)
    assert sink.events == []
    assert any("cannot list" in n and "lib" in n for n in stats.notices)


def test_state_is_private_and_a_damaged_database_is_moved_aside(root: Path, db: Path) -> None:
    old = os.umask(0o022)
    try:
        with engine(db, root) as eng:
            eng.build_baseline()
    finally:
        os.umask(old)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    db.write_bytes(b"this is not a database" * 100)
    with engine(db, root) as eng:
        assert any("moved to" in n for n in eng.open_notices)
        assert not eng.baseline_complete
    assert list(db.parent.glob("state.db.damaged-*"))


def test_changed_params_start_a_new_baseline(root: Path, db: Path) -> None:
    with engine(db, root) as eng:
        eng.build_baseline()
    with engine(db, root, exclude=["*.png"]) as eng:
        assert not eng.baseline_complete and eng.files_watched == 0
        assert eng.open_notices


def test_results_are_split_into_bounded_reports() -> None:
    import datetime as dt

    from checks.fim.model import FimEvent

    now = dt.datetime.now(dt.UTC)
    evs = [FimEvent(kind=Kind.CREATED, path=f"/w/{i}", detected_by=Detector.VERIFY, detected_at=now)
           for i in range(1201)]
    parts = list(chunks(evs))
    assert [len(p) for p in parts] == [EVENTS_PER_RESULT, EVENTS_PER_RESULT, 201]
    big = [FimEvent(kind=Kind.MODIFIED, path="/w/x", detected_by=Detector.VERIFY, detected_at=now, diff="d" * 300_000)
           for _ in range(20)]
    assert all(sum(len(e.diff) for e in p) <= 2 * 2**20 for p in chunks(big))


def test_copy_pass_keeps_only_copies_of_unchanged_text(root: Path, db: Path) -> None:
    with engine(db, root) as eng:
        eng.build_baseline()
        assert eng.copies_pending
        write(root / "about.html", "<h1>changed before the copy pass</h1>\n")
        while eng.fill_copies(2):
            pass
        assert not eng.copies_pending or eng.db.get(os.fsencode(root), b"about.html")[1] == COPY_PENDING  # type: ignore[index]
        row = eng.db.get(os.fsencode(root), b"index.php")
        assert row is not None and row[1] == COPY_KEPT
        assert eng.db.get_copy(os.fsencode(root), b"about.html") is None  # its content is not what was hashed
