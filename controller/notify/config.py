"""``notifications.yaml``: the notification targets, validated as a whole with the line of every problem.

Default location ``DATA_DIR/notifications.yaml`` (``vigil-controller serve --notify-config FILE`` to
choose another). A missing default file means "no targets"; a broken file stops the controller with
every problem listed::

    notifications.yaml:14: targets[2].url: must be an http:// or https:// URL

Secrets (``secret``, ``password``, ``token``) are never written in the file itself: give
``${ENV_VAR}`` or ``password_file: /path`` (the file's content, trailing newline removed). They are
held as ``SecretStr`` so that neither a log line nor an error message can show them. ``${ENV_VAR}``
also works in any other string value.

The configuration in force is registered per database engine (:func:`activate`), because
:func:`controller.notify.enqueue` only has the caller's session: it reads the targets from there.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from sqlalchemy import Engine

from common.durations import parse_duration
from controller import vocabulary
from controller.notify.base import EVENT_KINDS, SEVERITIES, STATUSES, NotifyConfigError

DEFAULT_NAME = "notifications.yaml"
SECRET_FIELDS = ("secret", "password", "token")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_BYTES = 1024 * 1024


def _seconds(value: Any) -> float:
    """``30s``/``5m``/``1h``, ``250ms``, or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("write a duration such as 30s, 5m or 250ms")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("must be greater than zero")
        return float(value)
    text = str(value).strip()
    if text.endswith("ms") and text[:-2].strip().isdigit():
        ms = int(text[:-2])
        if ms <= 0:
            raise ValueError("must be greater than zero")
        return ms / 1000
    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise ValueError(str(exc)) from None


Seconds = Annotated[float, BeforeValidator(_seconds)]
Severity = vocabulary.Severity
EventKind = Literal["opened", "reopened", "auto_resolved", "transition", "comment", "assigned", "report",
                    "exception"]
_NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,47}$"


def _url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


Url = Annotated[str, AfterValidator(_url)]


def _by_severity(value: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(value) - set(SEVERITIES))
    if unknown:
        raise ValueError(f"unknown severity {', '.join(unknown)}; use {', '.join(SEVERITIES)}")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetryConfig(_Model):
    # The first retry comes after about `initial`, then twice as long each time, never longer than `max`.
    initial: Seconds = 5.0
    max: Seconds = 60.0
    # A delivery still pending this long after its event is "stuck": logged and shown by the API.
    stuck_after: Seconds = 1800.0


class WorkerConfig(_Model):
    poll_interval: Seconds = 1.0
    batch: int = Field(default=50, ge=1, le=1000)
    # A replica holds a target this long without renewing it before another may take over.
    lease: Seconds = 60.0


class _Target(_Model):
    name: str = Field(pattern=_NAME_RE)
    enabled: bool = True
    # Only tickets of this severity or worse.
    min_severity: Severity = "low"
    # Only these event kinds (default: all).
    events: tuple[EventKind, ...] | None = None
    timeout: Seconds = 10.0

    def wants(self, kind: str, severity: str) -> bool:
        if not self.enabled:
            return False
        if self.events is not None and kind not in self.events:
            return False
        if severity in SEVERITIES:
            return SEVERITIES.index(severity) <= SEVERITIES.index(self.min_severity)
        return True


class WebhookTarget(_Target):
    type: Literal["webhook"]
    url: Url
    secret: SecretStr = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    ca_file: Path | None = None


class SmtpTarget(_Target):
    type: Literal["smtp"]
    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(alias="from", min_length=3)
    to: tuple[str, ...] = Field(min_length=1)
    ca_file: Path | None = None

    @property
    def effective_port(self) -> int:
        return self.port or {"starttls": 587, "implicit": 465, "none": 25}[self.tls]


