"""File integrity end to end: a real agent watching a real web root, a real controller judging it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from checks.fim.packages import AFTER_S
from tests.e2e.harness import PASSWORD, AgentProc, Controller, cli, read_only_db, wait_for

BASELINE = """baseline: tw-securities-linux
version: 10
rules:
  - id: WEBROOT-INTEGRITY
    check: fim
    severity: critical
    interval: 10s
    params:
      paths: ["{root}"]
      exclude: ["*.log"]
      nodiff: ["secret.php"]
      rehash_days: {rehash_days}
      coalesce_ms: 50
    expect: {{unexpected_changes: 0}}
    refs: ["TPEx-CPA 3(8)4(3)", "TPEx-CPA 3(7)1"]
"""


@contextlib.contextmanager
def watching(tmp_path: Path, baseline: str) -> Iterator[tuple[Controller, AgentProc, str]]:
    """A controller running ``baseline`` and an enrolled agent whose fim baseline is recorded."""
    ctl = Controller(tmp_path / "controller")
    ctl.start()
    agent = AgentProc(tmp_path / "agent")
    try:
        (tmp_path / "b.yaml").write_text(baseline)
        ctl.vigil("baseline", "apply", str(tmp_path / "b.yaml"))
        agent_id = agent.enroll(ctl)
        agent.start()
        # The first scan records the baseline; only then is a change a change.
        wait_for("the fim baseline", lambda: _results(ctl, agent_id), timeout=60)
        yield ctl, agent, agent_id
    finally:
        agent.stop()
        ctl.stop()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Controller, AgentProc, str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("<h1>Welcome</h1>\n<p>Trading hours 09:00-13:30</p>\n")
    (root / "secret.php").write_text("<?php $db_password = 'hunter2'; ?>\n")
    (root / "app.js").write_text("console.log('v1');\n" * 20)
    with watching(tmp_path, BASELINE.format(root=root, rehash_days=7)) as (ctl, agent, agent_id):
        yield ctl, agent, agent_id, root


def _results(ctl: Controller, agent_id: str) -> bool:
    with read_only_db(ctl.data_dir / "controller.db") as db:
        return bool(db.execute("SELECT count(*) FROM results WHERE agent_id=? AND check_id='fim'",
                               (agent_id,)).fetchone()[0])


def fim_tickets(ctl: Controller, agent_id: str) -> list[dict]:
    return [t for t in ctl.api("GET", "/tickets?check=fim") if t["asset"] == agent_id]


def test_unexpected_change_tickets_at_once_with_the_diff(site) -> None:
    ctl, _agent, agent_id, root = site
    t0 = time.monotonic()
    (root / "index.html").write_text("<h1>Welcome</h1>\n<p>Send your password to evil.example</p>\n")
    (ticket,) = wait_for("a fim ticket", lambda: fim_tickets(ctl, agent_id), every=0.02)
    elapsed = time.monotonic() - t0
    assert ticket["subject"] == str(root / "index.html") and ticket["severity"] == "critical"
    assert "unexpected change" in ticket["title"]
    ev = ticket["evidence"]
    assert ev["kind"] == "MODIFIED" and "sha256" in ev["changed_fields"]
    assert "-<p>Trading hours 09:00-13:30</p>" in ev["diff"] and "+<p>Send your password" in ev["diff"]
    assert ev["before"]["sha256"] != ev["after"]["sha256"]
    print(f"write -> ticket visible in the API: {elapsed * 1000:.0f} ms")

    # A secret's content never leaves the host: the change is reported without a diff.
    (root / "secret.php").write_text("<?php $db_password = 'changed'; ?>\n")
    secret = wait_for("the secret.php ticket", lambda: [t for t in fim_tickets(ctl, agent_id)
                                                        if t["subject"].endswith("secret.php")])
    assert secret[0]["evidence"]["diff"] == "" and secret[0]["evidence"]["diff_omitted"] == "nodiff"
    assert "hunter2" not in json.dumps(secret[0]) and "changed'" not in json.dumps(secret[0])

    # Excluded files are not watched at all.
    (root / "access.log").write_text("GET /\n")
    (root / "app.js").write_text("console.log('v2');\n")
    wait_for("the app.js ticket", lambda: [t for t in fim_tickets(ctl, agent_id) if t["subject"].endswith("app.js")])
    assert not [t for t in fim_tickets(ctl, agent_id) if t["subject"].endswith(".log")]


def test_change_inside_an_approved_window_is_recorded_not_ticketed(site) -> None:
    ctl, _agent, agent_id, root = site
    cli("vigil-controller", "user", "create", "--data-dir", str(ctl.data_dir), "--username", "dev-ann",
        "--role", "analyst", "--password-stdin", input=PASSWORD + "\n")
    analyst = ctl.api_key("dev-ann")
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(minutes=1)).isoformat(), (now + dt.timedelta(hours=1)).isoformat()
    create = cli("vigil", "--url", ctl.url, "--api-key", analyst, "change", "create", "--assets", agent_id,
                 "--paths", f"{root}/**", "--start", start, "--end", end, "--reason", "release 2.4 of the site")
    change_id = create.stdout.strip()
    assert change_id.startswith("chg-")
    # The requester cannot approve their own change (two people, TPEx-CPA 3(7)1).
    own = cli("vigil", "--url", ctl.url, "--api-key", analyst, "change", "approve", change_id, check=False)
    assert own.returncode == 1 and "403" in own.stderr
    ctl.vigil("change", "approve", change_id)

    (root / "index.html").write_text("<h1>Welcome to release 2.4</h1>\n")
    (root / "new-page.html").write_text("<p>new</p>\n")
    records = wait_for("two change records", lambda: [
        r for r in ctl.api("GET", f"/changes/{change_id}")["records"]], timeout=30)
    wait_for("both records", lambda: len(ctl.api("GET", f"/changes/{change_id}")["records"]) >= 2)
    records = ctl.api("GET", f"/changes/{change_id}")["records"]
    assert {r["path"] for r in records} == {str(root / "index.html"), str(root / "new-page.html")}
    assert fim_tickets(ctl, agent_id) == []


def test_touch_r_tampering_is_found_by_verification(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    target = root / "login.php"
    target.write_text("<?php check_password($u, $p); ?>\n")
    # rehash_days tiny: every verification re-hashes the whole (small) tree.
    baseline = BASELINE.format(root=root, rehash_days=0.0001).replace(
        "coalesce_ms: 50", "coalesce_ms: 50\n      realtime: false")
    with watching(tmp_path, baseline) as (ctl, _agent, agent_id):
        st = target.stat()
        with open(target, "r+") as f:  # same size, different content
            f.write("<?php return true;  ?>".ljust(len(target.read_text()) - 1) + "\n")
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # what `touch -r` does
        assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
        ctl.vigil("sweep", "run", "--checks", "fim")
        (ticket,) = wait_for("a tampering ticket", lambda: fim_tickets(ctl, agent_id), timeout=60)
        assert ticket["subject"] == str(target)
        assert ticket["evidence"]["detected_by"] in ("VERIFY", "REHASH")
        assert "sha256" in ticket["evidence"]["changed_fields"]


def test_changes_made_while_the_agent_was_stopped_are_reported_on_restart(site) -> None:
    ctl, agent, agent_id, root = site
    agent.stop()
    (root / "index.html").write_text("changed while down\n")
    (root / "app.js").unlink()
    (root / "added.php").write_text("<?php eval($_GET['x']); ?>\n")
    os.chmod(root / "secret.php", 0o666)
    agent.start()
    tickets = wait_for("four tickets", lambda: (lambda ts: ts if len(ts) >= 4 else None)(fim_tickets(ctl, agent_id)),
                       timeout=60)
    kinds = {t["subject"].rsplit("/", 1)[1]: t["evidence"]["kind"] for t in tickets}
    assert kinds == {"index.html": "MODIFIED", "app.js": "DELETED", "added.php": "CREATED",
                     "secret.php": "PERMISSIONS"}
    # Found by the rescan the agent runs when it starts watching, against the baseline kept on disk.
    assert {t["evidence"]["detected_by"] for t in tickets} == {"STARTUP"}
    # Nothing old is re-alerted: exactly those four.
    assert len(fim_tickets(ctl, agent_id)) == 4


def approved_change(ctl: Controller, agent_id: str, paths: str) -> str:
    """A change window over ``paths`` requested by an analyst and approved by the admin; its id."""
    now = dt.datetime.now(dt.UTC)
    cli("vigil-controller", "user", "create", "--data-dir", str(ctl.data_dir), "--username", "dev-bob",
        "--role", "analyst", "--password-stdin", input=PASSWORD + "\n")
    change_id = cli("vigil", "--url", ctl.url, "--api-key", ctl.api_key("dev-bob"), "change", "create",
                    "--assets", agent_id, "--paths", paths,
                    "--start", (now - dt.timedelta(minutes=1)).isoformat(),
                    "--end", (now + dt.timedelta(hours=1)).isoformat(), "--reason", "asset bundle").stdout.strip()
    ctl.vigil("change", "approve", change_id)
    return change_id


def recorded(ctl: Controller, change_id: str, expected: set[str]) -> set[str] | None:
    """The change records of ``change_id`` once they include every path in ``expected``."""
    with read_only_db(ctl.data_dir / "controller.db") as db:
        paths = {p for (p,) in db.execute("SELECT path FROM change_records WHERE change_id=?", (change_id,))}
    return paths if expected <= paths else None


def test_ten_thousand_writes_in_a_burst_are_all_accounted_for(site) -> None:
    """A deployment writes 10,000 files at once inside an approved change: every one is recorded."""
    ctl, _agent, agent_id, root = site
    change_id = approved_change(ctl, agent_id, f"{root}/assets")
    burst = root / "assets"
    burst.mkdir()
    for i in range(10_000):
        (burst / f"chunk-{i:05d}.js").write_text(f"export const n = {i};\n")
    expected = {str(burst / f"chunk-{i:05d}.js") for i in range(10_000)}

    paths = wait_for("10,000 change records", lambda: recorded(ctl, change_id, expected), timeout=120, every=0.5)
    assert str(burst) in paths  # the directory itself, created by the deployment
    assert fim_tickets(ctl, agent_id) == []


def test_a_burst_cut_by_kill_9_of_the_agent_is_fully_accounted_for_after_restart(site) -> None:
    """The agent dies (kill -9) in the middle of a deployment: after a restart every file is recorded."""
    ctl, agent, agent_id, root = site
    change_id = approved_change(ctl, agent_id, f"{root}/assets")
    burst = root / "assets"
    burst.mkdir()
    n = 3000
    assert agent.proc is not None
    for i in range(n):
        (burst / f"chunk-{i:05d}.js").write_text(f"export const n = {i};\n")
        if i == n // 2:
            agent.proc.kill()  # SIGKILL: no clean shutdown, whatever was queued in memory is gone
            agent.proc.wait(10)
    agent.start()
    expected = {str(burst / f"chunk-{i:05d}.js") for i in range(n)}

    # Real time saw the first part, the startup rescan after the restart the rest: none is missing.
    wait_for(f"{n} change records", lambda: recorded(ctl, change_id, expected), timeout=120, every=0.5)
    assert fim_tickets(ctl, agent_id) == []


def test_file_cap_raises_a_ticket_and_a_full_scan_below_it_resolves_it(tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    for i in range(30):
        (root / f"page{i:02d}.html").write_text(f"<p>{i}</p>\n")
    baseline = BASELINE.format(root=root, rehash_days=7).replace(
        "coalesce_ms: 50", "coalesce_ms: 50\n      max_files: 20")
    with watching(tmp_path, baseline) as (ctl, _agent, agent_id):
        # Never silent: the cap is a finding of its own, with what was and was not watched.
        (cap,) = wait_for("the file-cap ticket", lambda: [
            t for t in fim_tickets(ctl, agent_id) if t["subject"] == "file-cap"], timeout=60)
        assert cap["status"] == "open" and "cap of 20 reached" in cap["title"]
        assert cap["evidence"]["file_cap"] == 20 and cap["evidence"]["files_watched"] >= 20
        for i in range(15):
            (root / f"page{i:02d}.html").unlink()
        ctl.vigil("sweep", "run", "--checks", "fim")
        resolved = wait_for("the file-cap ticket resolved by a full scan below the cap", lambda: [
            t for t in fim_tickets(ctl, agent_id) if t["subject"] == "file-cap" and t["status"] == "resolved"],
            timeout=60)
        assert "below the file cap" in resolved[0]["resolution"]


PACKAGE_BASELINE = """baseline: tw-securities-linux
version: 10
rules:
  - id: PROGRAM-INTEGRITY
    check: fim
    severity: high
    interval: 10s
    params: {{paths: ["{root}"], coalesce_ms: 50}}
    expect: {{unexpected_changes: 0, package_changes_expected: true}}
    refs: ["TPEx-CPA 3(8)4(3)"]
