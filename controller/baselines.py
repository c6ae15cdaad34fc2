"""Baselines: YAML files of rules, validated as a whole before they are applied (SPEC section 5).

A baseline is judged in one pass so an operator sees every problem at once, each with the file,
line and field it concerns, and the running baseline stays in force until a file is entirely good::

    baseline.yaml:12: rules[1].severity: must be one of critical, high, medium, low

Exception tree::

    VigilError
     └── BaselineError (ValueError)    a baseline file is wrong; ``.problems`` lists (line, field, reason)

Parsing goes through PyYAML's node composer rather than ``safe_load`` because nodes keep their
position: every value we build is paired with the line it came from, so errors raised later by the
pydantic models can still point into the file.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import math
import ntpath
import posixpath
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, NamedTuple, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic import model_validator as _model_validator
from pydantic_core import PydanticCustomError

from common.durations import parse_duration
from common.errors import UsageError, VigilError
from controller import vocabulary

__all__ = [
    "DEFAULT_INTERVALS_S",
    "KNOWN_CHECKS",
    "MIN_INTERVAL_S",
    "SEVERITIES",
    "AllowEntry",
    "BaselineDoc",
    "BaselineError",
    "Problem",
    "Rule",
    "load_baseline",
    "parse_allow_entry",
    "parse_allow_entry_cached",
]

KNOWN_CHECKS: frozenset[str] = frozenset({"ports", "fim", "av", "eol", "ntp", "agent"})
SEVERITIES = vocabulary.SEVERITIES
# What a rule's unknown verdict (the controller could not judge) does: ticket, or record a finding only.
ON_UNKNOWN: tuple[str, ...] = ("ticket", "record")
# How often a rule's check runs when the rule does not say: cheap, fast-changing state often, slow
# state (EOL dates) rarely. A check not listed here gets _FALLBACK_INTERVAL_S.
DEFAULT_INTERVALS_S: dict[str, int] = {
    "ports": 300,
    "fim": 3600,
    "av": 3600,
    "eol": 86400,
    "ntp": 300,
    "agent": 60,
}
_FALLBACK_INTERVAL_S = 300
# Below this an agent would spend its life collecting, and a fleet would flood the controller.
MIN_INTERVAL_S = 10
# Operators of the generic `expect` form: a fact compared against a number.
OPERATORS: tuple[str, ...] = ("max", "min", "max_abs", "equals")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_RULE_ID_RE = re.compile(r"^[A-Z0-9][A-Z0-9_-]*$")
# Facts are looked up by plain key in the check's result (no dotted paths), so names are identifiers.
_FACT_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
# Guards against alias bombs ("billion laughs"): no real baseline comes near this.
_MAX_NODES = 100_000

_Path = tuple[str | int, ...]


# -- errors ------------------------------------------------------------------------------------------


class Problem(NamedTuple):
    """One thing wrong with a baseline file; ``field`` is empty for problems of the file itself."""

    line: int
    field: str
    reason: str


class BaselineError(VigilError, ValueError):
    """A baseline file was rejected; ``problems`` holds every ``(line, field_path, reason)`` found."""

    def __init__(self, filename: str, problems: Iterable[tuple[int, str, str]]) -> None:
        self.filename = filename
        self.problems: list[Problem] = [Problem(*p) for p in problems]
        super().__init__("\n".join(self._format(p) for p in self.problems))

    def _format(self, p: Problem) -> str:
        where = f"{self.filename}:{p.line}"
        return f"{where}: {p.field}: {p.reason}" if p.field else f"{where}: {p.reason}"


def _path_str(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


# -- YAML with line numbers ----------------------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}


class _Doc:
    """Plain data built from a YAML node tree, plus the line of every key and list item."""

    def __init__(self, root: yaml.Node) -> None:
        self.lines: dict[_Path, int] = {(): root.start_mark.line + 1}
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._nodes = 0
        self._stack: set[int] = set()
        self.data = self._build(root, ())

    def line_of(self, path: _Path) -> int:
        """The line of ``path``, or of its nearest ancestor present in the file (for missing keys)."""
        while path not in self.lines:
            path = path[:-1]
        return self.lines[path]

    def _problem(self, node: yaml.Node, path: _Path, reason: str) -> None:
        self.problems.append(Problem(node.start_mark.line + 1, _path_str(path), reason))

    def _build(self, node: yaml.Node, path: _Path) -> Any:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise _TooLarge(node)
        if id(node) in self._stack:
            self._problem(node, path, "an alias refers to itself; write the value out")
            return None
        self._stack.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _TAG + "seq":
                    self._problem(node, path, f"unsupported YAML tag {_tag(node.tag)}; use a plain list")
                return [self._item(child, (*path, i)) for i, child in enumerate(node.value)]
            return self._scalar(node, path)
        finally:
            self._stack.discard(id(node))

    def _item(self, node: yaml.Node, path: _Path) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        return self._build(node, path)

    def _mapping(self, node: yaml.MappingNode, path: _Path) -> dict[str, Any]:
        if node.tag != _TAG + "map":
            self._problem(node, path, f"unsupported YAML tag {_tag(node.tag)}; use a plain mapping")
        # Keys written in this mapping, as opposed to those a `<<: *anchor` merge brings in: a written
        # key may override a merged one, but not another written key.
        written = {id(k) for k, _ in node.value if k.tag != _TAG + "merge"}
        # Resolves merge keys the way PyYAML's own loader does (merged pairs first, so written ones win).
        self._constructor.flatten_mapping(node)
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem(key_node, path, "a mapping key must be a plain name")
                continue
            # Keys are taken as written: YAML 1.1 would turn `on:`/`no:` into booleans and `22:` into a
            # number, which is never what a baseline author means by a key.
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if id(key_node) in written:
                if key in first_line:
                    self._problem(key_node, (*path, key), f"duplicate key (first given on line {first_line[key]})")
                else:
                    first_line[key] = line
            self.lines[(*path, key)] = line
            out[key] = self._build(value_node, (*path, key))
        return out

    def _scalar(self, node: yaml.Node, path: _Path) -> Any:
        if node.tag == _TAG + "timestamp":
            # Stored as JSON and sent to agents as protobuf Struct: keep dates as the text written.
            return str(node.value)
        if node.tag not in _SCALAR_TAGS:
            self._problem(node, path, f"unsupported YAML tag {_tag(node.tag)}; write a plain value")
            return None
        value = self._constructor.construct_object(node, deep=True)
        if isinstance(value, float) and not math.isfinite(value):
            self._problem(node, path, "must be a finite number")
            return None
        return value


def _tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    if isinstance(exc, yaml.composer.ComposerError) and exc.problem == "but found another document":
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 1
        return Problem(line, "", "invalid YAML: a baseline file holds one document; remove this '---' and what follows")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = f"invalid YAML: {exc.problem or exc.context}"
        if exc.context and exc.problem and exc.context_mark is not None:
            reason += f" ({exc.context} on line {exc.context_mark.line + 1})"
        return Problem(line, "", reason)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return Problem(line, "", f"invalid YAML: unacceptable character #x{exc.character:04x}")
    return Problem(1, "", f"invalid YAML: {exc}")


# -- allow entries of the ports check -----------------------------------------------------------------

_ALLOW_RE = re.compile(
    r"^(?P<proto>[^/\s]+)/(?:(?P<address>\[[^\]]*\]|[^\s\[\]]*?):)?(?P<port>[^\s:\[\]]+)(?:\s+(?P<process>\S.*))?$"
)


@dataclass(frozen=True)
class AllowEntry:
    """One ``allow`` entry of a ports rule: ``tcp/22 sshd``, ``tcp/127.0.0.1:8080``, ``udp/[::1]:53``."""

    proto: str
    address: str | None
    port: int
    process: str | None

    def matches(self, proto: str, address: str, port: int, process: str) -> bool:
        """Whether a listener is allowed by this entry.

        ``tcp`` covers ``tcp6`` because one service commonly binds both families. An address in the
        entry means exactly that bind: ``0.0.0.0`` allows only the wildcard bind, not every address.
        ``process`` is ``""`` when the agent could not see the owner, and then it matches no entry that
        names a process: an unverified owner proves nothing to an auditor.
        """
        if proto not in (self.proto, self.proto + "6") or port != self.port:
            return False
        if self.address is not None and self.address != "*" and not _same_address(self.address, address):
            return False
        return self.process is None or self.process == process

    def __str__(self) -> str:
        where = ""
        if self.address is not None:
            where = f"[{self.address}]:" if ":" in self.address else f"{self.address}:"
        text = f"{self.proto}/{where}{self.port}"
        return f"{text} {self.process}" if self.process else text


def _same_address(a: str, b: str) -> bool:
    """Equal addresses, counting an IPv4-mapped IPv6 bind (``::ffff:127.0.0.1``) as its IPv4 address."""
    try:
        return _unmapped(ipaddress.ip_address(a)) == _unmapped(ipaddress.ip_address(b))
    except ValueError:
        return a == b


def _unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_allow_entry(text: str) -> AllowEntry:
    """Parse ``PROTO/PORT`` or ``PROTO/ADDRESS:PORT``, optionally followed by a space and a process name.

    Raises ValueError with the reason (for the baseline error message) when ``text`` is malformed.
    """
    m = _ALLOW_RE.match(text.strip())
    if not m:
        raise ValueError("write PROTO/PORT or PROTO/ADDRESS:PORT, then optionally a process name (tcp/22 sshd)")
    proto, address, port_text, process = m.group("proto", "address", "port", "process")
    if proto not in ("tcp", "udp"):
        raise ValueError(f"protocol must be tcp or udp, not {proto!r} (tcp also covers tcp6)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535, not {port_text!r}")
    if address is not None:
        if address.startswith("["):
            address = address[1:-1]
            if not _is_ip(address, version=6):
                raise ValueError(f"{address!r} in brackets must be an IPv6 address")
        elif address != "*" and not _is_ip(address, version=4):
            if ":" in address:
                raise ValueError("put an IPv6 address in brackets: tcp/[::1]:5432")
            raise ValueError(f"address must be an IP address or *, not {address!r}")
    return AllowEntry(proto, address, int(port_text), process.strip() if process else None)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


# Evaluation parses the same few entries for every ports report; they are immutable, so share them.
parse_allow_entry_cached = lru_cache(maxsize=4096)(parse_allow_entry)


# -- the result --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    id: str
    check: str
    severity: str
    interval_s: int
    params: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)
    refs: tuple[str, ...] = ()
    description: str = ""
    # What a verdict of unknown does: "ticket" (at the rule's severity) or "record" (a finding only).
    on_unknown: str = "ticket"

    def to_document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "check": self.check,
            "severity": self.severity,
            "interval_s": self.interval_s,
            "params": copy.deepcopy(self.params),
            "expect": copy.deepcopy(self.expect),
            "refs": list(self.refs),
            "description": self.description,
            "on_unknown": self.on_unknown,
        }

    @classmethod
    def from_document(cls, d: Mapping[str, Any]) -> Rule:
        check = str(d["check"])
        return cls(
            id=str(d["id"]),
            check=check,
            severity=str(d["severity"]),
            interval_s=int(d.get("interval_s") or DEFAULT_INTERVALS_S.get(check, _FALLBACK_INTERVAL_S)),
            params=copy.deepcopy(dict(d.get("params") or {})),
            expect=copy.deepcopy(dict(d.get("expect") or {})),
            refs=tuple(str(r) for r in d.get("refs") or ()),
            description=str(d.get("description") or ""),
            on_unknown=str(d.get("on_unknown") or "ticket"),
        )


@dataclass(frozen=True)
class BaselineDoc:
    name: str
    version: int
    scope_tags: tuple[str, ...] | None
    rules: tuple[Rule, ...]
    description: str = ""

    def applies_to(self, tags: Iterable[str]) -> bool:
        """A baseline without scope applies to every asset; otherwise to assets sharing one of its tags."""
        if self.scope_tags is None:
            return True
        return not set(self.scope_tags).isdisjoint(tags)

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def to_document(self) -> dict[str, Any]:
        """Plain JSON-ready form, as stored in the database; :meth:`from_document` reverses it."""
        return {
            "baseline": self.name,
            "version": self.version,
            "scope": None if self.scope_tags is None else {"tags": list(self.scope_tags)},
            "description": self.description,
            "rules": [r.to_document() for r in self.rules],
        }

    @classmethod
    def from_document(cls, d: Mapping[str, Any]) -> BaselineDoc:
        # Documents were validated when applied; this only rebuilds them, tolerating keys added later.
        scope = d.get("scope")
        return cls(
            name=str(d["baseline"]),
            version=int(d["version"]),
            scope_tags=None if scope is None else tuple(str(t) for t in scope.get("tags") or ()),
            rules=tuple(Rule.from_document(r) for r in d["rules"]),
            description=str(d.get("description") or ""),
        )


# -- validation models ---------------------------------------------------------------------------------


def _fail(reason: str) -> PydanticCustomError:
    # Our own error type carries the reason verbatim, without pydantic's "Value error, " prefix.
    return PydanticCustomError("vigil", reason)


def _check_name(v: str) -> str:
    if not _NAME_RE.match(v):
        raise _fail("must be lower case letters, digits, '.', '_' or '-', starting with a letter or digit")
    return v


def _check_rule_id(v: str) -> str:
    if not _RULE_ID_RE.match(v):
        raise _fail("must look like NTP-CLOCK: capital letters, digits, '-' and '_'")
    return v


def _check_tag(v: str) -> str:
    if not v or any(c.isspace() or c == "," for c in v):
        raise _fail("a tag must be a non-empty word without spaces or commas")
    return v


def _check_ref(v: str) -> str:
    if not v.strip():
        raise _fail("must not be empty; write a control ID such as 'TPEx-CPA 3(8)4(2)'")
    return v


def _duration(v: str, minimum: int = MIN_INTERVAL_S) -> int:
    try:
        seconds = parse_duration(v)
    except UsageError:
        raise _fail(f"{v!r} is not a duration: write a number and a unit s, m, h or d (30s, 5m, 1h, 2d)") from None
    if seconds < minimum:
        raise _fail(f"must be at least {minimum}s")
    return seconds


def _check_duration(v: str) -> str:
    _duration(v)
    return v


def _check_allow(v: str) -> str:
    try:
        parse_allow_entry(v)
    except ValueError as exc:
        raise _fail(f"{v!r} is not a valid allow entry: {exc}") from None
    return v


class _Strict(BaseModel):
    # strict: YAML `version: "2"` or `severity: 1` are mistakes to report, not values to coerce.
    model_config = ConfigDict(strict=True, extra="forbid")


class _Scope(_Strict):
    tags: list[Annotated[str, AfterValidator(_check_tag)]] = Field(min_length=1)


class _RuleModel(_Strict):
    id: Annotated[str, Field(max_length=64), AfterValidator(_check_rule_id)]
    check: str
    severity: str
    interval: Annotated[str, AfterValidator(_check_duration)] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    expect: dict[str, Any]
    refs: list[Annotated[str, AfterValidator(_check_ref)]] = Field(default_factory=list)
    description: str = ""
    on_unknown: str = "ticket"

    # mode="before": for a closed set of values, the useful message lists them, whatever the type given.
    @field_validator("check", mode="before")
    @classmethod
    def _known_check(cls, v: Any, info: ValidationInfo) -> Any:
        known: Collection[str] = (info.context or {}).get("known_checks", KNOWN_CHECKS)
        if not isinstance(v, str) or v not in known:
            raise _fail(f"unknown check {v!r}; known checks: {', '.join(sorted(known))}")
        return v

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, v: Any) -> Any:
        if not isinstance(v, str) or v not in SEVERITIES:
            raise _fail(f"must be one of {', '.join(SEVERITIES)}")
        return v

    @field_validator("on_unknown", mode="before")
    @classmethod
    def _on_unknown(cls, v: Any) -> Any:
        if not isinstance(v, str) or v not in ON_UNKNOWN:
            raise _fail(f"must be one of {', '.join(ON_UNKNOWN)}")
        return v


class _BaselineModel(_Strict):
    baseline: Annotated[str, Field(max_length=128), AfterValidator(_check_name)]
    version: int = Field(ge=1)
    scope: _Scope | None = None
    description: str = ""
    rules: list[_RuleModel] = Field(min_length=1)


class _Listening(_Strict):
    allow: list[Annotated[str, AfterValidator(_check_allow)]]


class _PortsExpect(_Strict):
    listening: _Listening


class _AtMost(_Strict):
    max: int = Field(ge=0)


class _AgentExpect(_Strict):
    max_silence: Annotated[str, AfterValidator(_check_duration)] | None = None
    dropped_records: _AtMost | None = None

    @_model_validator(mode="after")
    def _something(self) -> _AgentExpect:
        if self.max_silence is None and self.dropped_records is None:
            raise _fail("give max_silence, dropped_records: {max: N}, or both")
        return self


def _check_absolute(v: str) -> str:
    windows = re.match(r"^[A-Za-z]:[\\/]", v) is not None
    if not (v.startswith("/") or windows):
        raise _fail(f"{v!r} is not an absolute path; write e.g. /var/www/html")
    if "\x00" in v:
        raise _fail("must not contain a NUL character")
    flavour = ntpath if windows else posixpath
    norm = flavour.normpath(v)
    if flavour.dirname(norm) == norm:
        raise _fail(f"{v!r} is a filesystem root; name the directories to watch")
    return v


def _check_glob(v: str) -> str:
    if not v.strip():
        raise _fail("must not be empty; write a glob such as *.log or cache/**")
    return v


def _check_unexpected(v: int) -> int:
    if v != 0:
        raise _fail("must be 0: every unexpected change is a finding and a ticket of its own")
    return v


class _FimExpect(_Strict):
    unexpected_changes: Annotated[int, AfterValidator(_check_unexpected)]
    # Changes made by a package manager (dpkg/rpm, as the agent tells) count as expected; off by default
    # because a deployment should still go through an approved change (TPEx-CPA 3(7)1).
    package_changes_expected: bool = False


class _FimParams(_Strict):
    # Only validated here; the agent applies its own defaults to what is left out (docs/fim.md).
    paths: list[Annotated[str, AfterValidator(_check_absolute)]] = Field(min_length=1)
    exclude: list[Annotated[str, AfterValidator(_check_glob)]] | None = None
    nodiff: list[Annotated[str, AfterValidator(_check_glob)]] | None = None
    max_files: int | None = Field(default=None, ge=1)
    hash_rate_mb_s: float | None = Field(default=None, ge=0)
    diff_max_kb: int | None = Field(default=None, ge=0)
    rehash_days: float | None = Field(default=None, gt=0)
    realtime: bool | None = None
    # Beyond 10 s, gathering a burst turns into delaying its report (the agent clamps it there).
    coalesce_ms: int | None = Field(default=None, ge=10, le=10_000)


# Checks whose `expect` has a shape of its own; every other check uses the generic fact form.
_EXPECT_MODELS: dict[str, type[_Strict]] = {"ports": _PortsExpect, "agent": _AgentExpect, "fim": _FimExpect}
# Checks whose `params` are validated here (they reach the agents as they are).
_PARAMS_MODELS: dict[str, type[_Strict]] = {"fim": _FimParams}

_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "bool_type": "must be true or false",
    "float_type": "must be a number",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}


def _model_at(model: type[BaseModel], loc: _Path) -> type[BaseModel] | None:
    """The model that validates the mapping at ``loc`` (to list the keys it allows)."""
    current: type[BaseModel] = model
    for part in loc:
        if isinstance(part, int):
            continue
        info = current.model_fields.get(part)
        if info is None:
            return None
        found = _model_in(info.annotation)
        if found is None:
            return None
        current = found
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None:  # list[...], X | None, Annotated[...]
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _reason(err: Mapping[str, Any], model: type[BaseModel], loc: _Path) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        if owner is None:
            return "unknown key"
        guess = difflib.get_close_matches(str(loc[-1]), list(owner.model_fields), n=1)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        return f"unknown key; {hint}allowed keys: {', '.join(owner.model_fields)}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "greater_than_equal":
        return f"must be at least {_bound(ctx.get('ge'))}"
    if kind == "greater_than":
        return f"must be more than {_bound(ctx.get('gt'))}"
    if kind == "less_than_equal":
        return f"must be at most {_bound(ctx.get('le'))}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    msg = str(err["msg"])
    return msg[:1].lower() + msg[1:]


def _bound(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _pydantic_problems(
    doc: _Doc, model: type[BaseModel], data: Any, prefix: _Path, context: dict[str, Any] | None = None
) -> list[Problem]:
    try:
        model.model_validate(data, context=context)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            loc: _Path = tuple(err["loc"])
            path = (*prefix, *loc)
            out.append(Problem(doc.line_of(path), _path_str(path), _reason(err, model, loc)))
        return out
    return []


def _generic_expect_problems(doc: _Doc, expect: dict[str, Any], prefix: _Path) -> list[Problem]:
    """Checks whose expectations are ``fact: value`` or ``fact: {max|min|max_abs|equals: number}``."""
    out: list[Problem] = []

    def add(path: _Path, reason: str) -> None:
        out.append(Problem(doc.line_of(path), _path_str(path), reason))

    if not expect:
        add(prefix, "must state at least one expectation")
    for fact, want in expect.items():
        path = (*prefix, fact)
        if not _FACT_RE.match(fact):
            add(path, "a fact name is lower_snake_case, without dots")
        if want is None or isinstance(want, list):
            add(path, f"write a value to compare with, or a mapping of {', '.join(OPERATORS)}")
        elif isinstance(want, dict):
            if not want:
                add(path, f"give at least one of {', '.join(OPERATORS)}")
            for op, bound in want.items():
                if op not in OPERATORS:
                    add((*path, op), f"unknown operator; use {', '.join(OPERATORS)}")
                elif _number(bound) is None:
                    add((*path, op), "must be a number")
                elif op == "max_abs" and bound < 0:
                    add((*path, op), "must be at least 0")
            low, high = _number(want.get("min")), _number(want.get("max"))
            if low is not None and high is not None and low > high:
                add((*path, "min"), f"min {low} is greater than max {high}")
    return out


def _number(v: Any) -> float | None:
    # bool is an int to Python, but `max: true` is a mistake, not 1.
    return None if isinstance(v, bool) or not isinstance(v, int | float) else v


def _rule_problems(doc: _Doc, rules: Any, known_checks: Collection[str]) -> list[Problem]:
    """What the models cannot see alone: unique ids across rules, and `expect` per check."""
    out: list[Problem] = []
    if not isinstance(rules, list):
        return out
    first: dict[str, int] = {}
    for i, raw in enumerate(rules):
        if not isinstance(raw, dict):
            continue
        rule_id = raw.get("id")
        if isinstance(rule_id, str):
            if rule_id in first:
                path: _Path = ("rules", i, "id")
                out.append(
                    Problem(
                        doc.line_of(path),
                        _path_str(path),
                        f"duplicate rule id {rule_id!r} "
                        f"(also rules[{first[rule_id]}]); ids are unique within a baseline",
                    )
                )
            else:
                first[rule_id] = i
        check, expect, params = raw.get("check"), raw.get("expect"), raw.get("params", {})
        if isinstance(check, str) and check in _PARAMS_MODELS and isinstance(params, dict):
            out += _pydantic_problems(doc, _PARAMS_MODELS[check], params, ("rules", i, "params"))
        if not isinstance(check, str) or check not in known_checks or not isinstance(expect, dict):
            continue  # the model reports those
        prefix: _Path = ("rules", i, "expect")
        model = _EXPECT_MODELS.get(check)
        if model is not None:
            out += _pydantic_problems(doc, model, expect, prefix)
        else:
            out += _generic_expect_problems(doc, expect, prefix)
    return out


# -- loading -----------------------------------------------------------------------------------------


def load_baseline(text: str, filename: str = "<baseline>", known_checks: Collection[str] = KNOWN_CHECKS) -> BaselineDoc:
    """Parse and validate a whole baseline; raise :class:`BaselineError` listing every problem found.

    ``known_checks`` is the set of ``check:`` values this controller can judge.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise BaselineError(filename, [_yaml_problem(exc, text)]) from None
    if root is None:
        raise BaselineError(filename, [Problem(1, "", "the file is empty; a baseline needs baseline, version, rules")])
    try:
        doc = _Doc(root)
    except _TooLarge as exc:
        line = exc.node.start_mark.line + 1
        raise BaselineError(filename, [Problem(line, "", "too many values (aliases expanding?)")]) from None
    except yaml.YAMLError as exc:
        raise BaselineError(filename, [_yaml_problem(exc, text)]) from None
    data = doc.data
    if not isinstance(data, dict):
        raise BaselineError(
            filename,
            [
                Problem(
                    doc.line_of(()),
                    "",
                    "a baseline is a mapping with keys baseline, version, rules (and optionally scope, description)",
                )
            ],
        )

    found = _pydantic_problems(doc, _BaselineModel, data, (), {"known_checks": known_checks})
    found += _rule_problems(doc, data.get("rules"), known_checks)
    # A value the YAML layer already refused (bad tag, NaN) would only be refused again, less clearly.
    refused = {p.field for p in doc.problems}
    problems = doc.problems + [p for p in found if not _under(p.field, refused)]
    if problems:
        unique = list(dict.fromkeys(problems))
        # Stable sort: problems on one line keep the order the models found them in.
        unique.sort(key=lambda p: p.line)
        raise BaselineError(filename, unique)

    model = _BaselineModel.model_validate(data, context={"known_checks": known_checks})
    return BaselineDoc(
        name=model.baseline,
        version=model.version,
        scope_tags=None if model.scope is None else tuple(model.scope.tags),
        rules=tuple(_rule(r) for r in model.rules),
        description=model.description,
    )


def _under(path: str, roots: Collection[str]) -> bool:
    return any(path == r or path.startswith((r + ".", r + "[")) for r in roots if r)


def _rule(m: _RuleModel) -> Rule:
    interval = (
        _duration(m.interval) if m.interval is not None else DEFAULT_INTERVALS_S.get(m.check, _FALLBACK_INTERVAL_S)
    )
    return Rule(
        id=m.id,
        check=m.check,
        severity=m.severity,
        interval_s=interval,
        params=m.params,
        expect=m.expect,
        refs=tuple(m.refs),
        description=m.description,
        on_unknown=m.on_unknown,
    )
