"""Real local servers the notification targets talk to.

* :class:`FakeJira` and :class:`FakeServiceNow`: in-process HTTP servers implementing exactly the
  endpoints Vigil calls, with the payload shapes of Jira REST v2 and the ServiceNow Table API, and
  keeping state so that tests can check what the tracker saw.
* :class:`WebhookReceiver`: verifies the signature of every request and records it; it can be taken
  down (nothing listens: connection refused) and brought back on the same port.
* :class:`SyslogListener`: UDP and TCP (octet-counted frames) on loopback.
* :class:`RoundupTracker`: a real Roundup tracker (classic template, sqlite) run by ``roundup-server``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from controller.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


def wait_until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``cond`` until it holds; fail after ``timeout`` seconds (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _JsonHandler(BaseHTTPRequestHandler):
    server: _AppServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        try:
            status, body, headers = self.server.app.handle(self.command, url.path, query, dict(self.headers.items()),
                                                           raw)
        except Exception as exc:
            status, body, headers = 500, {"error": repr(exc)}, {}
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _dispatch


class _AppServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], app: Any) -> None:
        self.app = app
        super().__init__(addr, _JsonHandler)


class _Served:
    """Runs ``self`` (with a ``handle`` method) as an HTTP app on loopback."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []
        self._srv: _AppServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> None:
        self._srv = _AppServer(("127.0.0.1", port), self)
        self.port = self._srv.server_address[1]
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            assert self._thread is not None
            self._thread.join()
            self._srv = None

    def handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], raw: bytes
               ) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError


def _basic(headers: dict[str, str]) -> tuple[str, str] | None:
    value = headers.get("Authorization", "")
    if not value.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(value[6:]).decode().partition(":")
    return user, password


class FakeJira(_Served):
    """Jira REST v2: issues with labels, comments, a To Do / In Progress / Done workflow."""

    WORKFLOW = {  # status -> [(transition id, transition name, to status)]
        "To Do": [("11", "Start Progress", "In Progress"), ("31", "Done", "Done")],
        "In Progress": [("21", "Stop Progress", "To Do"), ("31", "Done", "Done")],
        "Done": [("41", "Reopen", "To Do")],
    }

    def __init__(self, user: str = "bot@example.com", token: str = "jira-token", project: str = "SEC") -> None:
        super().__init__()
        self.user, self.token, self.project = user, token, project
        self.issues: dict[str, dict[str, Any]] = {}

    def handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], raw: bytes
               ) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.calls.append((method, path))
            if _basic(headers) != (self.user, self.token):
                return 401, {"errorMessages": ["You are not authenticated"]}, {}
            body = json.loads(raw) if raw else None
            if method == "POST" and path == "/rest/api/2/issue":
                f = body["fields"]
                if f["project"]["key"] != self.project or not f.get("summary") or "name" not in f["issuetype"]:
                    return 400, {"errors": {"project": "invalid"}}, {}
                if any(" " in label for label in f.get("labels", [])):
                    return 400, {"errors": {"labels": "a label cannot contain spaces"}}, {}
                key = f"{self.project}-{len(self.issues) + 1}"
                self.issues[key] = {"fields": f, "status": "To Do", "comments": [], "transitions": []}
                return 201, {"id": str(10000 + len(self.issues)), "key": key,
                             "self": f"{self.url}/rest/api/2/issue/{key}"}, {}
            if method == "GET" and path == "/rest/api/2/search/jql":
                m = re.search(r'labels = "([^"]+)"', query.get("jql", ""))
                found = [k for k, i in self.issues.items() if m and m.group(1) in i["fields"].get("labels", [])]
                return 200, {"issues": [{"id": k, "key": k, "fields": {"status": {"name": self.issues[k]["status"]}}}
                                        for k in found[: int(query.get("maxResults", 50))]], "isLast": True}, {}
            if method == "GET" and path == f"/rest/api/2/project/{self.project}":
                return 200, {"key": self.project, "name": "Security"}, {}
            m = re.fullmatch(r"/rest/api/2/issue/([A-Z]+-\d+)(/comment|/transitions)?", path)
            if not m or m.group(1) not in self.issues:
                return 404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."]}, {}
            issue = self.issues[m.group(1)]
            if method == "GET" and m.group(2) is None:
                return 200, {"key": m.group(1), "fields": {"status": {"name": issue["status"]}}}, {}
            if method == "POST" and m.group(2) == "/comment":
                issue["comments"].append(body["body"])
                return 201, {"id": str(len(issue["comments"])), "body": body["body"]}, {}
            if m.group(2) == "/transitions":
                avail = self.WORKFLOW[issue["status"]]
                if method == "GET":
                    return 200, {"transitions": [{"id": i, "name": n, "to": {"name": to}} for i, n, to in avail]}, {}
                wanted = body["transition"]["id"]
                for i, _, to in avail:
                    if i == wanted:
                        issue["status"] = to
                        issue["transitions"].append(to)
                        return 204, None, {}
                return 400, {"errorMessages": [f"transition {wanted} is not valid"]}, {}
            return 405, {"errorMessages": ["method not allowed"]}, {}

    def by_label(self, label: str) -> list[dict[str, Any]]:
        with self.lock:
            return [i for i in self.issues.values() if label in i["fields"].get("labels", [])]


