"""The sensor's SSH sessions against real OpenSSH servers: pinned host keys, credentials by name,
a device CLI with enable mode and a pager, real Linux commands, and every deadline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.sensor import (
    AuthFailed,
    ConnectFailed,
    CredentialError,
    DeviceTimeout,
    HostKeyChanged,
    SessionError,
    UnknownHostKey,
)
from agent.sensor.credentials import Credential, Credentials
from agent.sensor.hostkeys import AUDIT_FILE, HostKeyStore, presented_key
from agent.sensor.ssh import Target, Timeouts, collect, collect_many
from checks.device import parse
from tests.netns import NetnsHost, require_netns
from tests.sensor.sshd import Sshd, free_port, keygen

FIXTURES = Path(__file__).parents[1] / "checks" / "device" / "fixtures"
IOS_VERSION = FIXTURES / "cisco_ios" / "show_version" / "isr2911_15.7-3-M5.txt"
IOS_CONFIG = FIXTURES / "cisco_ios" / "show_running-config" / "sw_acc_01_base.txt"
FGT_STATUS = FIXTURES / "fortinet" / "get_system_status" / "fgt60e_7.0.13.txt"


def expected(capture: Path) -> dict[str, object]:
    return dict(json.loads(capture.with_suffix(".json").read_text()))


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    return keygen(tmp_path / "client_ed25519")


@pytest.fixture
def cred(client_key: Path) -> Credential:
    os.environ["VIGIL_TEST_ENABLE"] = "s3cret"
    return Credential(name="core-routers", username="root", key_file=client_key, enable_secret_env="VIGIL_TEST_ENABLE")


@pytest.fixture
def router(tmp_path: Path, client_key: Path) -> Sshd:
    sshd = Sshd(tmp_path / "r1", Path(f"{client_key}.pub"), {
        "prompt": "R1", "enable_secret": "s3cret", "banner": "Authorized access only.\n", "page_lines": 10,
        "outputs": {"show version": str(IOS_VERSION), "show running-config": str(IOS_CONFIG)},
        "needs_enable": ["show running-config"], "hang_on": ["show tech-support"]})
    yield sshd
    sshd.stop()


def test_an_unknown_host_key_is_refused_naming_host_and_fingerprint(router: Sshd, cred: Credential,
                                                                    tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "sensor")
    with pytest.raises(UnknownHostKey) as err:
        collect(Target(router.host, "cisco_ios", "core-routers", router.port), ["show version"],
                credential=cred, hostkeys=store)
    message = str(err.value)
    assert f"[{router.host}]:{router.port}" in message and router.fingerprint() in message
    assert "vigil-agent device trust" in message
    assert "Accepted publickey" not in router.log.read_text()  # refused before authenticating


def test_a_pinned_device_is_collected_in_enable_mode_and_parsed(router: Sshd, cred: Credential,
                                                              tmp_path: Path) -> None:
    data = tmp_path / "sensor"
    store = HostKeyStore(data)
    with pytest.raises(UnknownHostKey):
        collect(Target(router.host, "cisco_ios", "x", router.port), [], credential=cred, hostkeys=store)
    _pin_presented_key(store, router)
    audit = [json.loads(line) for line in (data / AUDIT_FILE).read_text().splitlines()]
    assert [(a["action"], a["host"], a["port"], a["fingerprint"]) for a in audit] == [
        ("hostkey.trust", router.host, router.port, router.fingerprint())]
    assert oct((data / "known_hosts").stat().st_mode & 0o777) == "0o600"

    outputs = collect(Target(router.host, "cisco_ios", "core-routers", router.port, name="r1"),
                      ["show version", "show running-config"], credential=cred, hostkeys=HostKeyStore(data))
    assert [o.command for o in outputs] == ["show version", "show running-config"]
    version = parse("cisco_ios", "show version", outputs[0].text)
    assert version.version == expected(IOS_VERSION)["version"]
    config = parse("cisco_ios", "show running-config", outputs[1].text)
    direct = parse("cisco_ios", "show running-config", IOS_CONFIG.read_text())
    # Through a session (echo, prompt, a pager erased by backspaces) the configuration is the same one.
    assert config.config is not None and direct.config is not None
    assert config.config.digest == direct.config.digest
    assert (config.config.lines, config.config.redacted, config.config.ignored) == tuple(
        expected(IOS_CONFIG)["config"][k] for k in ("lines", "redacted", "ignored"))  # type: ignore[index]


def test_a_pager_is_answered_where_paging_cannot_be_turned_off(tmp_path: Path, client_key: Path,
                                                              cred: Credential) -> None:
    fgt = Sshd(tmp_path / "fgt", Path(f"{client_key}.pub"), {
        "prompt": "FGT60E", "suffix": [" # ", " # "], "start_enabled": True, "page_lines": 5,
        "outputs": {"get system status": str(FGT_STATUS)}})
    try:
        store = HostKeyStore(tmp_path / "sensor")
        _pin_presented_key(store, fgt)
        (out,) = collect(Target(fgt.host, "fortinet", "c", fgt.port), ["get system status"], credential=cred,
                         hostkeys=store)
        assert out.text.count("--More--") >= 4  # five pages: the pager was there, and was answered
        assert parse("fortinet", "get system status", out.text).version == expected(FGT_STATUS)["version"]
    finally:
        fgt.stop()


def test_a_changed_host_key_is_refused_naming_both_fingerprints(router: Sshd, cred: Credential,
                                                                tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "sensor")
    _pin_presented_key(store, router)
    old = router.fingerprint()
    router.replace_host_key()
    with pytest.raises(HostKeyChanged) as err:
        collect(Target(router.host, "cisco_ios", "c", router.port), ["show version"], credential=cred,
                hostkeys=HostKeyStore(tmp_path / "sensor"))
    assert old in str(err.value) and router.fingerprint() in str(err.value) and "--replace" in str(err.value)
    # Re-pinning needs --replace, and the audit file says what was replaced.
    with pytest.raises(HostKeyChanged):
        _pin_presented_key(HostKeyStore(tmp_path / "sensor"), router)
    _pin_presented_key(HostKeyStore(tmp_path / "sensor"), router, replace=True)
    last = json.loads((tmp_path / "sensor" / AUDIT_FILE).read_text().splitlines()[-1])
    assert (last["fingerprint"], last["replaced"]) == (router.fingerprint(), old)


def test_enable_mode_without_or_with_a_wrong_secret_is_a_clear_error(router: Sshd, client_key: Path,
                                                                     tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "sensor")
    _pin_presented_key(store, router)
    target = Target(router.host, "cisco_ios", "c", router.port)
    with pytest.raises(SessionError, match="has none"):
        collect(target, ["show version"], credential=Credential("c", "root", client_key), hostkeys=store)
    os.environ["VIGIL_TEST_WRONG"] = "nope"
    with pytest.raises(SessionError, match="refused the secret of credential 'c'"):
        collect(target, ["show version"], credential=Credential("c", "root", client_key,
                                                                enable_secret_env="VIGIL_TEST_WRONG"), hostkeys=store)


def test_a_command_that_never_answers_runs_out_of_its_deadline(router: Sshd, cred: Credential,
                                                               tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "sensor")
    _pin_presented_key(store, router)
    with pytest.raises(DeviceTimeout, match=r"'show tech-support' gave no complete output within 1s"):
        collect(Target(router.host, "cisco_ios", "c", router.port), ["show version", "show tech-support"],
                credential=cred, hostkeys=store, timeouts=Timeouts(connect=5, command=1, session=30))
    with pytest.raises(DeviceTimeout, match=r"session ran out of its 2s"):
        collect(Target(router.host, "cisco_ios", "c", router.port), ["show tech-support"],
                credential=cred, hostkeys=store, timeouts=Timeouts(connect=5, command=30, session=2))


def test_a_linux_host_runs_real_commands_on_exec_channels(tmp_path: Path, client_key: Path) -> None:
    host = Sshd(tmp_path / "linux", Path(f"{client_key}.pub"))
    try:
        store = HostKeyStore(tmp_path / "sensor")
        _pin_presented_key(store, host)
        outs = collect(Target(host.host, "linux", "c", host.port), ["cat /etc/os-release", "uname -a", "false"],
                       credential=Credential("c", "root", client_key), hostkeys=store)
        assert [o.exit_status for o in outs] == [0, 0, 1]
        facts = parse("linux", "cat /etc/os-release", outs[0].text)
        assert facts.version and facts.version in Path("/etc/os-release").read_text()
        assert outs[1].text.split()[2] == os.uname().release
    finally:
        host.stop()


def test_a_refused_key_and_a_closed_port_say_which_device(router: Sshd, tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "sensor")
    _pin_presented_key(store, router)
    other = keygen(tmp_path / "other_ed25519")
    with pytest.raises(AuthFailed, match=r"user 'root' refused with every key and password of credential 'lab' "
                                         r"\(1 tried: ssh-ed25519\)"):
        collect(Target(router.host, "cisco_ios", "lab", router.port, name="r1"), ["show version"],
                credential=Credential("lab", "root", other), hostkeys=store)
    closed = free_port()
    with pytest.raises(ConnectFailed, match=rf"^\[127.0.0.1\]:{closed}: cannot connect"):
        collect(Target("127.0.0.1", "cisco_ios", "lab", closed), [], credential=Credential("lab", "root", other),
                hostkeys=store)


def test_credentials_file_is_checked_as_a_whole(tmp_path: Path) -> None:
    path = tmp_path / "credentials.yaml"
    path.write_text("core:\n  username: netops\n  key_file: /k\nlab:\n  username: admin\n  agent: true\n")
    path.chmod(0o644)
    with pytest.raises(CredentialError, match="readable by others"):
        Credentials.load(tmp_path)
    path.chmod(0o600)
    creds = Credentials.load(tmp_path)
    assert creds.names() == ["core", "lab"] and creds.get("lab").agent
    with pytest.raises(CredentialError, match=r"'nope' is not in .* \(known: core, lab\)"):
        creds.get("nope")
    with pytest.raises(CredentialError, match="key file /k does not exist"):
        creds.get("core").private_keys()
    path.write_text("core:\n  username: netops\n  password: hunter2\n")
    with pytest.raises(CredentialError, match="passwords are not accepted"):
        Credentials.load(tmp_path)
    path.write_text("core: [1, 2]\n")
    with pytest.raises(CredentialError, match="credential 'core': expected a mapping"):
        Credentials.load(tmp_path)


def _pin_presented_key(store: HostKeyStore, sshd: Sshd, replace: bool = False) -> None:
    """What `vigil-agent device trust` does once the operator has compared the fingerprint."""
    store.pin(sshd.host, sshd.port, presented_key(sshd.host, sshd.port), replace=replace)


def test_devices_in_network_namespaces_are_collected_side_by_side(tmp_path: Path, client_key: Path,
                                                                  cred: Credential) -> None:
    """Three devices, each on port 22 of its own namespace host; one shows a key nobody pinned. The
    bounded pool collects the others, and the refused one's outcome says why."""
    require_netns()
    hosts = [NetnsHost() for _ in range(3)]
    servers: list[Sshd] = []
    try:
        for i, h in enumerate(hosts):
            servers.append(Sshd(tmp_path / f"d{i}", Path(f"{client_key}.pub"), {
                "prompt": f"SW{i}", "start_enabled": True, "outputs": {"show version": str(IOS_VERSION)}}, netns=h))
        store = HostKeyStore(tmp_path / "sensor")
        for s in servers[:2]:
            _pin_presented_key(store, s)
        jobs = [(Target(s.host, "cisco_ios", "core-routers", s.port, name=f"sw{i}"), ["show version"], cred)
                for i, s in enumerate(servers)]
        done = collect_many(jobs, hostkeys=store, workers=2)
        assert [c.target.name for c in done] == ["sw0", "sw1", "sw2"]
        for c in done[:2]:
            assert c.error is None
            assert parse("cisco_ios", "show version", c.outputs[0].text).version == expected(IOS_VERSION)["version"]
        assert isinstance(done[2].error, UnknownHostKey) and servers[2].fingerprint() in str(done[2].error)
        assert f"sw2 ({servers[2].host})" in str(done[2].error)
    finally:
        for s in servers:
            s.stop()
        for h in hosts:
            h.close()


