"""`vigil up`, the newcomer's command: a controller and a local agent, findings from this machine, a web
UI at the printed URL; SIGTERM stops both (the agent must not outlive it)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil

from tests.e2e.harness import ROOT, free_port, wait_for


def test_vigil_up_serves_findings_and_the_web_ui_and_stops_its_agent_on_sigterm(tmp_path: Path) -> None:
    http, grpc = free_port(), free_port()
    data = tmp_path / "vigil-data"
    out = tmp_path / "up.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "controller.cli.operator", "up", "--data-dir", str(data),
                                 "--http", f"127.0.0.1:{http}", "--grpc", f"127.0.0.1:{grpc}"],
                                cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for("'Vigil is up'", lambda: "Press Ctrl-C to stop." in out.read_text(), timeout=90)
        text = out.read_text()
        assert f"http://127.0.0.1:{http}/" in text and "admin login    admin / " in text
        key = (data / "admin-api-key").read_text().strip()
        agent_id = json.loads((data / "agent" / "agent.json").read_text())["agent_id"]

        def api(path: str) -> object:
            req = urllib.request.Request(f"http://127.0.0.1:{http}/api/v1{path}",
                                         headers={"Authorization": f"Bearer {key}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())

        findings = wait_for("this machine's findings", lambda: api(f"/findings?asset={agent_id}"), timeout=60)
        assert {f["check"] for f in findings} & {"ports", "agent"}  # type: ignore[union-attr,index]
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=10) as r:
            page = r.read().decode()
        assert "Sign in" in page

        # One controller per data directory: a second `vigil up` there refuses at once, naming the first.
        second = subprocess.run([sys.executable, "-m", "controller.cli.operator", "up", "--data-dir", str(data),
                                 "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr == (f"vigil: error: {data.resolve() / 'controller'} is in use by another controller "
                                 f"(pid {proc.pid}); stop it, or give another --data-dir\n")
        # Administrative commands find the controller vigil up runs, given vigil up's --data-dir.
        created = subprocess.run([sys.executable, "-m", "controller.cli.controller", "user", "create", "--data-dir",
                                  str(data), "--username", "ann", "--role", "viewer", "--password-stdin"],
                                 cwd=ROOT, capture_output=True, text=True, input="Correct-Horse-42-battery\n",
                                 timeout=120)
        assert created.returncode == 0, created.stderr
        assert f"using the controller in {data.resolve() / 'controller'}" in created.stderr

        agent = wait_for("the local agent process", lambda: [
            c for c in psutil.Process(proc.pid).children(recursive=True) if "agent.cli" in " ".join(c.cmdline())])[0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert agent.wait(15) is not None or not agent.is_running()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
