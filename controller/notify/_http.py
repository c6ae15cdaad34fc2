"""A small JSON-over-HTTP client on the standard library (the controller has no HTTP client dependency).

Errors become :class:`DeliveryError` (the request was refused: a 4xx, retried with backoff for this
message) or :class:`TargetUnavailable` (no answer, a timeout, a 5xx, 408 or 429: the whole target
pauses). Redirects are not followed, so credentials never go to another host. Error messages name the
method, path and status, and a little of the body, never a header.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message as HeaderMap
from pathlib import Path
from typing import Any

from common import __version__
from controller.notify.base import DeliveryError, TargetUnavailable

USER_AGENT = f"Vigil/{__version__}"
_RETRY_LATER = {408, 425, 429}


@dataclass
class Response:
    status: int
    headers: HeaderMap
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise DeliveryError(f"HTTP {self.status}: the answer is not JSON ({exc})") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class Client:
    def __init__(self, base_url: str, *, timeout: float, auth: str | None = None, ca_file: Path | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._auth = auth
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        handlers: list[Any] = [_NoRedirect()]
        if self.base_url.startswith("https:"):
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context(ca_file)))
        self._opener = urllib.request.build_opener(*handlers)

    def url(self, path: str, query: dict[str, str] | None = None) -> str:
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        return url + ("?" + urllib.parse.urlencode(query) if query else "")

    def request(self, method: str, path: str, *, json_body: Any = None, data: bytes | None = None,
                query: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                ok: tuple[int, ...] = ()) -> Response:
        """Send one request; return the response for 2xx (and for statuses in ``ok``), raise otherwise."""
        all_headers = dict(self._headers)
        if self._auth:
            all_headers["Authorization"] = self._auth
        if json_body is not None:
            data = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        where = f"{method} {urllib.parse.urlsplit(self.url(path)).path}"
        req = urllib.request.Request(self.url(path, query), data=data, method=method, headers=all_headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return Response(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read() if exc.fp is not None else b""
            if exc.code in ok:
                return Response(exc.code, exc.headers, body)
            snippet = body[:300].decode("utf-8", "replace").strip()
            text = f"{where}: HTTP {exc.code} {exc.reason}" + (f": {snippet}" if snippet else "")
            if 300 <= exc.code < 400:
                raise DeliveryError(f"{text} (redirect to {exc.headers.get('Location')!r} not followed: fix the "
                                    "URL in notifications.yaml)") from None
            if exc.code >= 500 or exc.code in _RETRY_LATER:
                raise TargetUnavailable(text) from None
            raise DeliveryError(text) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, ssl.SSLError,
                OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TargetUnavailable(f"{where}: cannot reach {urllib.parse.urlsplit(self.base_url).netloc}: "
                                    f"{reason}") from None
