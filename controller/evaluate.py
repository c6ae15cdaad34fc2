"""Judgement: one check result against one baseline rule, as observations that pass or fail.

Checks only collect facts; whether a fact is acceptable is decided here, from the baseline, so a new
baseline changes the verdict for the whole fleet without touching an agent. Everything in this module
is pure (no I/O, no database): the same rule and facts always give the same observations.

``facts`` is the JSON form of the check's result message (``MessageToDict`` with
``preserving_proto_field_name=True``). proto3 JSON leaves out fields at their default value and writes
64-bit integers as strings, so every read below supplies the default and accepts numeric strings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.durations import parse_duration
from controller.baselines import AllowEntry, Rule, parse_allow_entry_cached

__all__ = [
    "CHECK_STATUS_SUBJECT",
    "FILE_CAP_SUBJECT",
    "Expected",
    "Observation",
    "allowed_silence_s",
    "evaluate",
    "fim_expected",
    "fim_subject",
    "settled_subjects",
]

# Subject of the observation that stands for "the check did not run", so a broken check gets a
# finding (and a ticket) of its own and is resolved by the next good result.
CHECK_STATUS_SUBJECT = "check-status"
_JUDGEABLE = ("OK", "PARTIAL")


@dataclass(frozen=True)
class Observation:
    """One subject (a listener, a path, a product; ``""`` for the host as a whole) passing or failing."""

    subject: str
    passed: bool
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


def evaluate(
    rule: Rule,
    check_id: str,
    facts: dict[str, Any],
    status: str,
    changes: Mapping[str, str] | None = None,
) -> list[Observation]:
    """Judge ``facts`` reported by check ``check_id`` with status ``status`` against ``rule``.

    A status other than OK or PARTIAL yields one failing ``check-status`` observation: a check that
    cannot run is itself a gap an auditor must see. PARTIAL results are judged on what they carry.
    ``changes`` maps the ids of approved changes that fim events carry to their reasons (for messages).
    """
    if check_id != rule.check:
        raise ValueError(f"rule {rule.id} judges check {rule.check!r}, not {check_id!r}")
    if status not in _JUDGEABLE:
        return [
            Observation(
                CHECK_STATUS_SUBJECT,
                False,
                f"the {check_id} check reported {status}, so {rule.id} could not be evaluated",
                {"status": status, "check": check_id},
            )
        ]
    if check_id == "ports":
        return _ports(rule, facts)
    if check_id == "agent":
        return _agent(rule, facts)
    if check_id == "fim":
        return _fim(rule, facts, changes or {})
    if check_id in _ITEMS:
        return _per_item(rule, facts, *_ITEMS[check_id])
    return [_generic(rule, facts)]


# Checks whose result is a list of things judged one by one: (list field, message when it is empty).
_ITEMS: dict[str, tuple[str, str]] = {
    "av": ("products", "no antivirus product found on this host"),
    "eol": ("items", "no operating system or software was reported"),
}


def _per_item(rule: Rule, facts: Mapping[str, Any], list_key: str, when_empty: str) -> list[Observation]:
    """One observation per item (an AV product, a package), its ``name`` as subject.

    An empty list fails as a whole: a host with no antivirus is exactly what TPEx-CPA 3(8)4(2) asks to
    find. An item the check could not place (``known: false``, e.g. software missing from the EOL
    dataset) passes with a note, because there is nothing to judge it by.
    """
    items = [i for i in facts.get(list_key, []) if isinstance(i, Mapping)]
    if not items:
        return [Observation(rule.check, False, f"{rule.id}: {when_empty}", {"facts": dict(facts)})]
    out = []
    for item in items:
        subject = str(item.get("name", "")) or "unnamed"
        if "known" in item and item.get("known") is False:
            out.append(Observation(subject, True, f"{rule.id}: {subject} is not in the dataset; nothing to judge",
                                   {"item": dict(item)}))
            continue
        judged = _generic(rule, item)
        evidence = {**judged.evidence, "item": dict(item)}
        note = _ITEM_NOTES.get(rule.check, _no_note)(item)
        message = judged.message.replace(f"{rule.id}: ", f"{rule.id}: {subject}: {note + '; ' if note else ''}", 1)
        out.append(Observation(subject, judged.passed, message, evidence))
    return out


def _no_note(item: Mapping[str, Any]) -> str:
    return ""


def _av_note(item: Mapping[str, Any]) -> str:
    # The agent reports an installed product without databases with a huge age so that any max fails;
    # say what that number means rather than leave "1000000 hours" to the reader.
    never = not item.get("databases") and (_number(item.get("signature_age_hours", 0)) or 0) >= 1e6
    return "no signature database found (never updated)" if never else ""


_ITEM_NOTES: dict[str, Callable[[Mapping[str, Any]], str]] = {"av": _av_note}


def allowed_silence_s(rules: Iterable[Rule]) -> int | None:
    """The shortest ``max_silence`` any agent rule allows, in seconds; None when no rule sets one."""
    limits = [
        parse_duration(str(r.expect["max_silence"])) for r in rules if r.check == "agent" and "max_silence" in r.expect
    ]
    return min(limits, default=None)


# -- ports ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Listener:
    proto: str
    address: str
    port: int
    pid: int
    process: str
    exe: str
    user: str
    owner_known: bool

    @classmethod
    def from_facts(cls, d: Mapping[str, Any]) -> _Listener:
        return cls(
            proto=str(d.get("proto", "")),
            address=str(d.get("address", "")),
            port=_int(d.get("port", 0)),
            pid=_int(d.get("pid", 0)),
            process=str(d.get("process", "")),
            exe=str(d.get("exe", "")),
            user=str(d.get("user", "")),
            owner_known=bool(d.get("owner_known", False)),
        )

    @property
    def subject(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.proto}/{address}:{self.port}"

    @property
    def owner(self) -> str:
        # Without owner_known the process name is not evidence, whatever the field holds.
        return self.process if self.owner_known else ""

    def describe(self) -> str:
        if not self.owner_known:
            return f"{self.subject} (owner unknown)"
        return f"{self.subject} ({self.process or '?'}, pid {self.pid})"

    def evidence(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "address": self.address,
            "port": self.port,
            "pid": self.pid,
            "process": self.process,
            "exe": self.exe,
            "user": self.user,
            "owner_known": self.owner_known,
        }


def _ports(rule: Rule, facts: Mapping[str, Any]) -> list[Observation]:
    entries = [parse_allow_entry_cached(str(e)) for e in rule.expect.get("listening", {}).get("allow", [])]
    # One socket shared by forked workers (nginx, gunicorn) is reported once per process, but it is
    # one subject: one finding and at most one ticket per (asset, rule, subject).
    by_subject: dict[str, list[_Listener]] = {}
    for raw in facts.get("listeners", []):
        listener = _Listener.from_facts(raw)
        by_subject.setdefault(listener.subject, []).append(listener)

    out: list[Observation] = []
    for subject in sorted(by_subject):
        listeners = by_subject[subject]
        verdicts = [(lst, _allowed_by(entries, lst)) for lst in listeners]
        refused = [(lst, entry) for lst, entry in verdicts if entry is None]
        lst, entry = refused[0] if refused else verdicts[0]
        evidence = lst.evidence()
        evidence["allowed_by"] = None if entry is None else str(entry)
        if len(listeners) > 1:
            evidence["owners"] = [
                {"pid": x.pid, "process": x.process, "user": x.user, "owner_known": x.owner_known} for x in listeners
            ]
        if entry is not None:
            message = f"{lst.describe()} is allowed by {str(entry)!r}"
        else:
            message = f"{lst.describe()} is not in the allow list of {rule.id}"
            if not lst.owner_known:
                would = next(
                    (e for e in entries if e.process and e.matches(lst.proto, lst.address, lst.port, e.process)), None
                )
                if would is not None:
                    message += (
                        f"; {str(would)!r} would allow it, but the agent could not see which process listens "
                        "(it needs the rights to inspect other users' processes)"
                    )
        out.append(Observation(subject, entry is not None, message, evidence))
    return out


def _allowed_by(entries: Iterable[AllowEntry], lst: _Listener) -> AllowEntry | None:
    return next((e for e in entries if e.matches(lst.proto, lst.address, lst.port, lst.owner)), None)


# -- agent ------------------------------------------------------------------------------------------


def _agent(rule: Rule, facts: Mapping[str, Any]) -> list[Observation]:
    # max_silence is judged from missing heartbeats by the controller, not from a result: a silent
    # agent sends none. Only the spool's own count of dropped results is in the facts.
    limit_spec = rule.expect.get("dropped_records")
    if not isinstance(limit_spec, Mapping):
        return []
    limit = _int(limit_spec.get("max", 0))
    dropped = _int(facts.get("dropped_records", 0))
    evidence = {
        "dropped_records": dropped,
        "max": limit,
        "spool_depth": _int(facts.get("spool_depth", 0)),
        "spool_bytes": _int(facts.get("spool_bytes", 0)),
        "version": str(facts.get("version", "")),
    }
    passed = dropped <= limit
    if passed:
        message = f"the agent's spool dropped {dropped} result(s); {rule.id} allows at most {limit}"
    else:
        message = (
            f"the agent's spool dropped {dropped} result(s) since the agent started, more than the {limit} "
            f"{rule.id} allows: results were lost while the controller was unreachable"
        )
    return [Observation("spool", passed, message, evidence)]


# -- fim --------------------------------------------------------------------------------------------

FILE_CAP_SUBJECT = "file-cap"
_MAX_SUBJECT = 400
# Scans that walk every watched root, and so know whether the file cap was reached.
_FULL_SCANS = ("startup", "verify", "rehash")
_KIND_WORDS = {
    "CREATED": "created",
    "MODIFIED": "modified",
    "DELETED": "deleted",
    "RENAMED": "renamed",
    "PERMISSIONS": "permissions changed",
}


@dataclass(frozen=True)
class Expected:
    """Why a file change is expected: an approved change (``change_id``) or the package manager."""

    change_id: str
    source: str


def fim_expected(rule: Rule, event: Mapping[str, Any]) -> Expected | None:
    """Whether ``event`` is expected under ``rule``; None when it is not (and must be ticketed).

    The controller's annotation (``expected_change_id``) wins. Otherwise a change made by a package
    manager (``package``, filled in by the agent when it can tell) is expected only where the rule says
    ``package_changes_expected: true``: by default a deployment still needs an approved change.
    """
    change_id = str(event.get("expected_change_id", "") or "")
    if change_id:
        return Expected(change_id, f"change {change_id}")
    package = str(event.get("package", "") or "")
    if package and rule.expect.get("package_changes_expected") is True:
        return Expected("", f"package manager ({package})")
    return None


def settled_subjects(check_id: str, facts: Mapping[str, Any], status: str) -> dict[str, str]:
    """Subjects that a result vouches for without observing them, with the reason; their failures resolve.

    Only for ``fim``, whose results are judged incompletely (a scan without events says nothing about
    a change that already happened): a result that ran settles ``check-status``, and a full scan below
    the file cap settles ``file-cap``.
    """
    if check_id != "fim" or status not in _JUDGEABLE:
        return {}
    out = {CHECK_STATUS_SUBJECT: f"the fim check reported {status} again"}
    scan = str(facts.get("scan_kind", ""))
    if scan in _FULL_SCANS and not facts.get("file_cap_reached", False):
        out[FILE_CAP_SUBJECT] = f"a {scan} scan watched {_int(facts.get('files_watched', 0))} files, below the file cap"
    return out


def fim_subject(path: str) -> str:
    """The finding subject of a path: the path itself, or for a very long one a prefix and its hash.

    Subjects (and so dedupe keys) have a bounded size in the database; a hash keeps long paths apart.
    """
    if len(path) <= _MAX_SUBJECT:
        return path
    return f"{path[:_MAX_SUBJECT - 20]}…#{hashlib.sha256(path.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def _short(digest: Any) -> str:
    text = str(digest or "")
    return text[:12] + "…" if len(text) > 12 else text or "?"


def _state(event: Mapping[str, Any], which: str) -> Mapping[str, Any]:
    state = event.get(which)
    return state if isinstance(state, Mapping) else {}


def _describe_event(event: Mapping[str, Any]) -> str:
    kind = str(event.get("kind", ""))
    path = str(event.get("path", ""))
    before, after = _state(event, "before"), _state(event, "after")
    if kind == "RENAMED":
        text = f"{event.get('old_path') or '?'} renamed to {path}"
    else:
        text = f"{path} {_KIND_WORDS.get(kind, kind.lower() or 'changed')}"
    fields = [str(f) for f in event.get("changed_fields", []) or []]
    if kind == "CREATED":
        text += f" (sha256 {_short(after.get('sha256'))})"
    elif kind == "DELETED":
        text += f" (was sha256 {_short(before.get('sha256'))})"
    elif kind == "PERMISSIONS" or (fields and "sha256" not in fields):
        shown = [f for f in fields if f in ("mode", "uid", "gid", "owner", "group")] or fields
        parts = []
        for f in shown[:4]:
            old, new = before.get(f, "?"), after.get(f, "?")
            if f == "mode":
                old, new = _mode(old), _mode(new)
            parts.append(f"{f} {old} → {new}")
        if parts:
            text += f" ({', '.join(parts)})"
    elif before.get("sha256") or after.get("sha256"):
        text += f" (sha256 {_short(before.get('sha256'))} → {_short(after.get('sha256'))})"
    who = [f"process {event['process']}"] if event.get("process") else []
    if event.get("package"):
        who.append(f"package {event['package']}")
    if who:
        text += f" by {' / '.join(who)}"
    return text


def _mode(value: Any) -> str:
    number = _number(value)
    return "?" if number is None else f"{int(number) & 0o7777:04o}"


def _fim(rule: Rule, facts: Mapping[str, Any], changes: Mapping[str, str]) -> list[Observation]:
    """One observation per file-change event, its path as subject, plus the file cap.

    An event is expected (passes) when an approved change or, where the rule allows it, the package
    manager accounts for it; otherwise it fails with the event (diff included) as evidence. A first
    scan that only recorded the baseline has no events and so judges nothing. A passing event does not
    resolve an earlier unexpected change of the same path: that stays a ticket for a human.
    """
    out: list[Observation] = []
    if facts.get("file_cap_reached", False):
        watched, cap = _int(facts.get("files_watched", 0)), _int(facts.get("file_cap", 0))
        out.append(Observation(
            FILE_CAP_SUBJECT,
            False,
            f"{watched} files watched, cap of {cap} reached: files beyond it are not watched",
            {"files_watched": watched, "file_cap": cap, "roots": list(facts.get("roots", []) or []),
             "notices": list(facts.get("notices", []) or [])},
        ))
    for raw in facts.get("events", []) or []:
        if not isinstance(raw, Mapping):
            continue
        event = dict(raw)
        subject = fim_subject(str(event.get("path", "")))
        described = _describe_event(event)
        why = fim_expected(rule, event)
        if why is None:
            out.append(Observation(subject, False, f"unexpected change: {described}", event))
        elif why.change_id:
            reason = changes.get(why.change_id, "")
            note = f" ({reason})" if reason else ""
            out.append(Observation(subject, True, f"expected: inside approved change {why.change_id}{note}: "
                                   f"{described}", {**event, "expected_source": why.source}))
        else:
            out.append(Observation(subject, True, f"expected: made by the {why.source}, which {rule.id} accepts: "
                                   f"{described}", {**event, "expected_source": why.source}))
    return out


# -- every other check: `fact: value` or `fact: {max|min|max_abs|equals: number}` ---------------------------


def _generic(rule: Rule, facts: Mapping[str, Any]) -> Observation:
    failures: list[str] = []
    holds: list[str] = []
    observed: dict[str, Any] = {}
    for fact, want in rule.expect.items():
        if fact not in facts:
            failures.append(f"fact {fact} not reported")
            continue
        have = facts[fact]
        observed[fact] = have
        problems, fine = _operators(fact, have, want) if isinstance(want, Mapping) else _equals(fact, have, want)
        failures += problems
        holds += fine
    evidence = {"facts": observed, "expect": rule.expect, "failed": failures}
    if failures:
        return Observation("", False, f"{rule.id}: " + "; ".join(failures), evidence)
    return Observation("", True, f"{rule.id}: " + "; ".join(holds), evidence)


# operator -> (holds, text when it holds, text when it does not); texts take fact, value, bound.
_OPERATORS: dict[str, tuple[Callable[[float, float], bool], str, str]] = {
    "max": (lambda v, b: v <= b, "{f} {v} <= {b}", "{f} is {v}, more than the maximum {b}"),
    "min": (lambda v, b: v >= b, "{f} {v} >= {b}", "{f} is {v}, less than the minimum {b}"),
    "max_abs": (lambda v, b: abs(v) <= b, "{f} {v} within +/-{b}", "{f} is {v}, beyond +/-{b}"),
    "equals": (lambda v, b: v == b, "{f} is {v}", "{f} is {v}, expected {b}"),
}


def _operators(fact: str, have: Any, want: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    value = _number(have)
    if value is None:
        return [f"{fact} is {_show(have)}, not a number"], []
    failures: list[str] = []
    holds: list[str] = []
    for op, bound in want.items():
        spec = _OPERATORS.get(op)
        if spec is None or _number(bound) is None:
            # Validated away at load time; should a stored document still hold one, fail closed.
            failures.append(f"{fact}: cannot apply {op}: {_show(bound)}")
            continue
        test, good, bad = spec
        ok = test(value, bound)
        (holds if ok else failures).append((good if ok else bad).format(f=fact, v=_fmt(value), b=_fmt(bound)))
    return failures, holds


def _equals(fact: str, have: Any, want: Any) -> tuple[list[str], list[str]]:
    if isinstance(want, bool) or isinstance(have, bool):
        # 1 == True in Python; a boolean fact only equals a boolean expectation.
        ok = isinstance(have, bool) and isinstance(want, bool) and have == want
    elif isinstance(want, int | float):
        number = _number(have)
        ok = number is not None and number == want
    else:
        ok = have == want
    text = f"{fact} is {_show(have)}"
    return ([], [text]) if ok else ([f"{text}, expected {_show(want)}"], [])


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, str) else str(v)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _number(v: Any) -> float | None:
    """A number from a fact; proto3 JSON writes 64-bit integers as strings."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                return None
    return None


def _int(v: Any) -> int:
    number = _number(v)
    return int(number) if number is not None else 0
