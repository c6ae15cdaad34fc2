#!/usr/bin/env python3
"""Collecting from many SSH devices with one sensor: wall time and the sensor's RSS.

DEVICES hosts, each in a network namespace of our own (tests/netns.py) with Debian's sshd on port 22,
whose forced command is a device CLI (tests/sensor/fake_device.py) printing captured outputs of
`show version`, `show ntp status` and `show running-config` (IOS fixtures). The sensor collects the
three commands from all of them through `agent.sensor.ssh.collect_many` with WORKERS sessions at most,
and parses every output. Reference in the same run: OpenSSH's own client (`ssh -T`, one exec of
`show version` per device, the same pool size), the floor of one SSH connection per device; and the
RSS of this process (paramiko, the parsers and the test harness loaded) before the first session and
at the end. Needs root.

    python benchmarks/devices.py [--devices 100] [--workers 16]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.sensor.credentials import Credential  # noqa: E402
from agent.sensor.hostkeys import HostKeyStore, presented_key  # noqa: E402
from agent.sensor.ssh import Target, collect_many  # noqa: E402
from checks.device import parse  # noqa: E402
from tests.netns import NetnsHost  # noqa: E402
from tests.sensor.sshd import Sshd, keygen  # noqa: E402

FIX = ROOT / "tests" / "checks" / "device" / "fixtures" / "cisco_ios"
OUTPUTS = {"show version": FIX / "show_version" / "isr2911_15.7-3-M5.txt",
           "show ntp status": FIX / "show_ntp_status" / "synchronized_15x.txt",
           "show running-config": FIX / "show_running-config" / "sw_acc_01_base.txt"}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--workers", type=int, default=16)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vigil-devices-"))
    key = keygen(work / "client_ed25519")
    hosts: list[NetnsHost] = []
    servers: list[Sshd] = []
    try:
        t0 = time.perf_counter()
        for i in range(args.devices):
            hosts.append(NetnsHost())
            servers.append(Sshd(work / f"d{i}", Path(f"{key}.pub"), {
                "prompt": f"SW{i}", "start_enabled": True, "page_lines": 24,
                "outputs": {k: str(v) for k, v in OUTPUTS.items()}}, netns=hosts[-1]))
        print(f"set up {args.devices} namespace devices in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        store = HostKeyStore(work / "sensor")
        for s in servers:
            store.pin(s.host, s.port, presented_key(s.host, s.port))
        cred = Credential("bench", "root", key)
        jobs = [(Target(s.host, "cisco_ios", "bench", s.port, name=f"sw{i}"), list(OUTPUTS), cred)
                for i, s in enumerate(servers)]
        rss_before = rss_mb()
        start = time.perf_counter()
        done = collect_many(jobs, hostkeys=store, workers=args.workers)
        failures = [c for c in done if c.error is not None]
        versions = {parse("cisco_ios", "show version", c.outputs[0].text).version for c in done if c.error is None}
        ours = time.perf_counter() - start
        rss_after = rss_mb()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        known = work / "known_hosts_openssh"
        known.write_text((work / "sensor" / "known_hosts").read_text())

        def openssh(s: Sshd) -> int:
            return subprocess.run(["ssh", "-T", "-i", str(key), "-o", f"UserKnownHostsFile={known}",
                                   "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(s.port),
                                   f"root@{s.host}", "show version"], capture_output=True).returncode

        start = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            codes = list(pool.map(openssh, servers))
        theirs = time.perf_counter() - start
        if failures or versions != {"15.7(3)M5"} or any(codes):
            print(f"failed: {[str(c.error) for c in failures][:3]}, versions {versions}, ssh exit {set(codes)}")
            return 1
        print(f"{args.devices} devices, {args.workers} sessions at most, 3 commands each (paged, parsed)")
        print(f"{'':34} {'seconds':>8} {'per device':>11}")
        print(f"{'vigil sensor (3 commands)':34} {ours:8.2f} {ours / args.devices * 1000:9.0f}ms")
        print(f"{'OpenSSH ssh -T (1 exec, floor)':34} {theirs:8.2f} {theirs / args.devices * 1000:9.0f}ms")
        print(f"ratio {ours / theirs:.2f}; RSS of this process (paramiko, the parsers and the harness loaded): "
              f"{rss_before:.1f} MB before the sessions, {rss_after:.1f} MB after, peak {peak:.1f} MB")
    finally:
        for s in servers:
            s.stop()
        for h in hosts:
            h.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
