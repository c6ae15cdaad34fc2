"""``vigil up``: a controller on SQLite plus an enrolled local agent, for a first look in one command."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import secrets
import signal
import string
import subprocess
import sys
import threading
from pathlib import Path

from common.cli import setup_logging
from common.pki import write_private

log = logging.getLogger(__name__)


def _password() -> str:
    alphabet = string.ascii_letters + string.digits
    core = "".join(secrets.choice(alphabet) for _ in range(16))
    return core + "-" + secrets.choice(string.digits) + secrets.choice(string.ascii_uppercase)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def up(data_dir: Path, http: str, grpc_addr: str, debug: bool) -> int:
    try:
        from controller.core import UP_SUBDIR, Controller, ControllerConfig, DataDirLock
        from controller.server import Running, serve
    except ImportError as exc:
        sys.stderr.write(f"vigil: error: the controller is not installed ({exc.name}): pip install '.[controller]'\n")
        return 1
    from controller.domain.enrollment import create_token
    from controller.domain.users import create_api_key, create_user
    setup_logging(debug, quiet=not debug)
    data_dir = data_dir.resolve()
    cdir, adir = data_dir / UP_SUBDIR, data_dir / "agent"
    # Held until this process exits: a second `vigil up` (or `vigil-controller serve`) here refuses at once.
    _lock = DataDirLock(cdir).acquire()
    cfg = ControllerConfig(data_dir=cdir, grpc_addr=grpc_addr, http_addr=http)
    ctl = Controller.open(cfg)
    pw_file, key_file = data_dir / "admin-password", data_dir / "admin-api-key"
    if not pw_file.exists():
        password = _password()
        with ctl.sessions.begin() as s:
            create_user(s, "admin", "admin", password, "vigil-up")
            key = create_api_key(s, "admin", "vigil-up")
        write_private(pw_file, (password + "\n").encode())
        write_private(key_file, (key + "\n").encode())
    password = pw_file.read_text().strip()
    key = key_file.read_text().strip()

    ready = threading.Event()
    state: dict[str, Running] = {}
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()

    def on_ready(r: Running) -> None:
        state["r"] = r
        ready.set()

    def controller_thread() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve(cfg, on_ready, stop))
        except BaseException as exc:  # reported below
            state["error"] = exc  # type: ignore[assignment]
            ready.set()

    t = threading.Thread(target=controller_thread, name="vigil-controller", daemon=True)
    t.start()
    ready.wait()
    if "error" in state:
        sys.stderr.write(f"vigil: error: controller failed to start: {state['error']}\n")
        return 1
    r = state["r"]
    # The agent runs as its own process, exactly as on any other host: the controller never imports it.
    host = grpc_addr.rsplit(":", 1)[0]
    if not (adir / "agent.json").exists():
        with ctl.sessions.begin() as s:
            token = create_token(s, ctl.ca, dt.timedelta(minutes=10), ["local"], "vigil-up")
        enrolled = subprocess.run(
            [sys.executable, "-m", "agent.cli", "enroll", "--controller", f"{host}:{r.grpc_port}", "--token", token,
             "--data-dir", str(adir), "--enroll-port", str(r.enroll_port), "--json"],
            capture_output=True, text=True,
        )
        if enrolled.returncode != 0:
            sys.stderr.write(f"vigil: error: enrolling the local agent failed: {enrolled.stderr.strip()}\n")
            loop.call_soon_threadsafe(stop.set)
            t.join(10)
            return 1
    agent_id = json.loads((adir / "agent.json").read_text())["agent_id"]
    url = r.url
    sys.stdout.write(
        "\nVigil is up.\n"
        f"  web UI / API   {url}/   (REST under {url}/api/v1, OpenAPI at {url}/api/v1/openapi.json)\n"
        f"  admin login    admin / {password}   (first sign-in sets up an authenticator app: TOTP)\n"
        f"  API key        {key}   (also in {key_file})\n"
        f"  local agent    {agent_id}, baseline tw-securities-linux (log: {data_dir / 'agent.log'})\n"
        f"  data           {data_dir}\n\n"
        f"  try:  vigil --url {url} --api-key $(cat {key_file}) tickets list\n"
        "Press Ctrl-C to stop.\n"
    )
    sys.stdout.flush()
    with open(data_dir / "agent.log", "ab") as log_file:
        agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--data-dir", str(adir)],
                                 stdout=log_file, stderr=subprocess.STDOUT)
    # A service manager or `kill` stops us with SIGTERM: stop the agent and the controller as Ctrl-C does,
    # rather than leaving the agent running without us.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while t.is_alive():
            t.join(0.5)
            if agent.poll() is not None:
                sys.stderr.write(f"vigil: error: the local agent exited ({agent.returncode}); "
                                 f"see {data_dir / 'agent.log'}\n")
                return 1
    except KeyboardInterrupt:
        sys.stdout.write("stopping...\n")
    finally:
        if agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(10)
            except subprocess.TimeoutExpired:
                agent.kill()
        loop.call_soon_threadsafe(stop.set)
        t.join(10)
    return 0