class SyslogTarget(_Target):
    type: Literal["syslog"]
    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    protocol: Literal["udp", "tcp", "tls"] = "tcp"
    facility: Literal["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
                      "authpriv", "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
                      "local7"] = "local4"
    app_name: str = Field("vigil", pattern=r"^[!-~]{1,48}$")
    # The HOSTNAME field; default: this controller's fully qualified name.
    hostname: str | None = Field(None, pattern=r"^[!-~]{1,255}$")
    ca_file: Path | None = None
    # Longer messages are cut (UDP datagrams should stay below the path MTU; RFC 5426 asks for 2048).
    max_bytes: int = Field(8192, ge=480, le=65000)

    @property
    def effective_port(self) -> int:
        return self.port or {"udp": 514, "tcp": 514, "tls": 6514}[self.protocol]


_JIRA_STATES = {"open": "To Do", "acknowledged": "To Do", "in_progress": "In Progress", "resolved": "Done",
                "false_positive": "Done", "closed": "Done"}


def _status_map(defaults: dict[str, str]) -> Callable[[Any], dict[str, str]]:
    def merge(value: Any) -> dict[str, str]:
        if value is None:
            return dict(defaults)
        if not isinstance(value, dict):
            raise ValueError(f"write a mapping from our statuses ({', '.join(STATUSES)}) to the tracker's")
        unknown = sorted(set(value) - set(STATUSES))
        if unknown:
            raise ValueError(f"unknown status {', '.join(map(str, unknown))}; ours are {', '.join(STATUSES)}")
        return {**defaults, **{str(k): str(v) for k, v in value.items()}}

    return merge


class JiraTarget(_Target):
    type: Literal["jira"]
    url: Url
    project: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,31}$")
    issue_type: str = "Bug"
    # Cloud: user = the account e-mail, token = an API token (basic auth). Server/Data Center: no user,
    # token = a personal access token (bearer).
    user: str | None = None
    token: SecretStr = Field(min_length=1)
    deployment: Literal["cloud", "server"] = "cloud"
    # Our status -> the Jira status name to move the issue to (the transition leading there is looked up).
    statuses: Annotated[dict[str, str], BeforeValidator(_status_map(_JIRA_STATES))] = Field(
        default_factory=lambda: dict(_JIRA_STATES))
    # Our severity -> a Jira priority name; leave out when the create screen has no priority field.
    priorities: Annotated[dict[str, str], AfterValidator(_by_severity)] | None = None
    # A resolution to set with the resolving transition, when the workflow's screen asks for one.
    resolution: str | None = None
    labels: tuple[str, ...] = ("vigil",)
    ca_file: Path | None = None


_SN_IMPACT = {"critical": "1", "high": "1", "medium": "2", "low": "3"}
_SN_URGENCY = {"critical": "1", "high": "2", "medium": "2", "low": "3"}
_ROUNDUP_PRIORITIES = {"critical": "critical", "high": "urgent", "medium": "bug", "low": "wish"}
_SN_STATES = {"open": "1", "acknowledged": "2", "in_progress": "2", "resolved": "6", "false_positive": "6",
              "closed": "7"}


class ServiceNowTarget(_Target):
    type: Literal["servicenow"]
    url: Url
    user: str = Field(min_length=1)
    password: SecretStr = Field(min_length=1)
    statuses: Annotated[dict[str, str], BeforeValidator(_status_map(_SN_STATES))] = Field(
        default_factory=lambda: dict(_SN_STATES))
    close_code: str = "Resolved by caller"
    false_positive_close_code: str | None = None
    assignment_group: str | None = None
    caller_id: str | None = None
    category: str | None = None
    # Our severity -> (impact, urgency); ServiceNow derives the priority from the two.
    impact: Annotated[dict[str, str], AfterValidator(_by_severity)] = Field(default_factory=lambda: dict(_SN_IMPACT))
    urgency: Annotated[dict[str, str], AfterValidator(_by_severity)] = Field(default_factory=lambda: dict(_SN_URGENCY))
    ca_file: Path | None = None


_ROUNDUP_STATES = {"open": "chatting", "acknowledged": "chatting", "in_progress": "in-progress",
                   "resolved": "resolved", "false_positive": "resolved", "closed": "resolved"}


