"""``Ntp.collect()`` on Linux fed the captured fixtures through stand-ins for psutil and the tools."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import psutil
import pytest

from checks.base import Check, Context
from checks.ntp import Ntp, NtpArgs, NtpArgsError, NtpResult, NtpSource, linux, windows
from tests.checks.ntp._fixtures import approx, read

FIXTURE_OF = {
    linux.CHRONYC_TRACKING: "chronyc_c_tracking",
    linux.CHRONYC_SOURCES: "chronyc_c_sources",
    linux.NTPQ_RV: "ntpq_c_rv",
    linux.NTPQ_PEERS: "ntpq_pn",
    linux.TIMEDATECTL_TIMESYNC: "timedatectl_show_timesync_all",
    linux.TIMEDATECTL_TIMESYNC_STATUS: "timedatectl_timesync_status",
}
NO_SYSTEMD = read("timedatectl_no_systemd", "timedatectl_show.stderr").strip().replace("\n", " / ")


def fake_host(
    monkeypatch: pytest.MonkeyPatch,
    processes: list[str],
    scenario: str = "",
    failing: Mapping[tuple[str, ...], str] | None = None,
    installed: list[str] | None = None,
) -> list[tuple[str, ...]]:
    """Make ``linux`` see ``processes`` and answer each tool with ``scenario``'s fixture."""
    ran: list[tuple[str, ...]] = []
    failing = dict(failing or {})

    def run(command: Sequence[str]) -> str:
        key = tuple(command)
        ran.append(key)
        if key in failing:
            raise linux.CommandFailed(failing[key])
        return read(scenario, FIXTURE_OF[key])

    monkeypatch.setattr(linux, "process_names", lambda: ["systemd", "sshd", *processes])
    monkeypatch.setattr(linux, "run", run)
    monkeypatch.setattr(linux, "installed", lambda: list(installed or []))
    return ran


def collect(args: NtpArgs | None = None) -> tuple[NtpResult, Context]:
    ctx = Context(platform="linux")
    [result] = Ntp().collect(args or NtpArgs(), ctx)
    return result, ctx


def test_chronyd_fast_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = fake_host(monkeypatch, ["chronyd"], "chrony_fast_5s")
    result, ctx = collect()
    assert ran == [linux.CHRONYC_TRACKING, linux.CHRONYC_SOURCES]
    assert ctx.warnings == []
    assert (result.daemon, result.daemon_running, result.synchronized) == ("chronyd", True, True)
    assert (result.offset_ms, result.offset_source) == (approx(-4999.964237), "daemon")
    assert (result.stratum, result.reference) == (3, "10.201.1.4")
    assert result.seconds_since_sync is not None and result.seconds_since_sync > 0
    assert result.sources == [NtpSource("10.201.1.4", 2, approx(0.00089), 0.0, True, "selected")]


def test_chronyd_without_sources_still_reports_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_host(monkeypatch, ["chronyd"], "chrony_synced", failing={linux.CHRONYC_SOURCES: "`chronyc -c sources` x"})
    result, ctx = collect()
    assert result.synchronized and result.sources == []
    assert ctx.warnings == ["chronyd's sources are missing: `chronyc -c sources` x"]


def test_chronyd_unreadable_is_a_warning_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    message = "`chronyc -c tracking` exited with 1: 506 Cannot talk to daemon"
    fake_host(monkeypatch, ["chronyd"], "chrony_synced", failing={linux.CHRONYC_TRACKING: message})
    result, ctx = collect()
    assert (result.daemon, result.daemon_running, result.synchronized, result.offset_source) == (
        "chronyd", True, False, "",
    )  # fmt: skip
    assert ctx.warnings == [f"chronyd runs but its state could not be read: {message}"]


