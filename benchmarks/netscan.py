#!/usr/bin/env python3
"""The sensor's connect scan and SYN scan against `nmap -sS`, on the same namespace host in the same run.

A host in a network namespace of our own (tests/netns.py) listens on a few ports; the scan covers
PORTS ports (1..PORTS) twice: once with closed ports answering (RST), once with them silently dropped
(iptables DROP in the namespace; the listening ports stay reachable). Each figure is the best of RUNS
runs, and each ratio is that Vigil scan's time over nmap's (≤ 1.0: no slower). Every scan must find the
same open ports, or the run fails; the two Vigil scans must also agree on every port's state. Needs
root, iproute2, iptables and nmap (`apt-get install nmap iptables`).

    python benchmarks/netscan.py [--ports 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.sensor.scan import PortState, ScanMethod, ScanOptions, Scope, scan_ports  # noqa: E402
from tests.netns import NetnsHost  # noqa: E402

OPEN = [22, 80, 443, 993]
METHODS: tuple[ScanMethod, ...] = ("connect", "syn")


def nmap_open(host: str, ports: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    out = subprocess.run(["nmap", "-sS", "-n", "-Pn", "-p", f"1-{ports}", "--max-retries", "1", "-oG", "-", host],
                         capture_output=True, text=True, check=True).stdout
    elapsed = time.perf_counter() - start
    found = sorted(int(p) for p in re.findall(r"(\d+)/open/tcp", out))
    return elapsed, found


def vigil_scan(host: str, ports: int, method: ScanMethod) -> tuple[float, list[PortState]]:
    start = time.perf_counter()
    states = scan_ports(Scope([f"{host}/32"]), host, range(1, ports + 1), ScanOptions(), method=method)
    return time.perf_counter() - start, states


def counted(states: list[PortState]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    host = NetnsHost()
    try:
        listener = host.start([sys.executable, "-m", "tests.sensor.listener", host.ip, *map(str, OPEN)],
                              cwd=ROOT, stdout=subprocess.PIPE)
        assert listener.stdout is not None and listener.stdout.readline().strip() == b"ready"
        rows = []
        for case in ("closed ports answer (RST)", "closed ports dropped"):
            if case == "closed ports dropped":
                for port in OPEN:
                    host.run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(port), "-j", "ACCEPT"])
                host.run(["iptables", "-A", "INPUT", "-p", "tcp", "-j", "DROP"])
            times: dict[str, list[float]] = {"connect": [], "syn": [], "nmap": []}
            states: dict[str, list[PortState]] = {}
            for _ in range(args.runs):
                for method in METHODS:
                    t, states[method] = vigil_scan(host.ip, args.ports, method)
                    found = [s.port for s in states[method] if s.state == "open"]
                    if found != OPEN:
                        raise SystemExit(f"vigil {method} scan found {found}, expected {OPEN}")
                    times[method].append(t)
                if [(s.port, s.state) for s in states["syn"]] != [(s.port, s.state) for s in states["connect"]]:
                    raise SystemExit("the SYN scan and the connect scan disagree on some port")
                t, found = nmap_open(host.ip, args.ports)
                if found != OPEN:
                    raise SystemExit(f"nmap found {found}, expected {OPEN}")
                times["nmap"].append(t)
            rows.append((case, min(times["connect"]), min(times["syn"]), min(times["nmap"]), counted(states["syn"])))
        print(f"{args.ports} ports of a namespace host, best of {args.runs} runs each")
        print(f"{'case':28} {'connect s':>9} {'SYN s':>7} {'nmap -sS s':>11} {'connect/nmap':>13} {'SYN/nmap':>9}"
              "  states (both Vigil scans)")
        for case, connect_s, syn_s, nmap_s, counts in rows:
            shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(f"{case:28} {connect_s:9.3f} {syn_s:7.3f} {nmap_s:11.3f} {connect_s / nmap_s:13.2f}"
                  f" {syn_s / nmap_s:9.2f}  {shown}")
    finally:
        host.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