class RoundupTarget(_Target):
    type: Literal["roundup"]
    # The tracker's web address as in its config.ini ([tracker] web), e.g. https://host/tracker/.
    url: Url
    user: str = Field(min_length=1)
    password: SecretStr = Field(min_length=1)
    statuses: Annotated[dict[str, str], BeforeValidator(_status_map(_ROUNDUP_STATES))] = Field(
        default_factory=lambda: dict(_ROUNDUP_STATES))
    priorities: Annotated[dict[str, str], AfterValidator(_by_severity)] = Field(
        default_factory=lambda: dict(_ROUNDUP_PRIORITIES))
    ca_file: Path | None = None


TargetConfig = Annotated[
    WebhookTarget | SmtpTarget | SyslogTarget | JiraTarget | ServiceNowTarget | RoundupTarget,
    Field(discriminator="type"),
]
TARGET_TYPES = ("webhook", "smtp", "syslog", "jira", "servicenow", "roundup")


class NotifyConfig(_Model):
    retry: RetryConfig = RetryConfig()
    worker: WorkerConfig = WorkerConfig()
    # The controller's web address as people reach it, for links back to our tickets.
    public_url: str | None = None
    targets: tuple[TargetConfig, ...] = ()

    @field_validator("targets")
    @classmethod
    def _unique(cls, targets: tuple[Any, ...]) -> tuple[Any, ...]:
        seen: set[str] = set()
        for t in targets:
            if t.name in seen:
                raise ValueError(f"two targets are named {t.name!r}; names must be unique")
            seen.add(t.name)
        return targets

    def target(self, name: str) -> Any:
        for t in self.targets:
            if t.name == name:
                return t
        return None

    def wanting(self, kind: str, severity: str) -> list[str]:
        return [t.name for t in self.targets if t.wants(kind, severity)]


# -- loading ---------------------------------------------------------------------------------------

_Path = tuple[str | int, ...]
_TAG = "tag:yaml.org,2002:"


class _Doc:
    """Plain data from a YAML node tree plus the line of every key and list item."""

    def __init__(self, root: yaml.Node) -> None:
        self.lines: dict[_Path, int] = {(): root.start_mark.line + 1}
        self.problems: list[tuple[int, str, str]] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self.data = self._build(root, ())

    def line_of(self, path: _Path) -> int:
        while path not in self.lines:
            path = path[:-1]
        return self.lines[path]

    def _build(self, node: yaml.Node, path: _Path) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                if key in out:
                    self.problems.append((key_node.start_mark.line + 1, _path_str((*path, key)),
                                          "duplicate key; give it once"))
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = self._build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._build(child, (*path, i)) for i, child in enumerate(node.value)]
        if node.tag.startswith(_TAG):
            return self._constructor.construct_object(node, deep=True)
        self.problems.append((node.start_mark.line + 1, _path_str(path), f"unsupported YAML tag {node.tag}"))
        return None


