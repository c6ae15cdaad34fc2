"""The sensor's connect scan of a real host in a network namespace: open, closed and silently dropped
ports reported exactly, banners read, and a target outside the baseline's ranges refused unsent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.sensor import SensorError
from agent.sensor.scan import OutOfScope, ScanOptions, Scope, parse_ports, scan
from tests.netns import NetnsHost

REPO = Path(__file__).resolve().parents[2]


def test_open_closed_and_dropped_ports_are_told_apart(host: NetnsHost) -> None:
    listener = host.start([sys.executable, "-m", "tests.sensor.listener", host.ip, "22=SSH-2.0-OpenSSH_9.2p1",
                           "80", "443", "2000", "2001=220 mail.example ESMTP"],
                          cwd=REPO, stdout=subprocess.PIPE)
    assert listener.stdout is not None and listener.stdout.readline().strip() == b"ready"
    host.drop_tcp("3000:3099")
    host.drop_tcp("2001")  # listening, but a firewall drops it: reachable it is not
    ports = parse_ports("1-100,440-450,1990-2010,3000-3099")
    states = scan(Scope([f"{host.ip}/32"]), host.ip, ports, ScanOptions(timeout_s=1.0))
    assert [s.port for s in states] == ports
    by_state = {st: [s.port for s in states if s.state == st] for st in ("open", "closed", "filtered")}
    assert by_state["open"] == [22, 80, 443, 2000]
    assert by_state["filtered"] == [2001, *range(3000, 3100)]
    assert len(by_state["closed"]) == len(ports) - 4 - 101
    banners = {s.port: s.banner for s in states if s.state == "open"}
    assert banners == {22: "SSH-2.0-OpenSSH_9.2p1", 80: None, 443: None, 2000: None}


def test_a_target_outside_the_ranges_is_refused_before_any_packet(host: NetnsHost) -> None:
    scope = Scope(["10.203.250.0/24", "fd00:1::/64"])
    with pytest.raises(OutOfScope, match=rf"{host.ip} is outside the baseline's scan ranges "
                                         r"\(10.203.250.0/24, fd00:1::/64\): refused, nothing was sent"):
        scan(scope, host.ip, [22])
    with pytest.raises(OutOfScope, match="not an IP address"):
        scan(scope, "router.example", [22])
    with pytest.raises(SensorError, match="not an address or network"):
        Scope(["10.0.0.0/33"])


def test_port_lists_are_checked() -> None:
    assert parse_ports("443, 22,80-82,22") == [22, 80, 81, 82, 443]
    for bad, why in (("0", "outside"), ("70000", "outside"), ("90-80", "reversed"), ("ssh", "not a port"),
                     ("", "no port")):
        with pytest.raises(SensorError, match=why):
            parse_ports(bad)


def test_a_devices_ntp_service_is_measured_inside_the_scope(host: NetnsHost) -> None:
    """A real SNTP server 4 s ahead of the sensor, in the namespace host; and one that does not answer."""
    from agent.sensor.scan import sntp

    proc = host.start([sys.executable, "-m", "tests.checks.ntp.responder", "--host", host.ip, "--port", "123",
                       "--offset", "4"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().split() == [b"ready", host.ip.encode(), b"123"]
    scope = Scope([f"{host.ip}/32"])
    got = sntp(scope, host.ip, timeout_s=2.0, samples=2)
    assert got.ok and got.offset_ms is not None and 3500 < got.offset_ms < 4500, got  # 4 s, less half a round trip
    host.drop_udp("124")
    silent = sntp(scope, host.ip, port=124, timeout_s=0.5, samples=1)
    assert not silent.ok and silent.error
    with pytest.raises(OutOfScope):
        sntp(Scope(["10.203.0.0/24"]), host.ip)


def test_the_connect_scan_does_ipv6(host: NetnsHost) -> None:
    listener = host.start([sys.executable, "-m", "tests.sensor.listener", host.ip6, "22=SSH-2.0-OpenSSH_9.2p1", "443"],
                          cwd=REPO, stdout=subprocess.PIPE)
    assert listener.stdout is not None and listener.stdout.readline().strip() == b"ready"
    states = scan(Scope([f"{host.ip6}/128"]), host.ip6, [21, 22, 443, 8443])
    assert [(s.port, s.state) for s in states] == [(21, "closed"), (22, "open"), (443, "open"), (8443, "closed")]
    assert states[1].banner == "SSH-2.0-OpenSSH_9.2p1"
    with pytest.raises(OutOfScope):
        scan(Scope([f"{host.ip}/32"]), host.ip6, [22])
