"""``Av.collect()`` on staged fixture directories, with the host's binaries and processes pinned."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from checks.av import (
    DEFAULT_CLAMAV_DIRS,
    NEVER_UPDATED_HOURS,
    PROBES,
    Av,
    AvArgs,
    AvDatabase,
    AvParamsError,
    AvProduct,
    AvResult,
    Probe,
)
from checks.av.products import ClamAvProbe, DefenderProbe, clamav, defender
from checks.base import Check, Context
from proto.vigil.v1 import av_pb2
from tests.checks.av._fixtures import UTC, stage
from tests.checks.av._fixtures import defender as defender_fixture

NOW = dt.datetime(2024, 11, 20, 12, 0, tzinfo=UTC)


@dataclass
class FakeHost:
    binaries: dict[str, str] = field(default_factory=dict)
    processes: set[str] = field(default_factory=set)


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    """A host without ClamAV binaries or daemons unless a test adds them."""
    fake = FakeHost()
    monkeypatch.setattr(clamav, "_find_binary", lambda name: fake.binaries.get(name))
    monkeypatch.setattr(clamav, "_process_names", lambda: set(fake.processes))
    return fake


def collect(args: AvArgs, platform: str = "linux") -> tuple[AvResult, Context]:
    ctx = Context(platform=platform)
    [result] = Av(clock=lambda: NOW).collect(args, ctx)
    return result, ctx


def only(result: AvResult) -> AvProduct:
    [product] = result.products
    return product


def test_metadata() -> None:
    assert (Av.id, Av.version, Av.report_field, Av.default_interval_s) == ("av", 1, "av", 3600)
    assert Av.platforms == ("linux", "darwin", "win32")
    assert Av.args_type is AvArgs
    assert isinstance(Av(), Check)
    assert Av.__doc__ is not None and "Example result" in Av.__doc__
    assert Av.__module__ == "checks.av.check"


def test_probes_are_one_explicit_tuple() -> None:
    assert [type(p) for p in PROBES] == [ClamAvProbe, DefenderProbe]
    assert [p.name for p in PROBES] == ["clamav", "windows-defender"]
    assert all(isinstance(p, Probe) for p in PROBES)


def test_args_defaults_and_unknown_keys() -> None:
    assert AvArgs.from_params({}) == AvArgs() == AvArgs(clamav_dirs=list(DEFAULT_CLAMAV_DIRS), defender_json=None)
    assert AvArgs().clamav_dirs == [
        "/var/lib/clamav",
        "/usr/local/share/clamav",
        "/var/db/clamav",
        "/opt/homebrew/var/lib/clamav",
    ]
    assert AvArgs.from_params({"future_knob": 1, "clamav_dirs": ["/srv/clamav"], "defender_json": "s.json"}) == AvArgs(
        clamav_dirs=["/srv/clamav"], defender_json="s.json"
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"clamav_dirs": "/var/lib/clamav"}, "clamav_dirs must be a list of directory paths"),
        ({"clamav_dirs": ["/var/lib/clamav", 3]}, "clamav_dirs must be a list"),
        ({"clamav_dirs": [""]}, "clamav_dirs must be a list"),
        ({"defender_json": 3}, "defender_json must be a file path"),
    ],
)
def test_args_refuse_wrong_types(params: dict[str, object], message: str) -> None:
    with pytest.raises(AvParamsError, match=message) as info:
        AvArgs.from_params(params)
    assert isinstance(info.value, ValueError)


def test_no_av_is_an_empty_result_not_an_error(host: FakeHost, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result, ctx = collect(AvArgs(clamav_dirs=[str(tmp_path / "empty"), str(tmp_path / "missing")]))
    assert result == AvResult(products=[])
    assert result.to_proto() == av_pb2.AvResult()
    assert ctx.warnings == []


def test_no_dirs_and_nothing_installed(host: FakeHost) -> None:
    result, ctx = collect(AvArgs(clamav_dirs=[]))
    assert (result.products, ctx.warnings) == ([], [])


def test_full_set_of_cvd(host: FakeHost, tmp_path: Path) -> None:
    db = stage(tmp_path / "db", main_cvd="main.cvd", daily_cvd="daily.cvd", bytecode_cvd="bytecode.cvd")
    host.processes = {"clamd", "freshclam"}
    result, ctx = collect(AvArgs(clamav_dirs=[str(db)]))
    product = only(result)
    assert ctx.warnings == []
    assert product.database_dir == str(db)
    assert [(d.name, d.version, Path(d.path).name) for d in product.databases] == [
        ("bytecode", "335", "bytecode.cvd"),
        ("daily", "27450", "daily.cvd"),
        ("main", "62", "main.cvd"),
    ]
    assert product.signature_version == "27450"
    assert product.signature_built_at == dt.datetime(2024, 11, 18, 8, 42, tzinfo=UTC)
    assert product.signature_age_hours == 51.3  # 51 h 18 min
    assert (product.engine_running, product.updater_running, product.updater_known) == (True, True, True)
    assert product.engine_version == ""  # no binary on this pinned host


def test_live_host_layout_cld_next_to_an_older_cvd(host: FakeHost, tmp_path: Path) -> None:
    db = stage(tmp_path / "db", main_cvd="main.cvd", daily_cvd="daily.cvd", daily_cld="daily.cld")
    product = only(collect(AvArgs(clamav_dirs=[str(db)]))[0])
    [daily] = [d for d in product.databases if d.name == "daily"]
    assert (daily.path, daily.version) == (str(db / "daily.cld"), "27451")
    assert product.signature_version == "27451"
    assert product.signature_age_hours == 27.33


def test_newer_full_download_beats_the_older_cld(host: FakeHost, tmp_path: Path) -> None:
    db = stage(tmp_path / "db", daily_cld="daily.cld", daily_cvd="newer/daily.cvd")
    product = only(collect(AvArgs(clamav_dirs=[str(db)]))[0])
    assert [(Path(d.path).name, d.version) for d in product.databases] == [("daily.cvd", "27452")]


def test_other_files_of_the_database_dir_are_ignored(host: FakeHost, tmp_path: Path) -> None:
    db = stage(tmp_path / "db", daily_cld="daily.cld", main_cvd="main.cvd")
    # Signatures files (*.sign), incremental updates, freshclam's state, a non-database .cvd name.
    for junk in ("daily-27451.cvd.sign", "daily.cvd.sign", "main.cvd.sign", "daily-27452.cdiff", "freshclam.dat"):
        (db / junk).write_bytes(b"not a database\n")
    (db / "safebrowsing.cvd").write_bytes(b"old\n")
    result, ctx = collect(AvArgs(clamav_dirs=[str(db)]))
    assert [Path(d.path).name for d in only(result).databases] == ["daily.cld", "main.cvd"]
    assert ctx.warnings == []


def test_damaged_database_is_skipped_with_a_warning(host: FakeHost, tmp_path: Path) -> None:
    db = stage(tmp_path / "db", daily_cvd="daily.cvd", main_cvd="main.cvd")
    (db / "daily.cld").write_bytes(b"<html>503 Service Unavailable</html>\n")
    result, ctx = collect(AvArgs(clamav_dirs=[str(db)]))
    assert [Path(d.path).name for d in only(result).databases] == ["daily.cvd", "main.cvd"]
    [warning] = ctx.warnings
    assert warning.startswith(f"clamav: {db / 'daily.cld'}: not a ClamAV database")


def test_unreadable_database_is_skipped_with_a_warning(
    host: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = stage(tmp_path / "db", daily_cvd="daily.cvd", main_cvd="main.cvd")
    real_open = Path.open

    def deny(self: Path, *args: Any, **kwargs: Any) -> Any:
        # Root reads through any file mode, so the denial is simulated.
        if self.name == "main.cvd":
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    result, ctx = collect(AvArgs(clamav_dirs=[str(db)]))
    assert [d.name for d in only(result).databases] == ["daily"]
    assert ctx.warnings == [f"clamav: cannot read {db / 'main.cvd'}: Permission denied"]


def test_first_dir_with_databases_wins(host: FakeHost, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    first = stage(tmp_path / "first", daily_cld="daily.cld")
    second = stage(tmp_path / "second", daily_cvd="newer/daily.cvd")
    result, ctx = collect(AvArgs(clamav_dirs=[str(empty), str(first), str(second)]))
    product = only(result)
    assert (product.database_dir, product.signature_version) == (str(first), "27451")
    assert ctx.warnings == [
        f"clamav: databases also found in {second}, ignored; reported those in {first} "
        "(set the av rule's clamav_dirs to choose)"
    ]


def test_installed_but_never_updated(host: FakeHost, tmp_path: Path) -> None:
    # Debian's packages ship no databases: until freshclam runs, the directory is empty.
    host.binaries = {"clamscan": "/usr/bin/clamscan"}
    (tmp_path / "clamav").mkdir()
    result, _ = collect(AvArgs(clamav_dirs=[str(tmp_path / "clamav")]))
    product = only(result)
    assert (product.name, product.database_dir, product.databases) == ("clamav", "", ())
    assert (product.signature_built_at, product.signature_age_hours) == (None, NEVER_UPDATED_HOURS)


def test_a_running_daemon_alone_means_installed(host: FakeHost) -> None:
    host.processes = {"freshclam"}
    product = only(collect(AvArgs(clamav_dirs=[]))[0])
    assert (product.updater_running, product.engine_running) == (True, False)


def test_clamav_is_not_probed_on_windows() -> None:
    assert not ClamAvProbe().wanted(AvArgs(), Context(platform="win32"))
    assert ClamAvProbe().wanted(AvArgs(), Context(platform="darwin"))


def test_on_macos_the_updater_state_is_unknown(host: FakeHost, tmp_path: Path) -> None:
    # Homebrew runs freshclam as a periodic launchd job, so "not running" would mean nothing.
    db = stage(tmp_path / "db", daily_cvd="daily.cvd")
    result, _ = collect(AvArgs(clamav_dirs=[str(db)]), platform="darwin")
    assert only(result).updater_known is False


def test_defender_from_a_captured_file_on_linux(host: FakeHost) -> None:
    result, ctx = collect(AvArgs(clamav_dirs=[], defender_json=str(defender_fixture("ps51_stale"))))
    product = only(result)
    assert (product.name, product.signature_version, product.realtime_protection) == (
        "windows-defender",
        "1.411.287.0",
        False,
    )
    assert ctx.warnings == []


def test_defender_is_asked_only_on_windows_without_a_capture() -> None:
    probe = DefenderProbe()
    assert not probe.wanted(AvArgs(), Context(platform="linux"))
    assert probe.wanted(AvArgs(), Context(platform="win32"))
    assert probe.wanted(AvArgs(defender_json="s.json"), Context(platform="darwin"))


def _fake_run(returncode: int = 0, stdout: bytes = b"", stderr: bytes = b"", exc: Exception | None = None) -> object:
    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        assert cmd == [
            "powershell",
            "-NoProfile",
            "-NonInteractive",
            "-Command",
            "Get-MpComputerStatus | ConvertTo-Json",
        ]
        assert kwargs["timeout"] == 60.0
        if exc is not None:
            raise exc
        return subprocess.CompletedProcess(cmd, returncode, stdout, stderr)

    return run


def test_windows_runs_get_mpcomputerstatus(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = defender_fixture("ps51_healthy").read_bytes()
    monkeypatch.setattr(subprocess, "run", _fake_run(stdout=stdout))
    result, ctx = collect(AvArgs(), platform="win32")
    product = only(result)
    assert (product.name, product.engine_version, product.engine_running) == ("windows-defender", "1.1.24050.5", True)
    assert ctx.warnings == []


def test_powershell_hang_is_a_warning_not_a_false_no_av(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", _fake_run(exc=subprocess.TimeoutExpired("powershell", 60)))
    result, ctx = collect(AvArgs(), platform="win32")
    assert result.products == []
    assert ctx.warnings == ["windows-defender: Get-MpComputerStatus did not answer within 60s"]


def test_missing_powershell_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", _fake_run(exc=FileNotFoundError("powershell")))
    _, ctx = collect(AvArgs(), platform="win32")
    assert ctx.warnings == ["windows-defender: powershell.exe not found on PATH, so Defender could not be asked"]


def test_one_failing_probe_does_not_hide_the_others(host: FakeHost, tmp_path: Path) -> None:
    db = stage(tmp_path / "db", daily_cld="daily.cld")
    result, ctx = collect(AvArgs(clamav_dirs=[str(db)], defender_json=str(tmp_path / "missing.json")))
    assert [p.name for p in result.products] == ["clamav"]
    [warning] = ctx.warnings
    assert warning.startswith("windows-defender: cannot read defender_json file")


def test_custom_probe_list_is_honoured() -> None:
    class Fake(Probe):
        name = "fake-av"
        platforms = ("linux",)

        def detect(self, args: AvArgs, ctx: Context, now: dt.datetime) -> AvProduct | None:
            return AvProduct(name=self.name, signature_built_at=now, signature_age_hours=0.0)

    [result] = Av(clock=lambda: NOW, probes=(Fake(),)).collect(AvArgs(), Context(platform="linux"))
    assert result.products == [AvProduct(name="fake-av", signature_built_at=NOW, signature_age_hours=0.0)]


def _sample_result(tmp_path: Path) -> AvResult:
    db = stage(tmp_path / "db", main_cvd="main.cvd", daily_cld="daily.cld", bytecode_cvd="bytecode.cvd")
    clam = clamav.build_product(
        clamav.select_databases(
            clamav.parse_cvd_header((db / n).read_bytes(), db / n) for n in ("main.cvd", "daily.cld", "bytecode.cvd")
        ),
        str(db),
        "1.4.3",
        {"clamd", "freshclam"},
        "linux",
        NOW,
    )
    off = defender.parse_mpcomputerstatus(defender.read_captured(str(defender_fixture("ps51_service_off"))), NOW)
    assert off is not None
    return AvResult(products=[clam, off])


def test_proto_round_trip(tmp_path: Path) -> None:
    result = _sample_result(tmp_path)
    wire = av_pb2.AvResult.FromString(result.to_proto().SerializeToString())
    assert AvResult.from_proto(wire) == result
    # Unset times stay unset rather than becoming 1970.
    assert not wire.products[1].HasField("signature_built_at")
    assert AvResult.from_proto(av_pb2.AvResult()) == AvResult(products=[])
    db = AvDatabase("daily", "/db/daily.cvd", "1", 1, 1, None, "b")
    assert AvDatabase.from_proto(db.to_proto()) == db


def test_facts_as_the_controller_sees_them(tmp_path: Path) -> None:
    # controller/ingest.py: MessageToDict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    facts = MessageToDict(
        _sample_result(tmp_path).to_proto(), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    clam, off = facts["products"]
    assert {k: v for k, v in clam.items() if k != "databases"} == {
        "name": "clamav",
        "engine_version": "1.4.3",
        "signature_version": "27451",
        "signature_built_at": "2024-11-19T08:40:00Z",
        "signature_age_hours": 27.33,
        "engine_running": True,
        "updater_running": True,
        "updater_known": True,
        "realtime_protection": False,
        "database_dir": str(tmp_path / "db"),
    }
    assert clam["databases"][1] == {
        "name": "daily",
        "path": str(tmp_path / "db" / "daily.cld"),
        "version": "27451",
        "signatures": "3",  # uint64: a string in proto3 JSON
        "functionality_level": 213,
        "built_at": "2024-11-19T08:40:00Z",
        "builder": "vigil-fixtures",
    }
    assert "signature_built_at" not in off
    assert (off["name"], off["signature_age_hours"], off["engine_running"]) == ("windows-defender", 1e6, False)