def _path_str(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _expand(doc: _Doc, value: Any, path: _Path, problems: list[tuple[int, str, str]], base: Path) -> Any:
    """Resolve ``${ENV}`` everywhere and ``<secret>_file`` keys; reject secrets written in the file."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            here = (*path, key)
            if key.endswith("_file") and key[: -len("_file")] in SECRET_FIELDS:
                name = key[: -len("_file")]
                if name in value:
                    problems.append((doc.line_of(here), _path_str(here), f"give either {name} or {key}, not both"))
                    continue
                file = Path(str(_expand(doc, item, here, problems, base)))
                file = file if file.is_absolute() else base / file
                try:
                    out[name] = file.read_text().rstrip("\r\n")
                except OSError as exc:
                    problems.append((doc.line_of(here), _path_str(here),
                                     f"cannot read {file}: {exc.strerror or exc}; the controller's user must be "
                                     "able to read it"))
                continue
            if key in SECRET_FIELDS and item is not None:
                text = str(item)
                if not _ENV_RE.fullmatch(text.strip()):
                    problems.append((doc.line_of(here), _path_str(here),
                                     f"do not write a secret in this file: use {key}: ${{ENV_VAR}} or "
                                     f"{key}_file: /path/to/file"))
                    out[key] = "(rejected)"  # so that the field is not also reported as missing
                    continue
            out[key] = _expand(doc, item, here, problems, base)
        return out
    if isinstance(value, list):
        return [_expand(doc, v, (*path, i), problems, base) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        def env(m: re.Match[str]) -> str:
            var = m.group(1)
            if var not in os.environ:
                problems.append((doc.line_of(path), _path_str(path),
                                 f"environment variable {var} is not set; set it for the controller"))
                return ""
            return os.environ[var]

        return _ENV_RE.sub(env, value)
    return value


def _reason(err: Any) -> str:
    msg = str(err.get("msg", "invalid"))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field; check the spelling against docs/notifications.md"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        return f"type must be one of {', '.join(TARGET_TYPES)}"
    return msg.removeprefix("Value error, ")


def parse_config(text: str, filename: str = DEFAULT_NAME, base: Path | None = None) -> NotifyConfig:
    """Validate ``text`` as a whole; raise NotifyConfigError listing every problem with its line."""
    if len(text.encode()) > _MAX_BYTES:
        raise NotifyConfigError(filename, [(1, "", f"larger than {_MAX_BYTES} bytes; this is not a config file")])
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = (mark.line + 1) if mark else 1
        raise NotifyConfigError(filename, [(line, "", f"invalid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise NotifyConfigError(filename, [(1, "", f"invalid YAML: {exc}")]) from None
    if root is None:
        return NotifyConfig()
    doc = _Doc(root)
    problems = list(doc.problems)
    if not isinstance(doc.data, dict):
        raise NotifyConfigError(filename, [(1, "", "the file must be a mapping with a 'targets:' list")])
    data = _expand(doc, doc.data, (), problems, base or Path.cwd())
    try:
        cfg = NotifyConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc: _Path = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in TARGET_TYPES))
            if err.get("type") in ("union_tag_invalid", "union_tag_not_found"):
                loc = (*loc, "type")
            problems.append((doc.line_of(loc), _path_str(loc), _reason(err)))
        cfg = NotifyConfig()
    if problems:
        raise NotifyConfigError(filename, sorted(set(problems)))
    return cfg


def load_config(path: Path, required: bool = True) -> NotifyConfig:
    """Read ``path``; a missing file is an error when ``required`` (given with --notify-config), else empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise NotifyConfigError(str(path), [(1, "", "no such file; create it or leave out --notify-config")]) \
                from None
        return NotifyConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise NotifyConfigError(str(path), [(1, "", f"cannot read it: {exc}")]) from None
    return parse_config(text, str(path), path.parent)


def default_path(data_dir: Path) -> Path:
    return data_dir / DEFAULT_NAME


# -- the configuration in force, per database ------------------------------------------------------


@dataclass
class Active:
    config: NotifyConfig
    # Called (from any thread) after a transaction that queued messages committed.
    wake: Callable[[], None] | None = None


_active: weakref.WeakKeyDictionary[Engine, Active] = weakref.WeakKeyDictionary()
_active_lock = threading.Lock()


def activate(engine: Engine, config: NotifyConfig, wake: Callable[[], None] | None = None) -> Active:
    """Make ``config`` the targets that messages written through ``engine`` are queued for."""
    act = Active(config, wake)
    with _active_lock:
        _active[engine] = act
    return act


def deactivate(engine: Engine) -> None:
    with _active_lock:
        _active.pop(engine, None)


def active(engine: Engine) -> Active | None:
    with _active_lock:
        return _active.get(engine)


__all__ = [
    "DEFAULT_NAME", "EVENT_KINDS", "Active", "JiraTarget", "NotifyConfig", "RetryConfig", "RoundupTarget",
    "ServiceNowTarget", "SmtpTarget", "SyslogTarget", "TargetConfig", "WebhookTarget", "WorkerConfig", "activate",
    "active", "deactivate", "default_path", "load_config", "parse_config",
]
