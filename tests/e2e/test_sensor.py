"""The sensor end to end, on real processes: a controller, a real agent enrolled as a sensor, and two
"devices" — Debian's sshd on port 22 of network-namespace hosts, whose forced command is a FortiGate
CLI printing captured FortiOS 5.6.3 outputs (an end-of-life release, an unsynchronised clock).

The device the operator trusted yields tickets filed under the device (EOL, clock), then a ticket with
the redacted diff when its running configuration changes; the device nobody trusted is refused and
ticketed as unreachable, naming the fingerprint to verify. No device's ticket is filed under the sensor.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import PASSWORD, AgentProc, Controller, cli, wait_for
from tests.netns import NetnsHost, require_netns
from tests.sensor.sshd import Sshd, keygen

FIX = Path(__file__).parents[1] / "checks" / "device" / "fixtures" / "fortinet"
OUTPUTS = {"get system status": FIX / "get_system_status" / "fgt100d_5.6.3.txt",
           "diagnose sys ntp status": FIX / "diagnose_sys_ntp_status" / "unsynced_unreachable.txt",
           "show full-configuration": FIX / "show_full-configuration" / "fgt_hq_base.txt"}
CHANGED = FIX / "show_full-configuration" / "fgt_hq_policy_changed.txt"


def _fortigate(hostname: str) -> dict[str, Any]:
    return {"prompt": hostname, "suffix": [" # ", " # "], "start_enabled": True, "page_lines": 20,
            "outputs": {k: str(v) for k, v in OUTPUTS.items()}}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Controller, AgentProc, str, list[Sshd]]]:
    require_netns()
    hosts = [NetnsHost(), NetnsHost()]
    servers: list[Sshd] = []
    ctl = Controller(tmp_path / "controller")
    agent = AgentProc(tmp_path / "sensor")
    try:
        key = keygen(tmp_path / "fw_ed25519")
        servers = [Sshd(tmp_path / f"fgt{i}", Path(f"{key}.pub"), _fortigate(f"FGT{i}"), netns=h)
                   for i, h in enumerate(hosts)]
        ctl.start()
        agent_id = agent.enroll(ctl, ctl.token("--tags", "sensor"))
        creds = agent.data_dir / "credentials.yaml"
        creds.write_text(f"fw:\n  username: root\n  key_file: {key}\n")
        creds.chmod(0o600)
        # The operator trusts the first device only, with the fingerprint read at its console.
        cli("vigil-agent", "device", "trust", "--data-dir", str(agent.data_dir), "--host", servers[0].host,
            "--fingerprint", servers[0].fingerprint())
        ranges = sorted({f"{s.host}/32" for s in servers})
        devices = ", ".join(f"{{name: {n}, address: {s.host}, platform: fortinet, credential: fw}}"
                            for n, s in zip(("fw-hq", "fw-branch"), servers, strict=True))
        baseline = tmp_path / "network.yaml"
        baseline.write_text(f"""baseline: tw-network
version: 1
scope: {{tags: [sensor]}}
rules:
  - id: NET-DEVICES
    check: ssh_device
    severity: high
    interval: 10s
    params: {{ranges: [{", ".join(ranges)}], devices: [{devices}], command_timeout_s: 20}}
    expect: {{supported: true, synchronized: true, config_changes: 0, max_signature_age_hours: 24}}
    refs: ["TWSE-CC CC-17010 a(j)", "TWSE-CC CC-17020 b(f)", "TPEx-CPA 3(7)1"]
