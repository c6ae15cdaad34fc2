"""SNTP arithmetic and validation on synthetic packets, built here independently of ``checks.ntp.sntp``."""

from __future__ import annotations

import struct

import pytest

from checks.ntp import build_request, parse_response
from checks.ntp.sntp import from_ntp_timestamp, split_server, to_ntp_timestamp

SECONDS_1900_TO_1970 = 2_208_988_800
T1 = 1_795_239_065.25  # 2026-11-21T05:31:05.25Z
ERA_1_START = 2**32 - SECONDS_1900_TO_1970  # 2036-02-07T06:28:16Z as a Unix time


def ntp64(unix: float) -> int:
    whole = int(unix // 1)
    return (((whole + SECONDS_1900_TO_1970) % 2**32) << 32) | int((unix - whole) * 2**32)


def reply(
    t1: float,
    t2: float,
    t3: float,
    *,
    leap: int = 0,
    version: int = 4,
    mode: int = 4,
    stratum: int = 2,
    refid: bytes = bytes([192, 0, 2, 1]),
    originate: int | None = None,
) -> bytes:
    return struct.pack(
        ">BBbbII4sQQQQ",
        (leap << 6) | (version << 3) | mode,
        stratum,
        6,
        -20,
        0,
        0,
        refid,
        ntp64(t2 - 10),
        ntp64(t1) if originate is None else originate,
        ntp64(t2),
        ntp64(t3),
    )


def test_request_layout() -> None:
    packet = build_request(T1)
    assert len(packet) == 48
    assert packet[0] == 0b00_100_011  # LI 0, version 4, mode 3 (client)
    assert packet[1:40] == bytes(39)
    seconds, fraction = struct.unpack(">II", packet[40:48])
    # NTP counts from 1900: the Unix time plus 70 years (2 208 988 800 s).
    assert seconds == 1_795_239_065 + SECONDS_1900_TO_1970
    assert fraction == 2**30  # .25 s


def test_offset_and_delay_for_a_server_5s_ahead() -> None:
    # 10 ms each way, 1 ms inside the server, whose clock is 5 s ahead of ours.
    t2 = T1 + 0.010 + 5
    t3 = t2 + 0.001
    t4 = T1 + 0.021
    m = parse_response(reply(T1, t2, t3), T1, t4, server="192.0.2.1")
    assert m.ok and m.error == ""
    assert m.offset_ms == pytest.approx(5000.0, abs=1e-3)
    assert m.delay_ms == pytest.approx(20.0, abs=1e-3)
    assert (m.server, m.stratum, m.leap, m.reference_id) == ("192.0.2.1", 2, 0, "192.0.2.1")


def test_clock_running_fast_has_negative_offset() -> None:
    t2 = T1 + 0.005 - 5
    m = parse_response(reply(T1, t2, t2), T1, T1 + 0.010)
    assert m.offset_ms == pytest.approx(-5000.0, abs=1e-3)
    assert m.delay_ms == pytest.approx(10.0, abs=1e-3)


def test_asymmetric_path_shifts_offset_by_half_the_difference() -> None:
    # 30 ms out, 10 ms back, clocks equal: NTP cannot see asymmetry and reports +10 ms.
    t2 = T1 + 0.030
    m = parse_response(reply(T1, t2, t2), T1, T1 + 0.040)
    assert m.offset_ms == pytest.approx(10.0, abs=1e-3)
    assert m.delay_ms == pytest.approx(40.0, abs=1e-3)


def test_timestamps_count_from_1900_not_1970() -> None:
    assert to_ntp_timestamp(0.0) == SECONDS_1900_TO_1970 << 32
    good = reply(T1, T1, T1)
    assert struct.unpack(">I", good[32:36])[0] == 1_795_239_065 + SECONDS_1900_TO_1970
    assert parse_response(good, T1, T1).offset_ms == pytest.approx(0.0, abs=1e-3)
    # A server that (wrongly) sent Unix seconds is decades off, never near zero.
    bad = good[:32] + struct.pack(">QQ", int(T1) << 32, int(T1) << 32)
    assert abs(parse_response(bad, T1, T1).offset_ms) > 60 * 365 * 86400 * 1000


@pytest.mark.parametrize("local", [ERA_1_START - 0.5, ERA_1_START + 0.5, ERA_1_START + 86400])
def test_era_rollover_in_2036(local: float) -> None:
    # After 2036-02-07 the 32-bit seconds wrap to 0; the era nearest the local clock is taken.
    server = local + 1.0
    m = parse_response(reply(local, server, server), local, local)
    assert m.offset_ms == pytest.approx(1000.0, abs=1e-3)
    assert from_ntp_timestamp(to_ntp_timestamp(server), near=local) == pytest.approx(server, abs=1e-6)


def test_unsynchronised_server_is_rejected() -> None:
    m = parse_response(reply(T1, T1, T1, leap=3), T1, T1)
    assert (m.ok, m.leap, m.offset_ms) == (False, 3, 0.0)
    assert m.error == "server is unsynchronised (leap indicator 3)"


@pytest.mark.parametrize("code", [b"RATE", b"DENY", b"RSTR"])
def test_kiss_o_death_carries_its_code(code: bytes) -> None:
    m = parse_response(reply(T1, T1, T1, stratum=0, refid=code), T1, T1)
    assert (m.ok, m.stratum, m.reference_id) == (False, 0, code.decode())
    assert m.error == f"kiss-o'-death {code.decode()}: server refuses to serve time"


@pytest.mark.parametrize(("mode", "shown"), [(3, "mode 3"), (5, "mode 5"), (6, "mode 6")])
def test_wrong_mode_is_rejected(mode: int, shown: str) -> None:
    m = parse_response(reply(T1, T1, T1, mode=mode), T1, T1)
    assert not m.ok and m.error == f"reply has {shown}, expected 4 (server)"


def test_originate_mismatch_is_rejected_even_for_a_kiss() -> None:
    # An off-path attacker cannot know our transmit timestamp; a reply without it proves nothing.
    for stratum in (2, 0):
        m = parse_response(reply(T1, T1, T1, stratum=stratum, originate=ntp64(T1 - 1)), T1, T1)
        assert not m.ok and m.error == "reply's originate timestamp does not match the request"


def test_short_and_empty_replies() -> None:
    assert parse_response(reply(T1, T1, T1)[:47], T1, T1).error == "short reply: 47 bytes, expected at least 48"
    assert not parse_response(b"", T1, T1).ok


def test_missing_transmit_timestamp_is_rejected() -> None:
    packet = reply(T1, T1, T1)[:40] + bytes(8)
    assert parse_response(packet, T1, T1).error == "reply has no transmit timestamp"


def test_version_3_server_is_accepted_and_stratum_1_refid_is_text() -> None:
    m = parse_response(reply(T1, T1, T1, version=3, stratum=1, refid=b"GPS\0"), T1, T1)
    assert m.ok and m.reference_id == "GPS"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ntp.example.test", ("ntp.example.test", 123)),
        ("192.0.2.1:1123", ("192.0.2.1", 1123)),
        ("[2001:db8::1]:1123", ("2001:db8::1", 1123)),
        ("[2001:db8::1]", ("2001:db8::1", 123)),
        ("2001:db8::1", ("2001:db8::1", 123)),
        (" 192.0.2.1 ", ("192.0.2.1", 123)),
    ],
)
def test_split_server(spec: str, expected: tuple[str, int]) -> None:
    assert split_server(spec) == expected
