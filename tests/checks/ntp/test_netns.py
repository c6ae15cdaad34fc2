"""SNTP across a real network: responders in one network namespace, the check in another.

Needs root and iproute2; skipped (saying so) otherwise. Both namespaces, the veth pair and every
process are created by the ``netns`` fixture and removed by its finalizer, pass or fail. The
addresses (10.201.200.0/24) exist only inside these namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
SERVER_IP, CLIENT_IP = "10.201.200.1", "10.201.200.2"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="network namespaces are Linux-only")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@dataclass
class Netns:
    server: str
    client: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def responder(self, port: int, offset_s: float, leap: int = 0, stratum: int = 2) -> None:
        """Start ``responder.py`` in the server namespace and wait for its "ready" line."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.server, sys.executable, "-m", "tests.checks.ntp.responder",
             "--host", SERVER_IP, "--port", str(port), "--offset", str(offset_s),
             "--leap", str(leap), "--stratum", str(stratum)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["ready", SERVER_IP, str(port)]

    def check(self, servers: list[str], timeout_s: float = 2.0, samples: int = 3) -> dict[str, Any]:
        """Run the whole ``ntp`` check in the client namespace; its result as a dict."""
        code = (
            "import dataclasses, json, sys\n"
            "from checks.base import Context\n"
            "from checks.ntp import Ntp, NtpArgs\n"
            "ctx = Context()\n"
            "params = json.loads(sys.argv[1])\n"
            "[r] = Ntp().collect(NtpArgs.from_params(params), ctx)\n"
            "print(json.dumps({'result': dataclasses.asdict(r), 'warnings': ctx.warnings}, default=str))\n"
        )
        done = subprocess.run(
            ["ip", "netns", "exec", self.client, sys.executable, "-c", code,
             json.dumps({"servers": servers, "timeout_s": timeout_s, "samples": samples})],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(done.stdout)
        return result


@pytest.fixture
def netns() -> Iterator[Netns]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and a veth pair")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's `ip` command")
    tag = os.getpid()
    ns = Netns(server=f"vigil-ntp-t{tag}-s", client=f"vigil-ntp-t{tag}-c")
    veth_s, veth_c = f"vnt{tag}s", f"vnt{tag}c"  # interface names are at most 15 characters
    try:
        try:
            _ip("netns", "add", ns.server)
            _ip("netns", "add", ns.client)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot create network namespaces here: {exc.stderr.strip()}")
        _ip("link", "add", veth_s, "type", "veth", "peer", "name", veth_c)
        _ip("link", "set", veth_s, "netns", ns.server)
        _ip("link", "set", veth_c, "netns", ns.client)
        for name, dev, addr in ((ns.server, veth_s, SERVER_IP), (ns.client, veth_c, CLIENT_IP)):
            _ip("-n", name, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "set", dev, "up")
        yield ns
    finally:
        for proc in ns.procs:
            proc.terminate()
        for proc in ns.procs:
            proc.wait(timeout=10)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            proc.stdout.close()
        # Deleting a namespace also deletes the veth end inside it, and so the pair.
        for name in (ns.server, ns.client):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_host_5s_behind_the_reference_across_namespaces(netns: Netns) -> None:
    netns.responder(123, offset_s=5.0)
    netns.responder(1123, offset_s=0.0, leap=3)
    netns.responder(2123, offset_s=0.0, stratum=0)
    out = netns.check([SERVER_IP, f"{SERVER_IP}:1123", f"{SERVER_IP}:2123"])
    result = out["result"]
    good, unsynced, kissed = result["sntp"]
    assert good["ok"] and good["server"] == SERVER_IP
    assert good["offset_ms"] == pytest.approx(5000.0, abs=50.0)
    assert 0 <= good["delay_ms"] < 50.0
    assert (result["offset_ms"], result["offset_source"]) == (good["offset_ms"], "sntp")
    assert (unsynced["ok"], unsynced["leap"], unsynced["error"]) == (
        False, 3, "server is unsynchronised (leap indicator 3)",
    )  # fmt: skip
    assert (kissed["ok"], kissed["stratum"], kissed["reference_id"]) == (False, 0, "DENY")
    assert kissed["error"] == "kiss-o'-death DENY: server refuses to serve time"


def test_only_bad_references_leave_no_offset(netns: Netns) -> None:
    netns.responder(123, offset_s=0.0, leap=3, stratum=3)
    # The second address belongs to nobody: its one request times out after 0.5 s.
    out = netns.check([SERVER_IP, "10.201.200.99"], timeout_s=0.5, samples=1)
    result = out["result"]
    assert (result["offset_ms"], result["offset_source"]) == (0.0, "")
    assert [m["error"] for m in result["sntp"]] == [
        "server is unsynchronised (leap indicator 3)",
        "no reply within 0.5 s",
    ]
