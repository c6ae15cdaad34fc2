"""One controller per data directory, and administrative commands that never create one by mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import UsageError
from controller.cli.controller import main
from controller.core import Controller, ControllerConfig, DataDirLock, find_data_dir

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Correct-Horse-42-battery"


def make_controller(data_dir: Path) -> None:
    ctl = Controller.open(ControllerConfig(data_dir=data_dir))
    ctl.writer.shutdown()
    ctl.sessions.kw["bind"].dispose()


def test_a_directory_without_a_controller_is_refused_and_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "typo"
    monkeypatch.setattr(sys, "stdin", _Stdin(PASSWORD + "\n"))
    code = main(["user", "create", "--data-dir", str(empty), "--username", "ann", "--role", "admin",
                 "--password-stdin"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"vigil-controller: error: {empty} holds no controller (no controller.db or pki/ca.pem, there or "
                   "in controller/); give the --data-dir of `vigil-controller serve` or `vigil up`\n")
    assert not empty.exists()


def test_the_layout_of_vigil_up_is_found_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    up_dir = tmp_path / "vigil-data"
    make_controller(up_dir / "controller")
    monkeypatch.setattr(sys, "stdin", _Stdin(PASSWORD + "\n"))
    code = main(["user", "create", "--data-dir", str(up_dir), "--username", "ann", "--role", "admin",
                 "--password-stdin"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err == f"vigil-controller: using the controller in {up_dir / 'controller'}\ncreated admin ann\n"
    # The user is in the controller vigil up runs, and no second controller appeared next to it.
    assert main(["apikey", "create", "--data-dir", str(up_dir / "controller"), "--username", "ann"]) == 0
    assert not (up_dir / "controller.db").exists() and not (up_dir / "pki").exists()


def test_find_data_dir() -> None:
    with pytest.raises(UsageError, match="holds no controller"):
        find_data_dir(Path("/nonexistent/vigil"))
    assert find_data_dir(Path("/nonexistent/vigil"), create=True) == Path("/nonexistent/vigil")


def test_a_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path).acquire()
    assert (tmp_path / "controller.lock").read_text() == f"{os.getpid()}\n"
    # flock locks belong to open files: a second open in this process contends as another process would.
    with pytest.raises(UsageError) as info:
        DataDirLock(tmp_path).acquire()
    assert str(info.value) == (f"{tmp_path} is in use by another controller (pid {os.getpid()}); stop it, or give "
                               "another --data-dir")
    first.release()
    DataDirLock(tmp_path).acquire().release()


def _serve(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "controller.cli.controller", "serve", "--data-dir", str(data_dir),
         "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    data_dir = tmp_path / "data"
    proc = _serve(data_dir)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # the ready line, written once the controller listens
        assert "API on http://127.0.0.1:" in ready, proc.stderr.read() if proc.stderr else ready
        assert ready.rstrip().endswith(f"data in {data_dir.resolve()}")
        yield proc, data_dir
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=30)  # also closes the pipes


def test_a_second_controller_on_the_same_directory_refuses_at_once(
    serving: tuple[subprocess.Popen[str], Path],
) -> None:
    first, data_dir = serving
    second = _serve(data_dir)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2
    assert out == ""
    assert err == (f"vigil-controller: error: {data_dir.resolve()} is in use by another controller (pid {first.pid}); "
                   "stop it, or give another --data-dir\n")
    assert first.poll() is None  # the first one serves on


def test_the_lock_goes_with_the_process(serving: tuple[subprocess.Popen[str], Path]) -> None:
    first, data_dir = serving
    first.kill()  # no clean-up runs: the kernel releases the lock
    first.wait(30)
    assert (data_dir / "controller.lock").exists()
    DataDirLock(data_dir.resolve()).acquire().release()


class _Stdin:
    """Just enough of sys.stdin for ``--password-stdin``."""

    def __init__(self, text: str) -> None:
        self._lines = iter(text.splitlines(keepends=True))

    def readline(self) -> str:
        return next(self._lines, "")
