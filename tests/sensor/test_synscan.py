"""The sensor's SYN scan of a real host in a network namespace: the same states as the connect scan for
the same ports, targets outside the ranges refused before the privilege is even asked about, and a
clear error when a SYN scan is asked for without CAP_NET_RAW."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.sensor import SensorError, synscan
from agent.sensor.scan import OutOfScope, ScanOptions, Scope, parse_ports, scan, scan_ports
from tests.netns import NetnsHost

REPO = Path(__file__).resolve().parents[2]


def _listen(host: NetnsHost, *specs: str) -> None:
    listener = host.start([sys.executable, "-m", "tests.sensor.listener", host.ip, *specs],
                          cwd=REPO, stdout=subprocess.PIPE)
    assert listener.stdout is not None and listener.stdout.readline().strip() == b"ready"
    listener.stdout.close()  # it prints nothing more


def test_the_syn_scan_reports_what_the_connect_scan_reports(host: NetnsHost) -> None:
    _listen(host, "22=SSH-2.0-OpenSSH_9.2p1", "80", "443", "2000", "2001=220 mail.example ESMTP")
    host.drop_tcp("3000:3099")
    host.drop_tcp("2001")  # listening, but a firewall drops it
    ports = parse_ports("1-100,440-450,1990-2010,3000-3099")
    scope, options = Scope([f"{host.ip}/32"]), ScanOptions(timeout_s=1.0)
    connect = scan(scope, host.ip, ports, options)
    syn = scan_ports(scope, host.ip, ports, options, method="syn")
    assert [(s.port, s.state) for s in syn] == [(s.port, s.state) for s in connect]
    by_state = {st: [s.port for s in syn if s.state == st] for st in ("open", "closed", "filtered")}
    assert by_state["open"] == [22, 80, 443, 2000]
    assert by_state["filtered"] == [2001, *range(3000, 3100)]
    assert len(by_state["closed"]) == len(ports) - 4 - 101
    assert all(s.banner is None for s in syn)  # no connection, no banner
    assert all(s.rtt_ms is not None for s in syn if s.state != "filtered")


def test_ports_are_answered_in_the_order_given_repeats_included(host: NetnsHost) -> None:
    _listen(host, "80")
    states = synscan.syn_scan(Scope([f"{host.ip}/32"]), host.ip, [443, 80, 22, 80])
    assert [(s.port, s.state) for s in states] == [(443, "closed"), (80, "open"), (22, "closed"), (80, "open")]


def test_auto_takes_the_syn_scan_when_privileged_and_the_connect_scan_otherwise(
        host: NetnsHost, monkeypatch: pytest.MonkeyPatch) -> None:
    _listen(host, "22=SSH-2.0-OpenSSH_9.2p1")
    scope = Scope([f"{host.ip}/32"])
    assert synscan.has_raw_socket_privilege()  # root, as require_netns made sure
    assert [(s.port, s.state, s.banner) for s in scan_ports(scope, host.ip, [22])] == [(22, "open", None)]
    monkeypatch.setattr(synscan, "has_raw_socket_privilege", lambda: False)
    by_connect = scan_ports(scope, host.ip, [22])
    assert [(s.port, s.state, s.banner) for s in by_connect] == [(22, "open", "SSH-2.0-OpenSSH_9.2p1")]


def test_a_syn_scan_without_the_privilege_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synscan, "has_raw_socket_privilege", lambda: False)
    scope = Scope(["127.0.0.1/32"])
    with pytest.raises(SensorError, match="needs CAP_NET_RAW"):
        scan_ports(scope, "127.0.0.1", [22], method="syn")
    with pytest.raises(SensorError, match="needs CAP_NET_RAW"):
        synscan.syn_scan(scope, "127.0.0.1", [22])


def test_a_target_outside_the_ranges_is_refused_before_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_call() -> bool:
        raise AssertionError("the privilege was asked about before the scope was checked")

    monkeypatch.setattr(synscan, "has_raw_socket_privilege", no_call)
    scope = Scope(["10.203.250.0/24", "fd00:1::/64"])
    for method in ("auto", "syn"):
        with pytest.raises(OutOfScope, match=r"10.202.0.2 is outside the baseline's scan ranges "
                                             r"\(10.203.250.0/24, fd00:1::/64\): refused, nothing was sent"):
            scan_ports(scope, "10.202.0.2", [22], method=method)  # type: ignore[arg-type]
    with pytest.raises(OutOfScope, match="not an IP address"):
        synscan.syn_scan(scope, "router.example", [22])
    with pytest.raises(SensorError, match="only the connect scan does IPv6"):
        synscan.syn_scan(scope, "fd00:1::5", [22])
    with pytest.raises(SensorError, match="scan method 'fast'"):
        scan_ports(scope, "10.203.250.1", [22], method="fast")  # type: ignore[arg-type]


def test_the_per_port_checksum_is_the_one_scapy_computes() -> None:
    pytest.importorskip("scapy")
    from scapy.layers.inet import IP, TCP

    template = synscan.craft_template("10.202.0.1", "10.202.0.2", 40123, 0xDEADBEEF, "S")
    for port in (1, 22, 80, 443, 8080, 32768, 65279, 65535):
        crafted = IP(src="10.202.0.1", dst="10.202.0.2") / TCP(sport=40123, dport=port, seq=0xDEADBEEF, flags="S",
                                                               window=1024, options=[("MSS", 1460)])
        assert synscan.tcp_for_port(template, port) == bytes(crafted[TCP]), port