def test_ntpd(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = fake_host(monkeypatch, ["ntpd"], "ntpsec_synced")
    result, _ = collect()
    assert ran == [linux.NTPQ_RV, linux.NTPQ_PEERS]
    assert (result.daemon, result.synchronized, result.stratum, result.reference) == ("ntpd", True, 9, "10.201.1.1")
    assert result.daemon_offset_ms == approx(0.009706)
    assert [s.state for s in result.sources] == ["selected"]


def test_ntpd_refusing_to_step(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_host(monkeypatch, ["ntpd"], "ntpsec_step_refused_fast_5s")
    result, _ = collect()
    assert (result.synchronized, result.offset_source, result.reference) == (False, "", "STEP")
    assert [s.state for s in result.sources] == ["unreachable"]


def test_timesyncd_on_a_host_without_systemd_pid1(monkeypatch: pytest.MonkeyPatch) -> None:
    # systemd-timesyn: the kernel's 15-character process name.
    fake_host(
        monkeypatch,
        ["systemd-timesyn"],
        "timesyncd_slow_5s",
        failing={linux.TIMEDATECTL_SHOW: f"`timedatectl show` exited with 1: {NO_SYSTEMD}"},
    )
    result, ctx = collect()
    assert (result.daemon, result.synchronized, result.reference, result.stratum) == (
        "systemd-timesyncd", True, "10.201.1.3", 3,
    )  # fmt: skip
    assert (result.offset_ms, result.offset_source) == (approx(5000.527), "daemon")
    assert ctx.warnings == [
        "the kernel's synchronised flag is missing: `timedatectl show` exited with 1: System has not been booted "
        "with systemd as init system (PID 1). Can't operate. / Failed to connect to bus: Host is down"
    ]


def test_timesyncd_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_host(monkeypatch, ["systemd-timesyncd"], "timesyncd_unreachable", failing={linux.TIMEDATECTL_SHOW: "x"})
    result, _ = collect()
    assert (result.synchronized, result.last_sync, result.seconds_since_sync) == (False, None, None)
    assert result.sources == [NtpSource("10.201.1.99", state="unreachable")]


def test_two_daemons_warn_and_prefer_chronyd(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_host(monkeypatch, ["systemd-timesyncd", "chronyd"], "chrony_synced")
    result, ctx = collect()
    assert result.daemon == "chronyd"
    assert ctx.warnings == [
        "2 time daemons run at once (chronyd, systemd-timesyncd): they fight over the clock; reporting chronyd"
    ]


def test_no_daemon_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = fake_host(monkeypatch, [])
    result, ctx = collect()
    assert ran == [] and ctx.warnings == []
    assert result == NtpResult()


def test_installed_but_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_host(monkeypatch, [], installed=["chronyd", "systemd-timesyncd"])
    result, _ = collect()
    assert (result.daemon, result.daemon_running, result.synchronized) == ("chronyd", False, False)


def test_other_platforms_without_their_services() -> None:
    # On this (non-Windows) machine psutil has no service API, so Windows collection finds nothing.
    assert windows.collect_daemon([]).name == ""
    for platform in ("win32", "darwin"):
        [result] = Ntp().collect(NtpArgs(), Context(platform=platform))
        assert (result.daemon_running, result.synchronized) == (False, False)


# ------------------------------------------------------------------------------ the tool runner


def test_run_uses_c_locale_and_utc() -> None:
    assert linux.run(("sh", "-c", 'echo "$LC_ALL $TZ"')) == "C UTC\n"


def test_run_failures_say_what_happened(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(linux.CommandFailed, match=r"^`vigil-no-such-tool -c tracking`: vigil-no-such-tool is not"):
        linux.run(("vigil-no-such-tool", "-c", "tracking"))
    with pytest.raises(linux.CommandFailed, match=r"^`sh -c echo 506 >&2; exit 1` exited with 1: 506$"):
        linux.run(("sh", "-c", "echo 506 >&2; exit 1"))
    monkeypatch.setattr(linux, "COMMAND_TIMEOUT_S", 0.1)
    with pytest.raises(linux.CommandFailed, match=r"did not answer within 0.1 s"):
        linux.run(("sleep", "5"))


def test_real_process_list_and_installed_lookup() -> None:
    assert psutil.Process().name() in linux.process_names()  # this test's own process at least
    assert set(linux.installed()) <= {"chronyd", "ntpd", "systemd-timesyncd"}


# ---------------------------------------------------------------------------------- check shape


def test_metadata() -> None:
    assert (Ntp.id, Ntp.version, Ntp.report_field, Ntp.default_interval_s) == ("ntp", 1, "ntp", 300)
    assert Ntp.platforms == ("linux", "darwin", "win32")
    assert Ntp.args_type is NtpArgs
    assert isinstance(Ntp(), Check)
    assert Ntp.__doc__ is not None and "Example result" in Ntp.__doc__


def test_args_defaults_and_unknown_keys() -> None:
    assert NtpArgs.from_params({}) == NtpArgs(servers=[], timeout_s=2.0, samples=3)
    assert NtpArgs.from_params({"servers": [" 192.0.2.1:1123 "], "timeout_s": 1, "future_knob": 3}) == NtpArgs(
        servers=["192.0.2.1:1123"], timeout_s=1.0, samples=3
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"servers": "192.0.2.1"}, "servers must be a list"),
        ({"servers": ["192.0.2.1", 5]}, "servers must be a list"),
        ({"servers": ["192.0.2.1:ntp"]}, "'192.0.2.1:ntp' needs a port from 1 to 65535 after the colon"),
        ({"servers": ["[2001:db8::1]:70000"]}, "needs a port from 1 to 65535"),
        ({"servers": ["192.0.2.1:"]}, "needs a port"),
        ({"timeout_s": 0}, "timeout_s must be a number of seconds"),
        ({"timeout_s": True}, "timeout_s must be"),
        ({"samples": 0}, "samples must be a whole number from 1 to 8"),
        ({"samples": 2.5}, "samples must be"),
    ],
)
def test_args_errors_name_the_field(params: dict[str, object], message: str) -> None:
    with pytest.raises(NtpArgsError, match=message):
        NtpArgs.from_params(params)