class FakeServiceNow(_Served):
    """ServiceNow Table API on ``incident``: correlation_id queries, create, PATCH with work notes."""

    def __init__(self, user: str = "vigil", password: str = "sn-pass") -> None:
        super().__init__()
        self.user, self.password = user, password
        self.records: dict[str, dict[str, Any]] = {}

    def handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], raw: bytes
               ) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.calls.append((method, path))
            if _basic(headers) != (self.user, self.password):
                return 401, {"error": {"message": "User Not Authenticated"}, "status": "failure"}, {}
            body = json.loads(raw) if raw else None
            fields = [f for f in query.get("sysparm_fields", "").split(",") if f]

            def view(rec: dict[str, Any]) -> dict[str, Any]:
                return {k: v for k, v in rec.items() if k in fields} if fields else dict(rec)

            if path == "/api/now/table/incident" and method == "GET":
                q = query.get("sysparm_query", "")
                m = re.match(r"correlation_id=([^^]*)", q)
                found = [r for r in self.records.values() if not m or r.get("correlation_id") == m.group(1)]
                return 200, {"result": [view(r) for r in found[: int(query.get("sysparm_limit", 10000))]]}, {}
            if path == "/api/now/table/incident" and method == "POST":
                sys_id = secrets.token_hex(16)
                rec = {"sys_id": sys_id, "number": f"INC{10001 + len(self.records):07d}", "state": "1",
                       "work_notes_journal": [], **{k: str(v) for k, v in body.items()}}
                self.records[sys_id] = rec
                return 201, {"result": view(rec)}, {"Location": f"{self.url}/api/now/table/incident/{sys_id}"}
            m = re.fullmatch(r"/api/now/table/incident/([0-9a-f]{32})", path)
            if m and method == "PATCH":
                rec = self.records.get(m.group(1))
                if rec is None:
                    return 404, {"error": {"message": "No Record found"}, "status": "failure"}, {}
                if body.get("state") in ("6", "7") and not (body.get("close_code") or rec.get("close_code")):
                    return 403, {"error": {"message": "Data Policy Exception: Resolution code is mandatory"}}, {}
                for k, v in body.items():
                    if k == "work_notes":
                        rec["work_notes_journal"].append(v)
                    else:
                        rec[k] = str(v)
                return 200, {"result": view(rec)}, {}
            return 400, {"error": {"message": "Invalid table or method"}}, {}

    def by_correlation(self, cid: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.records.values() if r.get("correlation_id") == cid]


