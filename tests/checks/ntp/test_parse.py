"""The pure parsers on real ``chronyc``/``ntpq``/``timedatectl`` output (see ``fixtures/README.md``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from checks.ntp import (
    Daemon,
    DaemonStatus,
    NtpParseError,
    NtpResult,
    NtpSource,
    SntpMeasurement,
    TimedateStatus,
    TimesyncStatus,
    build_result,
    merge_timesyncd,
    parse_chronyc_sources_csv,
    parse_chronyc_tracking_csv,
    parse_ntpq_peers,
    parse_ntpq_rv,
    parse_timedatectl_show,
    parse_timedatectl_timesync,
    parse_timedatectl_timesync_status,
    parse_w32tm_status,
)
from checks.ntp.parse import running_daemons
from proto.vigil.v1 import ntp_pb2
from tests.checks.ntp._fixtures import FIXTURES, approx, read

TRACKING = "chronyc_c_tracking"
SOURCES = "chronyc_c_sources"


def tracking(scenario: str) -> DaemonStatus:
    return parse_chronyc_tracking_csv(read(scenario, TRACKING))


# ---------------------------------------------------------------------------------------- chrony


def test_chrony_tracking_has_14_fields_in_every_capture() -> None:
    for path in FIXTURES.glob(f"*.{TRACKING}.txt"):
        assert len(path.read_text().strip().split(",")) == 14, path.name


def test_chrony_synced() -> None:
    assert tracking("chrony_synced") == DaemonStatus(
        synchronized=True,
        offset_ms=approx(-0.003180),
        stratum=9,
        reference="10.201.1.1",
        last_sync=datetime.fromtimestamp(1795239065.627485437, UTC),
        root_delay_ms=approx(0.010003),
        root_dispersion_ms=approx(0.042451),
    )


def test_chrony_clock_running_fast_has_negative_offset() -> None:
    # The capture's human form of the same state says "4.999964714 seconds fast of NTP time".
    assert "seconds fast of NTP time" in read("chrony_fast_5s", "chronyc_tracking")
    status = tracking("chrony_fast_5s")
    assert status.offset_ms == approx(-4999.964237)
    assert status.synchronized and status.reference == "10.201.1.4" and status.stratum == 3


def test_chrony_clock_running_slow_has_positive_offset() -> None:
    assert "5.000035286 seconds slow of NTP time" in read("chrony_slow_5s", "chronyc_tracking")
    assert tracking("chrony_slow_5s").offset_ms == approx(5000.035286)


@pytest.mark.parametrize("scenario", ["chrony_unreachable", "chrony_no_majority"])
def test_chrony_not_synchronised_has_no_offset_or_sync_time(scenario: str) -> None:
    assert tracking(scenario) == DaemonStatus(
        synchronized=False, offset_ms=None, stratum=0, reference="", last_sync=None,
        root_delay_ms=1000.0, root_dispersion_ms=1000.0,
    )  # fmt: skip


def test_chrony_lost_source_still_claims_normal_but_dispersion_grew() -> None:
    status = tracking("chrony_lost_source")
    assert status.synchronized  # chronyd's own claim: leap status stays "Normal"
    assert status.root_dispersion_ms == approx(9264.053345)
    assert status.last_sync == datetime.fromtimestamp(1795239074.042444156, UTC)
    [source] = parse_chronyc_sources_csv(read("chrony_lost_source", SOURCES))
    assert (source.state, source.selected) == ("unreachable", False)


def test_chrony_local_server_reference_is_its_refid() -> None:
    status = tracking("chrony_local_server")
    assert (status.synchronized, status.stratum, status.reference) == (True, 8, "127.127.1.1")
    assert parse_chronyc_sources_csv(read("chrony_local_server", SOURCES)) == []


def test_chrony_sources_are_turned_to_ntp_sign() -> None:
    # chronyc sources prints local - source: the server 5 s ahead shows -5.000061989 there.
    assert ",-5.000061989," in read("chrony_no_majority", SOURCES)
    assert parse_chronyc_sources_csv(read("chrony_no_majority", SOURCES)) == [
        NtpSource("10.201.1.1", 8, approx(-0.004918), 0.0, False, "falseticker"),
        NtpSource("10.201.1.3", 2, approx(5000.061989), 0.0, False, "falseticker"),
    ]


def test_chrony_selected_and_unreachable_sources() -> None:
    assert parse_chronyc_sources_csv(read("chrony_synced", SOURCES)) == [
        NtpSource("10.201.1.1", 8, approx(-0.000168), 0.0, True, "selected")
    ]
    assert parse_chronyc_sources_csv(read("chrony_unreachable", SOURCES)) == [
        NtpSource("10.201.1.99", 0, 0.0, 0.0, False, "unreachable")
    ]


def test_chrony_all_states_named() -> None:
    lines = "\n".join(f"^,{s},192.0.2.{i},2,6,377,1,0.0,0.0,0.001" for i, s in enumerate("*+-?x~#"))
    states = [s.state for s in parse_chronyc_sources_csv(lines)]
    assert states == [
        "selected", "combined", "not-combined", "unreachable", "falseticker", "too-variable", "unknown (#)",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 14 comma-separated fields, got 1"),
        ("506 Cannot talk to daemon", "expected 14"),
        ("0AC90101,x,nine,1.0,0,0,0,0,0,0,0,0,0,Normal", "stratum: expected an integer, got 'nine'"),
        ("ZZ,,9,1.0,0,0,0,0,0,0,0,0,0,Normal", "reference id 'ZZ' is not hex"),
    ],
)
def test_chrony_tracking_garbage_is_a_parse_error(text: str, message: str) -> None:
    with pytest.raises(NtpParseError, match=message):
        parse_chronyc_tracking_csv(text)


def test_chrony_sources_wrong_width_names_the_line() -> None:
    with pytest.raises(NtpParseError, match="line 2: expected 10 fields, got 3"):
        parse_chronyc_sources_csv("^,*,10.201.1.1,8,0,17,0,0.0,0.0,0.0\na,b,c\n")


# ------------------------------------------------------------------------------------------ ntpq


def test_ntpsec_synced() -> None:
    status = parse_ntpq_rv(read("ntpsec_synced", "ntpq_c_rv"))
    assert status == DaemonStatus(
        synchronized=True,
        offset_ms=approx(0.009706),
        stratum=9,
        reference="10.201.1.1",
        last_sync=datetime(2026, 11, 21, 5, 31, 30, 382062, tzinfo=UTC),
        root_delay_ms=approx(0.049),
        root_dispersion_ms=approx(937.53),
    )
    assert status.last_sync is not None
    # reftime=eeabab32.61cecd5a counts from 1900; ntpq prints the same instant as ...30.382Z.
    assert abs(status.last_sync - datetime(2026, 11, 21, 5, 31, 30, 382000, tzinfo=UTC)) < timedelta(milliseconds=1)


def test_ntpsec_synced_peers() -> None:
    assert parse_ntpq_peers(read("ntpsec_synced", "ntpq_pn")) == [
        NtpSource("10.201.1.1", 8, approx(0.0097), approx(0.0494), True, "selected")
    ]


def test_ntpsec_refused_step_is_unsynchronised_and_reference_says_step() -> None:
    status = parse_ntpq_rv(read("ntpsec_step_refused_fast_5s", "ntpq_c_rv"))
    assert (status.synchronized, status.offset_ms, status.stratum, status.reference) == (False, None, 16, "STEP")
    # reftime 00000000.00000000 is "never", though ntpq renders it as 2036-02-07 (NTP era 1).
    assert status.last_sync is None


@pytest.mark.parametrize("scenario", ["ntpsec_unreachable", "ntpsec_step_refused_fast_5s"])
def test_ntpsec_unreachable_peers(scenario: str) -> None:
    [peer] = parse_ntpq_peers(read(scenario, "ntpq_pn"))
    assert (peer.stratum, peer.selected, peer.state) == (16, False, "unreachable")


def test_ntpsec_unreachable_rv() -> None:
    status = parse_ntpq_rv(read("ntpsec_unreachable", "ntpq_c_rv"))
    assert (status.synchronized, status.reference, status.last_sync) == (False, "INIT", None)


def test_classic_ntpq_wrapped_ipv6_and_pool_rows() -> None:
    peers = parse_ntpq_peers(read("documented_classic_ntp", "ntpq_pn"))
    assert [(p.address, p.state, p.selected) for p in peers] == [
        ("192.0.2.10", "selected", True),
        ("198.51.100.7", "candidate", False),
        ("2001:db8::123", "outlier", False),
        ("203.0.113.5", "falseticker", False),
    ]
    # A peer 5 s ahead of this host: positive, ntpq already uses NTP's sign.
    assert peers[3].offset_ms == approx(4998.75)
    assert peers[2].delay_ms == approx(2.310)


def test_ntpq_units_and_status_word_fallback() -> None:
    peers = parse_ntpq_peers(
        "     remote    refid   st t when poll reach   delay   offset   jitter\n"
        "=====\n"
        "*192.0.2.1     .GPS.    1 u   1   64  377   412us  -1.5ms   87us\n"
    )
    assert (peers[0].delay_ms, peers[0].offset_ms) == (approx(0.412), approx(-1.5))
    # No leap= variable: the two top bits of the status word (0x0615 -> 00) decide.
    status = parse_ntpq_rv("associd=0 status=0615 leap_none, sync_ntp, 1 event, clock_sync,\nstratum=2, offset=-0.25")
    assert (status.synchronized, status.offset_ms) == (True, -0.25)
    assert not parse_ntpq_rv("associd=0 status=c618 leap_alarm, sync_ntp,\nstratum=2, offset=0.0").synchronized


@pytest.mark.parametrize(
    ("parser", "text", "message"),
    [
        (parse_ntpq_peers, "ntpq: read: Connection refused\n", "no 'remote refid ...' header"),
        (parse_ntpq_rv, "***Request timed out\n", "no stratum="),
        (parse_ntpq_rv, "stratum=2, offset=0.0", "neither leap= nor status="),
        (parse_ntpq_rv, "leap=00, stratum=2, offset=fast", "offset: expected milliseconds"),
    ],
)
def test_ntpq_garbage_is_a_parse_error(parser: object, text: str, message: str) -> None:
    with pytest.raises(NtpParseError, match=message):
        parser(text)  # type: ignore[operator]


# ------------------------------------------------------------------------------------ timedatectl


def test_timesyncd_synced() -> None:
    status = parse_timedatectl_timesync(read("timesyncd_synced", "timedatectl_show_timesync_all"))
    assert status == DaemonStatus(
        synchronized=True,
        offset_ms=None,  # only timesync-status has it at full precision
        stratum=9,
        reference="10.201.1.1",
        last_sync=datetime(2026, 11, 21, 5, 31, 49, tzinfo=UTC),
        sources=(NtpSource("10.201.1.1", 8, 0.0, 0.0, True, "selected"),),
    )


def test_timesyncd_slow_offset_from_timesync_status() -> None:
    status = parse_timedatectl_timesync(read("timesyncd_slow_5s", "timedatectl_show_timesync_all"))
    assert (status.root_delay_ms, status.root_dispersion_ms) == (approx(3.906), approx(1.953))
    timesync = parse_timedatectl_timesync_status(read("timesyncd_slow_5s", "timedatectl_timesync_status"))
    assert timesync == TimesyncStatus(offset_ms=approx(5000.527), delay_ms=approx(1.089))
    merged = merge_timesyncd(status, timesync, None)
    assert merged.offset_ms == approx(5000.527)
    assert merged.sources == (NtpSource("10.201.1.3", 2, approx(5000.527), approx(1.089), True, "selected"),)


def test_timesyncd_unreachable() -> None:
    status = parse_timedatectl_timesync(read("timesyncd_unreachable", "timedatectl_show_timesync_all"))
    assert status == DaemonStatus(
        synchronized=False, sources=(NtpSource("10.201.1.99", state="unreachable"),)
    )  # fmt: skip
    assert parse_timedatectl_timesync_status(
        read("timesyncd_unreachable", "timedatectl_timesync_status")
    ) == TimesyncStatus(None, None)  # fmt: skip


def test_timesyncd_kernel_flag_overrides_and_hides_offset_when_unsynchronised() -> None:
    status = parse_timedatectl_timesync(read("timesyncd_synced", "timedatectl_show_timesync_all"))
    timesync = parse_timedatectl_timesync_status(read("timesyncd_synced", "timedatectl_timesync_status"))
    assert timesync.offset_ms == approx(0.004)
    assert merge_timesyncd(status, timesync, TimedateStatus(ntp_synchronized=True)).offset_ms == approx(0.004)
    unsynced = merge_timesyncd(status, timesync, TimedateStatus(ntp_synchronized=False))
    assert (unsynced.synchronized, unsynced.offset_ms) == (False, None)


def test_timedatectl_show_documented() -> None:
    assert parse_timedatectl_show(read("documented_synced", "timedatectl_show")) == TimedateStatus(
        ntp_synchronized=True, ntp_enabled=True, timezone="Etc/UTC"
    )
    assert parse_timedatectl_show(read("documented_unsynced", "timedatectl_show")) == TimedateStatus(
        ntp_synchronized=False, ntp_enabled=False, timezone="Europe/Berlin"
    )


def test_timedatectl_without_systemd_is_a_parse_error() -> None:
    text = read("timedatectl_no_systemd", "timedatectl_show.stderr")
    with pytest.raises(NtpParseError, match="no NTPSynchronized="):
        parse_timedatectl_show(text)
    with pytest.raises(NtpParseError, match="no ServerName="):
        parse_timedatectl_timesync(text)


@pytest.mark.parametrize(
    ("span", "ms"),
    [("+4us", 0.004), ("25us", 0.025), ("1.089ms", 1.089), ("+5.000527s", 5000.527), ("0", 0.0),
     ("-1min 3.5s", -63500.0), ("-250ms", -250.0)],
)  # fmt: skip
def test_systemd_time_spans(span: str, ms: float) -> None:
    assert parse_timedatectl_timesync_status(f"Offset: {span}").offset_ms == approx(ms)


def test_ntp_message_without_comma_before_packet_count() -> None:
    # Older systemd printed "Ignored=no PacketCount=3" without the comma.
    text = (
        "ServerName=192.0.2.1\nServerAddress=192.0.2.1\nNTPMessage={ Leap=0, Version=4, Mode=4, Stratum=1, "
        "Precision=-20, RootDelay=0, RootDispersion=15us, Reference=GPS, OriginateTimestamp=Sat 2026-11-21 "
        "05:31:49 UTC, ReceiveTimestamp=Sat 2026-11-21 05:31:49 UTC, TransmitTimestamp=Sat 2026-11-21 05:31:49 UTC, "
        "DestinationTimestamp=Sat 2026-11-21 05:31:49 UTC, Ignored=no PacketCount=3, Jitter=0 }\n"
    )
    status = parse_timedatectl_timesync(text)
    assert (status.synchronized, status.stratum, status.root_dispersion_ms) == (True, 2, approx(0.015))


# ---------------------------------------------------------------------------------------- windows


def test_w32tm_synced_documented() -> None:
    cet = timezone(timedelta(hours=1))
    status = parse_w32tm_status(read("documented_synced", "w32tm_query_status"), local_tz=cet)
    assert status == DaemonStatus(
        synchronized=True,
        stratum=4,
        reference="dc01.example.test",
        last_sync=datetime(2026, 11, 21, 4, 31, 49, tzinfo=UTC),
        root_delay_ms=approx(31.25),
        root_dispersion_ms=approx(7776.6113),
        sources=(NtpSource("dc01.example.test", selected=True, state="selected"),),
    )


def test_w32tm_unsynced_documented() -> None:
    status = parse_w32tm_status(read("documented_unsynced", "w32tm_query_status"))
    assert (status.synchronized, status.stratum, status.reference, status.last_sync) == (False, 0, "", None)


def test_w32tm_garbage() -> None:
    with pytest.raises(NtpParseError, match="no 'Leap Indicator:'"):
        parse_w32tm_status("The following error occurred: The service has not been started. (0x80070426)")


# ------------------------------------------------------------------------------------------ merge

NOW = datetime(2026, 11, 21, 5, 32, 0, tzinfo=UTC)


def sntp(offset: float, ok: bool = True, server: str = "192.0.2.1") -> SntpMeasurement:
    return SntpMeasurement(server, ok=ok, offset_ms=offset if ok else 0.0, error="" if ok else "no reply")


def test_result_prefers_sntp_median_over_the_daemon() -> None:
    daemon = Daemon("chronyd", True, tracking("chrony_synced"))
    result = build_result(daemon, [sntp(5001.0), sntp(4999.0), sntp(5000.2), sntp(0.0, ok=False)], NOW)
    assert (result.offset_ms, result.offset_source) == (5000.2, "sntp")
    assert result.daemon_offset_ms == approx(-0.003180)
    assert result.synchronized and result.stratum == 9
    assert result.seconds_since_sync == approx(
        (NOW - datetime.fromtimestamp(1795239065.627485437, UTC)).total_seconds()
    )


def test_result_falls_back_to_a_synchronised_daemon() -> None:
    daemon = Daemon("chronyd", True, tracking("chrony_fast_5s"))
    result = build_result(daemon, [sntp(0.0, ok=False)], NOW)
    assert (result.offset_ms, result.offset_source) == (approx(-4999.964237), "daemon")


def test_result_never_takes_an_unsynchronised_daemons_offset() -> None:
    daemon = Daemon("ntpd", True, parse_ntpq_rv(read("ntpsec_step_refused_fast_5s", "ntpq_c_rv")))
    result = build_result(daemon, [], NOW)
    assert (result.synchronized, result.offset_ms, result.offset_source, result.seconds_since_sync) == (
        False, 0.0, "", None,
    )  # fmt: skip


def test_result_without_daemon_is_never_synchronised_even_when_sntp_is_fine() -> None:
    result = build_result(Daemon(), [sntp(0.3)], NOW)
    assert result == NtpResult(offset_ms=0.3, offset_source="sntp", sntp=[sntp(0.3)])
    stopped = build_result(Daemon("systemd-timesyncd", running=False), [], NOW)
    assert (stopped.daemon, stopped.daemon_running, stopped.synchronized) == ("systemd-timesyncd", False, False)


def test_running_daemons_in_preference_order() -> None:
    assert running_daemons(["bash", "systemd-timesyn", "chronyd", "sshd"]) == ["chronyd", "systemd-timesyncd"]
    assert running_daemons(["ntpd"]) == ["ntpd"]
    assert running_daemons(["ntpdate", "chrony"]) == []


def test_proto_round_trip() -> None:
    sources = parse_chronyc_sources_csv(read("chrony_slow_5s", SOURCES))
    daemon = Daemon("chronyd", True, replace(tracking("chrony_slow_5s"), sources=tuple(sources)))
    result = build_result(daemon, [sntp(5000.4), sntp(0.0, ok=False, server="192.0.2.9")], NOW)
    wire = ntp_pb2.NtpResult.FromString(result.to_proto().SerializeToString())
    assert wire.offset_ms == approx(5000.4) and wire.daemon_offset_ms == approx(5000.035286)
    assert wire.last_sync.seconds == 1795239071
    assert [s.state for s in wire.sources] == ["selected"] and not wire.sntp[1].ok
    back = NtpResult.from_proto(wire)
    assert back.last_sync is not None and result.last_sync is not None
    # Timestamp keeps nanoseconds, datetime microseconds: equal to the microsecond.
    assert abs(back.last_sync - result.last_sync) < timedelta(microseconds=1)
    assert back.sources == result.sources and back.sntp == result.sntp
    assert result.seconds_since_sync is not None
    assert back.seconds_since_sync == approx(result.seconds_since_sync)


def test_proto_never_synced_leaves_last_sync_unset() -> None:
    wire = build_result(Daemon("chronyd", True, tracking("chrony_unreachable")), [], NOW).to_proto()
    assert not wire.HasField("last_sync") and wire.seconds_since_sync == 0.0
    assert NtpResult.from_proto(wire).seconds_since_sync is None
