"""``measure()`` and ``Ntp.collect()`` against real SNTP responders on 127.0.0.1 (no privileges needed)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from checks.base import Context
from checks.ntp import Ntp, NtpArgs, linux, measure
from checks.ntp.parse import Daemon
from tests.checks.ntp.responder import Responder, sntp_responder

BAND_MS = 50.0


def test_server_5s_ahead_gives_plus_5000_ms() -> None:
    with sntp_responder(offset_s=5.0) as server:
        m = measure(server.host, server.port, timeout=2.0, samples=3)
        assert server.requests == 3
    assert m.ok, m.error
    assert m.offset_ms == pytest.approx(5000.0, abs=BAND_MS)
    assert 0 <= m.delay_ms < BAND_MS
    assert (m.server, m.stratum, m.leap, m.reference_id) == (server.server, 2, 0, "10.201.0.1")


def test_server_5s_behind_means_our_clock_is_fast() -> None:
    with sntp_responder(offset_s=-5.0) as server:
        m = measure(server.host, server.port, timeout=2.0, samples=1)
    assert m.offset_ms == pytest.approx(-5000.0, abs=BAND_MS)


def test_unsynchronised_server_is_not_a_reference() -> None:
    with sntp_responder(offset_s=0.0, leap=3) as server:
        m = measure(server.host, server.port, timeout=2.0, samples=2)
    assert (m.ok, m.leap, m.error) == (False, 3, "server is unsynchronised (leap indicator 3)")


def test_kiss_o_death_stops_sampling() -> None:
    with sntp_responder(offset_s=0.0, stratum=0, refid=b"RATE") as server:
        m = measure(server.host, server.port, timeout=2.0, samples=3)
        assert server.requests == 1  # RFC 4330: stop sending after a kiss-o'-death
    assert (m.ok, m.stratum, m.reference_id) == (False, 0, "RATE")
    assert m.error.startswith("kiss-o'-death RATE")


def test_closed_port_is_reported_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    m = measure("127.0.0.1", port, timeout=2.0, samples=2)
    assert (m.ok, m.error) == (False, "port unreachable: no NTP server listening")


def test_silent_server_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        m = measure("127.0.0.1", silent.getsockname()[1], timeout=0.2, samples=1)
    assert (m.ok, m.error) == (False, "no reply within 0.2 s")


def test_unresolvable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stubbed: a real lookup would leave this machine.
    def fail(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    m = measure("ntp.example.test")
    assert (m.ok, m.server) == (False, "ntp.example.test")
    assert m.error == "cannot resolve 'ntp.example.test': [Errno -2] Name or service not known"


@contextmanager
def stale_then_good_responder(offset_s: float) -> Iterator[int]:
    """Answers each request first with a reply to some *other* request, then properly."""
    answer = Responder(host="127.0.0.1", port=0, offset_s=offset_s, leap=0, stratum=2, refid=b"\x0a\xc9\0\1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)

        def serve() -> None:
            data, peer = sock.recvfrom(1024)
            good = answer.reply(data, received_at=time.time())
            assert good is not None
            stale = good[:24] + bytes(8) + good[32:]
            sock.sendto(stale, peer)
            sock.sendto(good, peer)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            yield sock.getsockname()[1]
        finally:
            thread.join()


def test_reply_to_another_request_is_skipped_not_fatal() -> None:
    with stale_then_good_responder(offset_s=5.0) as port:
        m = measure("127.0.0.1", port, timeout=2.0, samples=1)
    assert m.ok, m.error
    assert m.offset_ms == pytest.approx(5000.0, abs=BAND_MS)


def test_ipv6_loopback() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
    with sntp_responder(offset_s=1.5, host="::1") as server:
        m = measure("::1", server.port, timeout=2.0, samples=1)
    assert m.ok and m.server == f"[::1]:{server.port}"
    assert m.offset_ms == pytest.approx(1500.0, abs=BAND_MS)


def test_check_reports_a_host_5s_off_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the issue asks for: a clock 5 s off the reference shows as offset_ms ≈ ±5000 from SNTP."""
    # Whatever daemon this test machine runs must not matter.
    monkeypatch.setattr(linux, "collect_daemon", lambda warnings: Daemon("chronyd", True, None))
    with (
        sntp_responder(offset_s=5.0) as ahead,
        sntp_responder(offset_s=5.0) as ahead_too,
        sntp_responder(offset_s=0.0, leap=3) as unsynced,
    ):
        ctx = Context(platform="linux")
        [result] = Ntp().collect(
            NtpArgs.from_params({"servers": [ahead.server, ahead_too.server, unsynced.server], "samples": 2}),
            ctx,
        )
    assert result.offset_source == "sntp"
    assert result.offset_ms == pytest.approx(5000.0, abs=BAND_MS)
    assert [m.ok for m in result.sntp] == [True, True, False]
    assert result.sntp[2].error == "server is unsynchronised (leap indicator 3)"
    assert ctx.warnings == []  # a bad reference is a finding for the baseline, not a collection problem
    assert not result.synchronized  # the daemon could not be asked: no claim to report
    assert result.to_proto().offset_ms == pytest.approx(5000.0, abs=BAND_MS)