"""


def _deb(tmp: Path, name: str, version: str, target: Path, content: str) -> Path:
    """A real Debian package installing one file at ``target``, built with dpkg-deb."""
    pkg = tmp / f"{name}-{version}"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Vigil tests <tests@vigil.invalid>\n"
        "Description: file integrity e2e test package\n")
    dest = pkg / target.relative_to("/")
    dest.parent.mkdir(parents=True)
    dest.write_text(content)
    out = tmp / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(out)], check=True,
                   capture_output=True)
    return out


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dpkg") is None,
                    reason="installs a real .deb with dpkg: needs root on a Debian-family host")
def test_a_dpkg_upgrade_is_an_expected_change_but_a_hand_edit_of_the_same_file_is_not(tmp_path: Path) -> None:
    name = f"vigil-e2e-{os.getpid()}"
    root = Path(f"/opt/{name}")
    target = root / "bin" / "tool"
    try:
        subprocess.run(["dpkg", "-i", str(_deb(tmp_path, name, "1.0", target, "v1\n"))], check=True,
                       capture_output=True)
        with watching(tmp_path, PACKAGE_BASELINE.format(root=root)) as (ctl, _agent, agent_id):
            # The package manager upgrades the program: recorded as a change by dpkg, no ticket.
            subprocess.run(["dpkg", "-i", str(_deb(tmp_path, name, "1.1", target, "v2\n"))], check=True,
                           capture_output=True)
            upgraded = time.monotonic()

            def by_dpkg() -> list[tuple[str, str]]:
                with read_only_db(ctl.data_dir / "controller.db") as db:
                    return list(db.execute("SELECT path, expected_source FROM change_records WHERE asset=? AND path=?",
                                           (agent_id, str(target))))

            (_path, source), *_ = wait_for("the upgrade's change record", by_dpkg, timeout=60)
            assert source == f"package manager (dpkg:{name})"
            assert fim_tickets(ctl, agent_id) == []

            # Someone edits the same dpkg-owned file by hand once dpkg's run is over (what is tested here is a
            # time having passed, so it is waited for): unexpected, a ticket at once.
            time.sleep(max(0.0, upgraded + AFTER_S + 2 - time.monotonic()))
            target.write_text("v2 with a backdoor\n")
            (ticket,) = wait_for("a ticket for the hand edit", lambda: fim_tickets(ctl, agent_id), timeout=60)
            assert ticket["subject"] == str(target)
    finally:
        subprocess.run(["dpkg", "--purge", name], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
