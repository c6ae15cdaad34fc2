"""The ``Fim`` check: scheduled collect(), and sessions watching real directories with a real watchdog."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from checks.base import Context
from checks.fim import Detector, Fim, FimArgs, FimResult, FimSession, FimStateError, Kind
from proto.vigil.v1 import report_pb2
from tests.checks.fim._helpers import Emitted, args, write

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="real-time tests use inotify")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "www"
    write(r / "index.php", "<?php echo 'home'; ?>\n")
    write(r / "css" / "site.css", "body { color: black; }\n")
    return r


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def check() -> Fim:
    return Fim()


class _Sessions:
    def __init__(self, check: Fim, state: Path) -> None:
        self.check = check
        self.state = state
        self.started: list[FimSession] = []

    def start(self, a: FimArgs) -> tuple[FimSession, Emitted]:
        emitted = Emitted()
        session = self.check.start(a, Context(state_dir=self.state, emit=emitted))
        self.started.append(session)
        assert session.ready.wait(30), "the startup scan did not finish"
        return session, emitted


@pytest.fixture
def sessions(check: Fim, state: Path) -> Iterator[_Sessions]:
    s = _Sessions(check, state)
    try:
        yield s
    finally:
        for session in s.started:
            session.stop()


def test_metadata_and_result_shape(check: Fim) -> None:
    assert (check.id, check.version, check.report_field, check.default_interval_s) == ("fim", 1, "fim", 3600)
    assert check.args_type is FimArgs and check.runs_here("linux") and check.runs_here("win32")
    assert "fim" in {f.name for f in report_pb2.Report.DESCRIPTOR.oneofs_by_name["result"].fields}
    assert "Example result" in (Fim.__doc__ or "")


def test_collect_needs_a_state_directory(check: Fim, root: Path) -> None:
    with pytest.raises(FimStateError, match="state directory"):
        list(check.collect(args(root), Context()))


def test_collect_creates_the_baseline_then_verifies(check: Fim, root: Path, state: Path) -> None:
    [first] = check.collect(args(root), Context(state_dir=state))
    assert first.baseline_created and first.events == [] and first.files_watched == 4
    assert (first.file_cap, first.file_cap_reached, first.scan_kind) == (200_000, False, "verify")
    write(root / "index.php", "<?php echo 'defaced'; ?>\n")
    [second] = check.collect(args(root), Context(state_dir=state))
    assert not second.baseline_created
    [ev] = second.events
    assert ev.kind is Kind.MODIFIED and ev.detected_by is Detector.VERIFY
    # No session did the copy pass, so the first collect did its share: the diff is there.
    assert "+<?php echo 'defaced'; ?>" in ev.diff
    # The wire form round-trips (times travel as float seconds, so compare on the wire).
    msg = second.to_proto()
    assert FimResult.from_proto(msg).to_proto() == msg


def test_collect_emits_event_batches_before_its_summary(check: Fim, root: Path, state: Path) -> None:
    list(check.collect(args(root), Context(state_dir=state)))
    for i in range(1200):
        write(root / "drop" / f"f{i}.txt", f"{i}\n")
    emitted = Emitted()
    [summary] = check.collect(args(root), Context(state_dir=state, emit=emitted))
    assert summary.events == [] and summary.files_hashed == 1200
    assert [len(r.events) for r in emitted.results] == [500, 500, 201]  # 1200 files + their directory
    assert all(r.scan_kind == "verify" for r in emitted.results)


def test_collect_reports_the_file_cap_as_a_warning(check: Fim, root: Path, state: Path) -> None:
    ctx = Context(state_dir=state)
    [res] = check.collect(args(root, max_files=2), ctx)
    assert res.file_cap_reached and res.file_cap == 2 and res.files_watched == 2
    assert any("file cap" in w for w in ctx.warnings) and any("NOT watched" in n for n in res.notices)


def test_realtime_change_is_reported_within_a_second(sessions: _Sessions, root: Path) -> None:
    _session, emitted = sessions.start(args(root))
    [startup] = emitted.results
    assert startup.scan_kind == "startup" and startup.baseline_created
    target = root / "index.php"
    t0 = time.monotonic()
    write(target, "<?php echo 'defaced'; ?>\n")

    def changed(results: list[FimResult]) -> bool:
        return any(e.path == str(target) for r in results for e in r.events)

    emitted.wait_for("the real-time event", changed, timeout=10)
    latency = time.monotonic() - t0
    [ev] = [e for e in emitted.events if e.path == str(target)]
    assert ev.kind is Kind.MODIFIED and ev.detected_by is Detector.REALTIME
    assert latency < 1.0, f"took {latency:.3f}s"
    [res] = [r for r in emitted.results if r.events]
    assert res.scan_kind == "realtime" and res.files_watched == 4


def test_realtime_sees_create_rename_chmod_delete_and_new_directories(sessions: _Sessions, root: Path) -> None:
    _session, emitted = sessions.start(args(root, exclude=["*.log"], coalesce_ms=50))
    write(root / "up" / "deep" / "shell.php", "<?php system($_GET['c']); ?>\n")
    emitted.wait_for("the new file", lambda rs: any(e.path.endswith("shell.php") for r in rs for e in r.events))
    os.rename(root / "css" / "site.css", root / "css" / "main.css")
    os.chmod(root / "index.php", 0o777)
    write(root / "debug.log", "excluded\n")
    emitted.wait_for("the rename and chmod", lambda rs: {e.kind for r in rs for e in r.events} >= {
        Kind.RENAMED, Kind.PERMISSIONS})
    (root / "up" / "deep" / "shell.php").unlink()
    emitted.wait_for("the deletion", lambda rs: any(e.kind is Kind.DELETED for r in rs for e in r.events))
    got = sorted((Path(e.path).relative_to(root).as_posix(), e.kind.name) for e in emitted.events)
    assert got == [
        ("css/main.css", "RENAMED"), ("index.php", "PERMISSIONS"), ("up", "CREATED"), ("up/deep", "CREATED"),
        ("up/deep/shell.php", "CREATED"), ("up/deep/shell.php", "DELETED"),
    ]
    created = next(e for e in emitted.events if e.kind is Kind.CREATED and e.path.endswith("shell.php"))
    assert "system($_GET" in created.diff


def _write_burst(directory: Path, n: int) -> set[str]:
    """Write ``n`` files from another process, as fast as it can (as a deployment or an attacker would)."""
    code = (
        "import os, sys\n"
        "d, n = sys.argv[1], int(sys.argv[2])\n"
        "for i in range(n):\n"
        "    with open(os.path.join(d, f'f{i:05d}.html'), 'w') as f:\n"
        "        f.write('<p>generated</p>\\n')\n"
    )
    directory.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-c", code, str(directory), str(n)], check=True, timeout=120)
    return {str(directory / f"f{i:05d}.html") for i in range(n)}


def _accounted(emitted: Emitted, expected: set[str]) -> None:
    emitted.wait_for(f"every one of the {len(expected)} files",
                     lambda rs: expected <= {e.path for r in rs for e in r.events}, timeout=120)
    created = [e.path for e in emitted.events if e.path in expected and e.kind is Kind.CREATED]
    assert len(created) == len(set(created)) == len(expected)  # every file created once: none lost, none twice
    # A file caught between the writer's open() and write() (a busy machine) is reported CREATED empty,
    # then MODIFIED: two changes, not a duplicate.
    assert {e.kind for e in emitted.events if e.path in expected} <= {Kind.CREATED, Kind.MODIFIED}
    assert all(len(r.events) <= 500 for r in emitted.results)


def test_a_burst_of_10000_writes_is_fully_accounted_for(sessions: _Sessions, root: Path) -> None:
    _session, emitted = sessions.start(args(root))
    expected = _write_burst(root / "burst", 10_000)
    _accounted(emitted, expected)
    # If the kernel queue overflowed, the rescan said so (in its summary, after the batches of changes it
    # found, which carry no notice of their own); either way nothing is missing.
    if any(r.scan_kind == "overflow_rescan" for r in emitted.results):
        emitted.wait_for("the rescan's summary", lambda rs: any(
            r.scan_kind == "overflow_rescan" and any("rescanned" in n for n in r.notices) for r in rs))


def _max_queued_events() -> int:
    try:
        return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    except (OSError, ValueError):
        return 0


def test_a_real_kernel_queue_overflow_is_rescanned(sessions: _Sessions, root: Path) -> None:
    queue = _max_queued_events()
    if not 0 < queue <= 100_000:
        pytest.skip(f"fs.inotify.max_queued_events is {queue}: too large to overflow in a test")
    (root / "burst").mkdir()  # watched before the burst: events for its files go through the kernel queue
    session, emitted = sessions.start(args(root))
    assert session.watcher is not None and session.watcher._observer is not None
    inotify_fd = session.watcher._observer.inotify_fd  # type: ignore[attr-defined]
    # Hold watchdog's reader back (its buffer lock) while another process writes: the kernel's queue
    # (max_queued_events, per inotify instance) fills up and overflows for real. Each file makes at
    # least three events (create, modify, close_write).
    n = max(10_000, queue // 2)
    with inotify_fd._lock:
        expected = _write_burst(root / "burst", n)
    _accounted(emitted, expected)
    emitted.wait_for("the rescan's report", lambda rs: any(r.scan_kind == "overflow_rescan" and r.notices for r in rs))
    rescans = [r for r in emitted.results if r.scan_kind == "overflow_rescan" and r.notices]
    assert "overflowed" in rescans[0].notices[0] and "rescanned" in rescans[0].notices[0]
    assert any(e.detected_by is Detector.OVERFLOW_RESCAN for e in emitted.events)


def test_overflow_triggers_a_rescan_with_a_notice(sessions: _Sessions, root: Path) -> None:
    from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, WatchDescriptor

    session, emitted = sessions.start(args(root))
    watcher = session.watcher
    assert watcher is not None and watcher.alive()
    # Lose the next events, as the kernel does when its queue overflows...
    handler_sink = session.coalescer.add
    session.coalescer.add = lambda paths: None  # type: ignore[method-assign]
    write(root / "lost.php", "<?php /* written while events were lost */ ?>\n")
    write(root / "index.php", "<?php echo 'changed too'; ?>\n")
    session.coalescer.add = handler_sink  # type: ignore[method-assign]
    # ...and deliver IN_Q_OVERFLOW through watchdog's own inotify reader, as the kernel would.
    observer = watcher._observer
    assert observer is not None
    fd = observer.inotify_fd  # type: ignore[attr-defined]
    fd.handle_event(InotifyEvent(WatchDescriptor(-1), InotifyConstants.IN_Q_OVERFLOW, 0, b""))

    def rescanned(results: list[FimResult]) -> bool:
        return any(r.scan_kind == "overflow_rescan" and r.notices for r in results)

    emitted.wait_for("the overflow rescan", rescanned)
    events = {e.path: e for e in emitted.events}
    assert events[str(root / "lost.php")].detected_by is Detector.OVERFLOW_RESCAN
    assert events[str(root / "index.php")].kind is Kind.MODIFIED
    [summary] = [r for r in emitted.results if r.scan_kind == "overflow_rescan" and r.notices]
    notice = summary.notices[0]
    assert "overflowed" in notice and "rescanned" in notice and "2 changes" in notice
    # Watching goes on after the rescan.
    write(root / "after.php", "x\n")
    emitted.wait_for("an event after the rescan", lambda rs: any(e.path.endswith("after.php") for r in rs
                                                                 for e in r.events))


def test_restart_reports_exactly_what_changed_while_stopped(sessions: _Sessions, root: Path) -> None:
    first, _ = sessions.start(args(root))
    first.stop()
    write(root / "index.php", "<?php echo 'while stopped'; ?>\n")
    write(root / "new.php", "<?php ?>\n")
    (root / "css" / "site.css").unlink()
    os.chmod(root / "css", 0o700)
    _, emitted = sessions.start(args(root))
    got = sorted((Path(e.path).name, e.kind.name, e.detected_by.name) for e in emitted.events)
    assert got == [("css", "PERMISSIONS", "STARTUP"), ("index.php", "MODIFIED", "STARTUP"),
                   ("new.php", "CREATED", "STARTUP"), ("site.css", "DELETED", "STARTUP")]
    assert emitted.results[-1].scan_kind == "startup" and not emitted.results[-1].baseline_created


def test_a_deleted_and_recreated_root_is_watched_again(sessions: _Sessions, root: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import checks.fim.check as fim_check

    monkeypatch.setattr(fim_check, "HEALTH_CHECK_S", 0.2)
    _session, emitted = sessions.start(args(root))
    for p in sorted(root.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    root.rmdir()
    emitted.wait_for("the deletions", lambda rs: sum(e.kind is Kind.DELETED for r in rs for e in r.events) >= 4)
    write(root / "again.php", "back\n")
    emitted.wait_for("the recreated root's file", lambda rs: any(e.path.endswith("again.php") for r in rs
                                                                  for e in r.events))
    write(root / "later.php", "later\n")
    emitted.wait_for("real time in the recreated root", lambda rs: any(e.path.endswith("later.php") for r in rs
                                                                       for e in r.events))


def test_collect_shares_the_sessions_engine(sessions: _Sessions, check: Fim, root: Path, state: Path) -> None:
    session, emitted = sessions.start(args(root))
    write(root / "index.php", "<?php echo 'x'; ?>\n")
    emitted.wait_for("the real-time event", lambda rs: any(r.events for r in rs))
    [res] = check.collect(args(root), Context(state_dir=state))
    assert res.events == []  # real time reported it; verification must not report it again
    assert session.engine is not None and check._engines[state].refs == 1


def test_stop_is_prompt_and_closes_everything(check: Fim, root: Path, state: Path) -> None:
    emitted = Emitted()
    session = check.start(args(root), Context(state_dir=state, emit=emitted))
    assert session.ready.wait(30)
    t0 = time.monotonic()
    session.stop()
    assert time.monotonic() - t0 < 5
    assert not any(t.name in ("fim-session", "fim-scan") and t.is_alive() for t in threading.enumerate())
    assert state not in check._engines


def test_start_without_emit_is_refused(check: Fim, root: Path, state: Path) -> None:
    from checks.fim import FimError

    with pytest.raises(FimError, match="emit"):
        check.start(args(root), Context(state_dir=state))


def test_realtime_false_still_reports_startup_changes(sessions: _Sessions, root: Path) -> None:
    session, emitted = sessions.start(args(root, realtime=False))
    assert session.watcher is None
    assert emitted.results[0].baseline_created


def test_a_root_given_as_a_symlink_is_watched_where_it_points(sessions: _Sessions, tmp_path: Path) -> None:
    real = tmp_path / "releases" / "v2"
    write(real / "index.php", "v2\n")
    link = tmp_path / "current"
    os.symlink(real, link)
    _, emitted = sessions.start(args(link))
    write(real / "index.php", "v2 patched\n")
    emitted.wait_for("the change under the symlinked root",
                     lambda rs: any(e.path == str(link / "index.php") for r in rs for e in r.events))


def test_a_failing_session_says_so_and_starts_again(sessions: _Sessions, root: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import checks.fim.check as fim_check
    from checks.fim.scan import FimEngine

    monkeypatch.setattr(fim_check, "_RETRY_FIRST_S", 0.1)
    real = FimEngine.reconcile
    calls = []

    def flaky(self: FimEngine, *a: object, **kw: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(FimEngine, "reconcile", flaky)
    _, emitted = sessions.start(args(root))
    write(root / "first.php", "1\n")
    emitted.wait_for("the failure notice", lambda rs: any("starting again" in n for r in rs for n in r.notices))
    # The restart rescans: the change that was being reported when it failed is not lost.
    emitted.wait_for("the change, after the restart",
                     lambda rs: any(e.path.endswith("first.php") for r in rs for e in r.events))
    write(root / "second.php", "2\n")
    emitted.wait_for("real time after the restart",
                     lambda rs: any(e.path.endswith("second.php") for r in rs for e in r.events))


def test_collect_says_partial_when_paths_cannot_be_read(check: Fim, root: Path, state: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import checks.fim.scan as scan

    list(check.collect(args(root), Context(state_dir=state)))
    real = os.scandir
    css = os.fsencode(root / "css")

    def scandir(path: bytes) -> object:
        if path == css:
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(scan.os, "scandir", scandir)  # type: ignore[attr-defined]
    ctx = Context(state_dir=state)
    [res] = check.collect(args(root), ctx)
    assert res.events == [] and any("cannot list" in n for n in res.notices)
    assert any("could not be read" in w for w in ctx.warnings)