def test_a_snapshot_runs_every_platform_command_and_names_what_gave_nothing(router: Sshd, cred: Credential,
                                                                           tmp_path: Path) -> None:
    from agent.sensor.device import commands_for, snapshots

    store = HostKeyStore(tmp_path / "sensor")
    _pin_presented_key(store, router)
    closed = free_port()
    snaps = snapshots([(Target(router.host, "cisco_ios", "core-routers", router.port, name="r1"), cred),
                       (Target("127.0.0.1", "cisco_ios", "core-routers", closed, name="gone"), cred)],
                      hostkeys=store, workers=2)
    r1, gone = snaps
    assert r1.reached and r1.facts is not None
    assert r1.facts.version == expected(IOS_VERSION)["version"] and r1.facts.config is not None
    # The router knows show version and show running-config only: the other commands are named, not dropped.
    assert set(r1.problems) == set(commands_for("cisco_ios")) - {"show version", "show running-config"}
    assert all("cisco_ios" in why for why in r1.problems.values())
    assert not gone.reached and gone.facts is None and isinstance(gone.error, ConnectFailed)
    assert str(gone.error).startswith(f"gone ([127.0.0.1]:{closed}): cannot connect")


# Each platform as its CLI greets, prompts and pages (from the vendors' documented sessions), with a
# captured version output of its own; the sensor must come out with the version the capture says.
PLATFORM_SESSIONS = [
    ("cisco_xe", {"prompt": "c8kv-01", "enable": True}, "show version",
     "cisco_xe/show_version/c8000v_17.3.4a_prompt.txt"),
    ("cisco_nxos", {"prompt": "n9k-1", "start_enabled": True}, "show version",
     "cisco_nxos/show_version/n9k_c93180yc_9.3-10.txt"),
    ("cisco_asa", {"prompt": "asa", "enable": True}, "show version",
     "cisco_asa/show_version/asa5516_9.8-4-10.txt"),
    ("juniper_junos", {"prompt": "netops@mx480", "suffix": [">", ">"]}, "show version",
     "juniper_junos/show_version/mx480_19.4R3-S1.3.txt"),
    ("paloalto_panos", {"prompt": "admin@PA-220", "suffix": [">", ">"]}, "show system info",
     "paloalto_panos/show_system_info/pa220_10.1.6-h6.txt"),
    ("arista_eos", {"prompt": "leaf1", "enable": True}, "show version",
     "arista_eos/show_version/dcs7050tx_4.28.3M.txt"),
]


