"""The ``netscan`` check against a real host in a network namespace: open ports with banners, closed and
dropped ones counted, one result per target and the run's own last; a target outside the ranges refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from checks.base import Context
from checks.netscan import Netscan, NetscanArgs, NetscanResult
from checks.netscan.check import NetscanArgsError
from tests.netns import NetnsHost

REPO = Path(__file__).resolve().parents[3]


def test_each_target_reports_what_is_reachable(host: NetnsHost) -> None:
    listener = host.start([sys.executable, "-m", "tests.sensor.listener", host.ip, "22=SSH-2.0-OpenSSH_9.2p1",
                           "443", "8080"], cwd=REPO, stdout=subprocess.PIPE)
    assert listener.stdout is not None and listener.stdout.readline().strip() == b"ready"
    host.drop_tcp("8080")  # listening but firewalled: not reachable
    host.drop_tcp("9000:9009")
    args = NetscanArgs.from_params({"ranges": [f"{host.ip}/32"], "targets": [{"name": "cam-lobby",
                                                                            "address": host.ip}],
                                    "ports": "1-1024,8080,9000-9009", "method": "connect", "timeout_s": 0.5})
    emitted: list[NetscanResult] = []
    (run,) = Netscan().collect(args, Context(emit=emitted.append))
    (cam,) = emitted
    assert (cam.target, cam.address, cam.method, cam.error) == ("cam-lobby", host.ip, "connect", "")
    assert cam.open == ((22, "SSH-2.0-OpenSSH_9.2p1"), (443, ""))
    assert (cam.scanned, cam.filtered, cam.closed) == (1035, 11, 1035 - 11 - 2)
    assert run == NetscanResult("", "")


def test_targets_outside_the_ranges_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(NetscanArgsError, match=r"cam \(10.9.0.1\) is outside the ranges"):
        NetscanArgs.from_params({"ranges": ["10.20.0.0/24"], "targets": [{"name": "cam", "address": "10.9.0.1"}]})
