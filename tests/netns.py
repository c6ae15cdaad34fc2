"""Test hosts in network namespaces of our own: one namespace per host, a veth pair with a /30 to it.

Needs root and iproute2 (``iptables`` too for dropped ports); :func:`require_netns` skips, saying why,
otherwise. Addresses are in 10.100.0.0/16 - 10.199.0.0/16 (one /16 per test process), with IPv6 in
fd00:10:100::/48 - fd00:10:199::/48, and exist only on these veth pairs; everything is removed by
:meth:`NetnsHost.close` (the namespace takes its veth end, and so the pair, with it).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

import pytest


def require_netns(iptables: bool = False) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are Linux-only")
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and veth pairs")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's `ip` command")
    if iptables and shutil.which("iptables") is None:
        pytest.skip("needs `iptables` to drop packets inside a namespace (Debian's iptables)")


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


_SEQ = itertools.count()


class NetnsHost:
    """A host of its own: the sensor side of its veth is 10.P.X.Y+1, the host 10.P.X.Y+2.

    Each host of this process gets the next number (names and addresses are never reused while the
    kernel may still be removing an earlier host's veth pair)."""

    def __init__(self) -> None:
        require_netns()
        index = next(_SEQ)
        tag = os.getpid() % 10000
        self.name = f"vigil-t{tag}-{index}"
        outside, inside = f"vgo{tag}n{index}", f"vgi{tag}n{index}"  # at most 15 characters
        # A /16 of its own per test process (10.100/16 .. 10.199/16), so that two runs side by side
        # (a developer's and CI's, or two worktrees) never put the same address on two veth pairs.
        second = 100 + os.getpid() % 100
        third, fourth = divmod(4 * index, 256)
        if third > 255:
            raise ValueError("at most 16384 namespace hosts in one process")
        self.sensor_ip = f"10.{second}.{third}.{fourth + 1}"
        self.ip = f"10.{second}.{third}.{fourth + 2}"
        # IPv6 too, unique local addresses of the same numbering (fd00:10:P:index::/64).
        self.sensor_ip6 = f"fd00:10:{second}:{index:x}::1"
        self.ip6 = f"fd00:10:{second}:{index:x}::2"
        self.procs: list[subprocess.Popen[bytes]] = []
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", self.name)
            _ip("addr", "add", f"{self.sensor_ip}/30", "dev", outside)
            _ip("-6", "addr", "add", f"{self.sensor_ip6}/64", "dev", outside, "nodad")  # usable at once
            _ip("link", "set", outside, "up")
            self.run(["ip", "addr", "add", f"{self.ip}/30", "dev", inside])
            self.run(["ip", "-6", "addr", "add", f"{self.ip6}/64", "dev", inside, "nodad"])
            self.run(["ip", "link", "set", inside, "up"])
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.close()
            raise

    def exec_args(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str]) -> str:
        done = subprocess.run(self.exec_args(argv), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {self.name}: {done.stderr.strip()}")
        return done.stdout

    def start(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = subprocess.Popen(self.exec_args(argv), **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def drop_tcp(self, ports: str) -> None:
        """Silently drop TCP to ``ports`` ("1000:1100" or "22") inside the host, as a firewall does."""
        self.run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", ports, "-j", "DROP"])

    def drop_udp(self, ports: str) -> None:
        """Silently drop UDP to ``ports`` inside the host (no ICMP port-unreachable comes back)."""
        self.run(["iptables", "-A", "INPUT", "-p", "udp", "--dport", ports, "-j", "DROP"])

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