@pytest.mark.parametrize(("platform", "cli", "command", "capture"), PLATFORM_SESSIONS,
                         ids=[p[0] for p in PLATFORM_SESSIONS])
def test_each_platform_is_driven_to_its_version(platform: str, cli: dict[str, object], command: str, capture: str,
                                                 tmp_path: Path, client_key: Path, cred: Credential) -> None:
    device = {k: v for k, v in cli.items() if k != "enable"}
    device.update({"enable_secret": "s3cret", "page_lines": 8, "outputs": {command: str(FIXTURES / capture)}})
    if cli.get("enable"):
        device["needs_enable"] = [command]  # only reachable after enable, as a privileged show is
    sshd = Sshd(tmp_path / platform, Path(f"{client_key}.pub"), device)
    try:
        store = HostKeyStore(tmp_path / "sensor")
        _pin_presented_key(store, sshd)
        (out,) = collect(Target(sshd.host, platform, "core-routers", sshd.port), [command], credential=cred,
                         hostkeys=store)
        assert parse(platform, command, out.text).version == expected(FIXTURES / capture)["version"]
    finally:
        sshd.stop()


def test_a_device_without_a_prompt_or_that_hangs_up_is_a_clear_error(tmp_path: Path, client_key: Path,
                                                                      cred: Credential) -> None:
    mute = Sshd(tmp_path / "mute", Path(f"{client_key}.pub"), {"prompt": "X", "mute": True,
                                                               "banner": "Line 7 of the console server"})
    gone = Sshd(tmp_path / "gone", Path(f"{client_key}.pub"), {"prompt": "R9", "start_enabled": True,
                                                               "hang_up_on": ["show version"]})
    try:
        store = HostKeyStore(tmp_path / "sensor")
        for s in (mute, gone):
            _pin_presented_key(store, s)
        with pytest.raises(DeviceTimeout,
                           match=r"no CLI prompt within 1s \(last line: 'Line 7 of the console server'\)"):
            collect(Target(mute.host, "cisco_ios", "c", mute.port), ["show version"], credential=cred,
                    hostkeys=store, timeouts=Timeouts(connect=5, command=1, session=10))
        with pytest.raises(SessionError, match=r"the device closed the session"):
            collect(Target(gone.host, "cisco_ios", "c", gone.port), ["show version"], credential=cred,
                    hostkeys=store)
    finally:
        mute.stop()
        gone.stop()