""")
        ctl.vigil("baseline", "apply", str(baseline))
        agent.start()
        yield ctl, agent, agent_id, servers
    finally:
        agent.stop()
        ctl.stop()
        for s in servers:
            s.stop()
        for h in hosts:
            h.close()


def _open(ctl: Controller) -> dict[tuple[str, str], dict[str, Any]]:
    return {(t["asset"], t["subject"]): t for t in ctl.api("GET", "/tickets?status=open")}


def test_devices_are_judged_as_their_own_assets(lab: tuple[Controller, AgentProc, str, list[Sshd]]) -> None:
    ctl, _agent, agent_id, servers = lab
    want = {("dev:fw-hq", "eol"), ("dev:fw-hq", "ntp"), ("dev:fw-branch", "reachable")}

    def all_there() -> dict[tuple[str, str], dict[str, Any]] | None:
        now = _open(ctl)
        return now if want <= set(now) else None

    tickets = wait_for("the devices' tickets", all_there, timeout=120, every=0.5)
    assert tickets[("dev:fw-hq", "eol")]["title"].endswith("fw-hq runs 5.6.3 (fortios before 6.0): end of life")
    assert "clock synchronized is false" in tickets[("dev:fw-hq", "ntp")]["title"]
    unreached = tickets[("dev:fw-branch", "reachable")]
    assert "host key not trusted" in unreached["title"] and servers[1].fingerprint() in json.dumps(unreached)
    # The sensor's own host is judged by the default baseline as any host; nothing of the devices is its.
    assert not [k for k, t in tickets.items() if k[0] == agent_id and t["check"] == "ssh_device"]
    # Its signature databases are years old.
    assert any(k[0] == "dev:fw-hq" and k[1].startswith("signatures:") for k in tickets)

    # The inventory lists both devices with what the sensor last found (SFA-ETG Art.22), also as CSV.
    inventory = {d["name"]: d for d in json.loads(ctl.vigil("devices", "list", "--json").stdout)}
    hq, branch = inventory["fw-hq"], inventory["fw-branch"]
    assert (hq["version"], hq["support"], hq["reached"], hq["platform"]) == ("5.6.3", "end of life", True, "fortinet")
    assert hq["sensor_id"] == agent_id and hq["last_collected"] and hq["connection"] == "ssh:22"
    assert branch["reached"] is False and "host key not trusted" in branch["error"]
    csv_text = ctl.vigil("devices", "list", "--csv", "-").stdout
    assert csv_text.startswith("name,asset,purpose,address,connection,ports_used,platform,version")
    assert "fw-hq" in csv_text

    # The running configuration changes on the device: a ticket with the redacted diff.
    cfg = servers[0].dir / "device.json"
    device = json.loads(cfg.read_text())
    device["outputs"]["show full-configuration"] = str(CHANGED)
    cfg.write_text(json.dumps(device))
    change = wait_for("the configuration-change ticket", lambda: _open(ctl).get(("dev:fw-hq", "config")),
                      timeout=120, every=0.5)
    detail = ctl.api("GET", f"/tickets/{change['id']}")
    diff = detail["evidence"]["diff"]
    assert diff.startswith("--- previous") and "\n+" in diff and "ENC " not in diff

    # An approved change for the device's configuration: the change back inside its window is a change
    # record, not a second occurrence of the ticket.
    now = dt.datetime.now(dt.UTC)
    cli("vigil-controller", "user", "create", "--data-dir", str(ctl.data_dir), "--username", "net-ann",
        "--role", "analyst", "--password-stdin", input=PASSWORD + "\n")
    change_id = cli("vigil", "--url", ctl.url, "--api-key", ctl.api_key("net-ann"), "change", "create",
                    "--assets", "dev:fw-hq", "--paths", "/running-config",
                    "--start", (now - dt.timedelta(minutes=1)).isoformat(),
                    "--end", (now + dt.timedelta(hours=1)).isoformat(),
                    "--reason", "CR-42: restore the HQ policy").stdout.strip()
    ctl.vigil("change", "approve", change_id)
    before = ctl.api("GET", f"/tickets/{change['id']}")["occurrences"]
    device["outputs"]["show full-configuration"] = str(OUTPUTS["show full-configuration"])
    cfg.write_text(json.dumps(device))
    records = wait_for("the change record", lambda: ctl.api("GET", f"/changes/{change_id}").get("records") or None,
                       timeout=120, every=0.5)
    assert [(r["asset"], r["path"]) for r in records] == [("dev:fw-hq", "/running-config")]
    assert ctl.api("GET", f"/tickets/{change['id']}")["occurrences"] == before