class WebhookReceiver:
    """Records every signed POST; ``down()`` stops listening so that connections are refused."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        self.port = free_port()
        self._srv: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = verify(receiver.secret, raw, self.headers.get(TIMESTAMP_HEADER, ""),
                            self.headers.get(SIGNATURE_HEADER, ""))
                with receiver.lock:
                    if ok:
                        receiver.received.append({"delivery": self.headers.get("X-Vigil-Delivery"),
                                                  "event": self.headers.get("X-Vigil-Event"),
                                                  "body": json.loads(raw)})
                    else:
                        receiver.bad_signatures += 1
                self.send_response(204 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._srv = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._srv.daemon_threads = True
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            assert self._thread is not None
            self._thread.join()
            self._srv = None

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received)


class SyslogListener:
    """Collects syslog messages over UDP (one per datagram) and TCP (RFC 6587 octet counting)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen()
        self.udp_port = self.udp.getsockname()[1]
        self.tcp_port = self.tcp.getsockname()[1]
        self._threads = [threading.Thread(target=self._udp_loop, daemon=True),
                         threading.Thread(target=self._tcp_loop, daemon=True)]
        for t in self._threads:
            t.start()

    def _udp_loop(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                data, _ = self.udp.recvfrom(65535)
                if not data:  # shut down
                    return
                with self.lock:
                    self.messages.append(("udp", data))

    def _tcp_loop(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.tcp.accept()
                with conn:
                    buf = b""
                    while chunk := conn.recv(65536):
                        buf += chunk
                    while buf.strip():
                        length, _, rest = buf.partition(b" ")
                        n = int(length)
                        with self.lock:
                            self.messages.append(("tcp", rest[:n]))
                        buf = rest[n:]

    def close(self) -> None:
        for s in (self.udp, self.tcp):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self._threads:
            t.join(timeout=5)

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.messages)


class RoundupTracker:
    """A real Roundup tracker: ``roundup-admin install classic sqlite`` + ``initialise``, served by
    ``roundup-server`` on a free loopback port."""

    def __init__(self, home: Path, admin_password: str = "vigil-roundup-pw") -> None:
        self.home = home
        self.user = "admin"
        self.password = admin_password
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/tracker/"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def tools() -> tuple[str, str] | None:
        bindir = Path(sys.executable).parent
        admin = shutil.which("roundup-admin", path=str(bindir)) or shutil.which("roundup-admin")
        server = shutil.which("roundup-server", path=str(bindir)) or shutil.which("roundup-server")
        return (admin, server) if admin and server else None

    def start(self) -> None:
        tools = self.tools()
        assert tools is not None
        admin, server = tools
        tracker = self.home / "tracker"
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        subprocess.run([admin, "-i", str(tracker), "install", "classic", "sqlite",
                        f"tracker_web={self.url},mail_domain=localhost"], check=True, capture_output=True, env=env)
        subprocess.run([admin, "-i", str(tracker), "initialise", self.password], check=True, capture_output=True,
                       env=env)
        cmd = [server, "-p", str(self.port), "-n", "127.0.0.1"]
        if os.getuid() == 0:
            cmd += ["-u", "0"]  # roundup-server refuses to run as root unless told which user to be
        self.log = (self.home / "roundup-server.log").open("wb")
        self.proc = subprocess.Popen([*cmd, f"tracker={tracker}"], stdout=self.log, stderr=subprocess.STDOUT, env=env)

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"roundup-server exited: {(self.home / 'roundup-server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}rest/data/status", timeout=2):
                    return True
            except OSError as exc:
                return getattr(exc, "code", None) is not None  # any HTTP answer means it is up

        wait_until(answers, 30, "roundup-server to answer")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.log.close()

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.url + "rest/data/" + path, headers={
            "Authorization": "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode(),
            "X-Requested-With": "rest", "Referer": self.url})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def issues_titled(self, tag: str) -> list[dict[str, Any]]:
        doc = self.get("issue?" + urllib.parse.urlencode({"title": tag, "@fields": "title,status"}))
        return list(doc["data"]["collection"])

    def issue(self, issue_id: str) -> dict[str, Any]:
        return dict(self.get(f"issue/{issue_id}?@verbose=2")["data"]["attributes"])

    def message_texts(self, issue_id: str) -> list[str]:
        out = []
        for m in self.issue(issue_id)["messages"]:
            out.append(str(self.get(f"msg/{m['id']}?@verbose=3")["data"]["attributes"]["content"]))
        return out


@contextlib.contextmanager
def serving(server: _Served) -> Iterator[_Served]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
