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

The language knows no check: what a ``check:`` value may be, its ``params`` and ``expect`` models and
its default interval come in as :class:`CheckSpec` values, one per check id. The controller builds
them from its judges (``controller.judges.registry.CHECK_SPECS``), which own everything per check.

Input is bounded before it costs anything: at most :data:`MAX_BYTES`, strict UTF-8 (a bad byte is
named by its offset), nesting at most :data:`MAX_DEPTH` deep, whole numbers within +/-:data:`MAX_INT`.
"""

from __future__ import annotations

import copy
import difflib
import math
import ntpath
import posixpath
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, NamedTuple, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from common.errors import VigilError
from controller import vocabulary

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_DURATION_S",
    "MAX_INT",
    "MIN_INTERVAL_S",
    "SEVERITIES",
    "AbsolutePath",
    "BaselineDoc",
    "BaselineError",
    "CheckSpec",
    "Duration",
    "Problem",
    "Rule",
    "StrictModel",
    "WholeNumber",
    "check_absolute",
    "check_duration",
    "decode_baseline",
    "duration_s",
    "fail",
    "load_baseline",
    "too_large",
]

SEVERITIES = vocabulary.SEVERITIES
# What a rule's unknown verdict (the controller could not judge) does: ticket, or record a finding only.
ON_UNKNOWN: tuple[str, ...] = ("ticket", "record")
# A rule stored without an interval (documents are always written with one) runs this often.
_FALLBACK_INTERVAL_S = 300
# Below this an agent would spend its life collecting, and a fleet would flood the controller.
MIN_INTERVAL_S = 10
# A year: longer is a typo, and the agent's schedule holds the interval in 32 bits.
MAX_DURATION_S = 366 * 86400
# Operators of the generic `expect` form: a fact compared against a number.
OPERATORS: tuple[str, ...] = ("max", "min", "max_abs", "equals")

# The largest baseline file accepted, checked before anything is parsed. The shipped default baseline
# is about 6 KiB; a megabyte is room for thousands of rules, and no more than a parser should hold.
MAX_BYTES = 1024 * 1024
# How deep mappings and lists may nest (a real baseline needs 7 levels). Checked while composing, so
# that a hostile file cannot reach Python's recursion limit.
MAX_DEPTH = 32
# Every whole number in a baseline: parameters travel to agents as protobuf doubles, which hold whole
# numbers exactly up to 2**53, and every integer column of the database is at least 32 bits wide.
MAX_INT = 2**53
# Whole numbers stored in a 32-bit column (the baseline version).
MAX_INT32 = 2**31 - 1

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_RULE_ID_RE = re.compile(r"^[A-Z0-9][A-Z0-9_-]*$")
# Facts are looked up by plain key in the check's result (no dotted paths), so names are identifiers.
_FACT_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_DURATION_RE = re.compile(r"^\s*(\d{1,12})\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
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
        # Line 0: a problem of the file as a whole (its size), which no line of it explains.
        where = f"{self.filename}:{p.line}" if p.line else self.filename
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
        # The composer bounds how deep the file nests; aliases can still nest what they refer to.
        if len(path) >= MAX_DEPTH:
            raise _TooDeep(node.start_mark)
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
        try:
            value = self._constructor.construct_object(node, deep=True)
        except ValueError:  # an integer of more digits than Python converts
            value = None if node.tag != _TAG + "int" else MAX_INT + 1
        if isinstance(value, float) and not math.isfinite(value):
            self._problem(node, path, "must be a finite number")
            return None
        if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value <= MAX_INT:
            self._problem(node, path, f"out of range: whole numbers in a baseline lie between -{MAX_INT} and {MAX_INT}")
            return None
        return value


def _tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


class _TooDeep(Exception):
    def __init__(self, mark: yaml.Mark | None) -> None:
        self.line = mark.line + 1 if mark is not None else 1


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing to compose mappings and lists nested beyond :data:`MAX_DEPTH`.

    The composer recurses once per level, so a file of a few thousand ``[`` would otherwise end in a
    RecursionError instead of a message.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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
            interval_s=int(d.get("interval_s") or _FALLBACK_INTERVAL_S),
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


def fail(reason: str) -> PydanticCustomError:
    """A validation error whose ``reason`` is reported verbatim (no pydantic "Value error, " prefix)."""
    return PydanticCustomError("vigil", reason)


def _check_name(v: str) -> str:
    if not _NAME_RE.match(v):
        raise fail("must be lower case letters, digits, '.', '_' or '-', starting with a letter or digit")
    return v


def _check_rule_id(v: str) -> str:
    if not _RULE_ID_RE.match(v):
        raise fail("must look like NTP-CLOCK: capital letters, digits, '-' and '_'")
    return v


def _check_tag(v: str) -> str:
    if not v or any(c.isspace() or c == "," for c in v):
        raise fail("a tag must be a non-empty word without spaces or commas")
    return v


def _check_ref(v: str) -> str:
    if not v.strip():
        raise fail("must not be empty; write a control ID such as 'TPEx-CPA 3(8)4(2)'")
    return v


def duration_s(v: str, minimum: int = MIN_INTERVAL_S) -> int:
    """Seconds of a baseline duration (``30s``, ``5m``, ``1h``, ``2d``); a :func:`fail` error when it is wrong."""
    m = _DURATION_RE.match(v)
    if not m:
        raise fail(f"{v!r} is not a duration: write a number and a unit s, m, h or d (30s, 5m, 1h, 2d)")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds < minimum:
        raise fail(f"{v!r} is below the {minimum} s minimum")
    if seconds > MAX_DURATION_S:
        raise fail(f"{v!r} is above the maximum of {MAX_DURATION_S // 86400}d")
    return seconds


def check_duration(v: str) -> str:
    duration_s(v)
    return v


def _whole(v: Any) -> Any:
    # Parameters reach agents as protobuf doubles, and agents take a whole double for the integer it
    # was: `samples: 3.0` is the same value as `samples: 3` by the time it arrives.
    return int(v) if isinstance(v, float) and v.is_integer() else v


def check_absolute(v: str) -> str:
    """An absolute path in either spelling (a baseline is written once for a fleet of mixed OSes; each
    agent refuses the other platform's, as a reported check error); no NUL character."""
    if "\x00" in v:
        raise fail("must not contain a NUL character")
    if not (posixpath.isabs(v) or ntpath.isabs(v)):
        raise fail(f"{v!r} is not an absolute path; write e.g. /var/www/html")
    return v


# An absolute path (POSIX or Windows), validated.
AbsolutePath = Annotated[str, AfterValidator(check_absolute)]
# A duration as written (``5m``), validated.
Duration = Annotated[str, AfterValidator(check_duration)]
# A whole number, also when written with a zero fraction (``3.0``).
WholeNumber = Annotated[int, BeforeValidator(_whole)]


class StrictModel(BaseModel):
    """Base of every baseline model: no coercion, unknown keys refused."""

    # strict: YAML `version: "2"` or `severity: 1` are mistakes to report, not values to coerce.
    model_config = ConfigDict(strict=True, extra="forbid")


@dataclass(frozen=True)
class CheckSpec:
    """What the baseline language needs to know about one check id.

    ``params_model`` validates ``params`` (a model without fields: the check takes none);
    ``expect_model`` validates ``expect``, or None for the generic ``fact: {max|min|...: N}`` form;
    ``default_interval_s`` applies to a rule without ``interval``.
    """

    params_model: type[BaseModel]
    expect_model: type[BaseModel] | None
    default_interval_s: int


class _Scope(StrictModel):
    tags: list[Annotated[str, AfterValidator(_check_tag)]] = Field(min_length=1)


class _RuleModel(StrictModel):
    id: Annotated[str, Field(max_length=64), AfterValidator(_check_rule_id)]
    check: str
    severity: str
    interval: Duration | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    expect: dict[str, Any]
    refs: list[Annotated[str, AfterValidator(_check_ref)]] = Field(default_factory=list)
    description: str = ""
    on_unknown: str = "ticket"

    # mode="before": for a closed set of values, the useful message lists them, whatever the type given.
    @field_validator("check", mode="before")
    @classmethod
    def _known_check(cls, v: Any, info: ValidationInfo) -> Any:
        known: Collection[str] = (info.context or {}).get("checks", {})
        if not isinstance(v, str) or v not in known:
            raise fail(f"unknown check {v!r}; known checks: {', '.join(sorted(known))}")
        return v

    @field_validator("severity", "on_unknown", mode="before")
    @classmethod
    def _one_of(cls, v: Any, info: ValidationInfo) -> Any:
        allowed = SEVERITIES if info.field_name == "severity" else ON_UNKNOWN
        if not isinstance(v, str) or v not in allowed:
            raise fail(f"must be one of {', '.join(allowed)}")
        return v


class _BaselineModel(StrictModel):
    baseline: Annotated[str, Field(max_length=128), AfterValidator(_check_name)]
    version: int = Field(ge=1, le=MAX_INT32)
    scope: _Scope | None = None
    description: str = ""
    rules: list[_RuleModel] = Field(min_length=1)


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
        if not owner.model_fields:
            return "unknown key; none are allowed here"
        guess = difflib.get_close_matches(str(loc[-1]), list(owner.model_fields), n=1)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        return f"unknown key; {hint}allowed keys: {', '.join(owner.model_fields)}"
    if kind in ("too_short", "string_too_short"):
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


def _rule_problems(doc: _Doc, rules: Any, checks: Mapping[str, CheckSpec]) -> list[Problem]:
    """What the models cannot see alone: unique ids across rules, and `params`/`expect` per check."""
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
        spec = checks.get(check) if isinstance(check, str) else None
        if spec is None:
            continue  # the model reports it
        if isinstance(params, dict):
            out += _pydantic_problems(doc, spec.params_model, params, ("rules", i, "params"))
        if not isinstance(expect, dict):
            continue
        prefix: _Path = ("rules", i, "expect")
        if spec.expect_model is not None:
            out += _pydantic_problems(doc, spec.expect_model, expect, prefix)
        else:
            out += _generic_expect_problems(doc, expect, prefix)
    return out


# -- loading -----------------------------------------------------------------------------------------


def decode_baseline(data: str | bytes, filename: str) -> str:
    """The text of a baseline file, refused (:class:`BaselineError`) when too large or not UTF-8.

    Callers that read a file or a request body check :data:`MAX_BYTES` before reading it all; this
    check is the last line for whoever hands over bytes already read.
    """
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > MAX_BYTES:
        raise BaselineError(filename, [Problem(0, "", too_large(size))])
    if isinstance(data, str):
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise BaselineError(filename, [Problem(line, "", f"not UTF-8 at byte {exc.start}")]) from None
    # A byte-order mark is legal UTF-8, and some Windows editors write one.
    return text.removeprefix("\ufeff")


def too_large(size: int | None) -> str:
    """The reason given for a baseline over :data:`MAX_BYTES` (``size`` None: not known yet)."""
    what = "the file is larger" if size is None else f"the file is {size} bytes, more"
    return f"{what} than the {MAX_BYTES // 1024} KiB a baseline may hold"


def load_baseline(data: str | bytes, filename: str, checks: Mapping[str, CheckSpec]) -> BaselineDoc:
    """Parse and validate a whole baseline; raise :class:`BaselineError` listing every problem found.

    ``checks`` maps every ``check:`` value this controller can judge to what the language must know
    about it (the controller passes ``controller.judges.registry.CHECK_SPECS``).
    """
    text = decode_baseline(data, filename)
    try:
        root = yaml.compose(text, Loader=_Loader)
    except _TooDeep as exc:
        raise BaselineError(filename, [Problem(exc.line, "", f"nested more than {MAX_DEPTH} levels deep")]) from None
    except yaml.YAMLError as exc:
        raise BaselineError(filename, [_yaml_problem(exc, text)]) from None
    if root is None:
        raise BaselineError(filename, [Problem(1, "", "the file is empty; a baseline needs baseline, version, rules")])
    try:
        doc = _Doc(root)
    except _TooLarge as exc:
        line = exc.node.start_mark.line + 1
        raise BaselineError(filename, [Problem(line, "", "too many values (aliases expanding?)")]) from None
    except _TooDeep as exc:
        raise BaselineError(
            filename, [Problem(exc.line, "", f"nested more than {MAX_DEPTH} levels deep (through aliases)")]
        ) from None
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

    context = {"checks": checks}
    found = _pydantic_problems(doc, _BaselineModel, data, (), context)
    found += _rule_problems(doc, data.get("rules"), checks)
    # A value the YAML layer already refused (bad tag, NaN) would only be refused again, less clearly.
    refused = {p.field for p in doc.problems}
    problems = doc.problems + [p for p in found if not _under(p.field, refused)]
    if problems:
        unique = list(dict.fromkeys(problems))
        # Stable sort: problems on one line keep the order the models found them in.
        unique.sort(key=lambda p: p.line)
        raise BaselineError(filename, unique)

    model = _BaselineModel.model_validate(data, context=context)
    return BaselineDoc(
        name=model.baseline,
        version=model.version,
        scope_tags=None if model.scope is None else tuple(model.scope.tags),
        rules=tuple(_rule(r, checks[r.check]) for r in model.rules),
        description=model.description,
    )


def _under(path: str, roots: Collection[str]) -> bool:
    return any(path == r or path.startswith((r + ".", r + "[")) for r in roots if r)


def _rule(m: _RuleModel, spec: CheckSpec) -> Rule:
    interval = duration_s(m.interval) if m.interval is not None else spec.default_interval_s
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
