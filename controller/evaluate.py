"""Judgement: one check result against one baseline rule, as observations that pass or fail.

Checks only collect facts; whether a fact is acceptable is decided here, from the baseline, so a new
baseline changes the verdict for the whole fleet without touching an agent. Everything in this module
is pure (no I/O, no database): the same rule and facts always give the same observations.

``facts`` is the JSON form of the check's result message (``MessageToDict`` with
``preserving_proto_field_name=True``). proto3 JSON leaves out fields at their default value and writes
64-bit integers as strings, so every read below supplies the default and accepts numeric strings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.durations import parse_duration
from controller.baselines import AllowEntry, Rule, parse_allow_entry_cached

__all__ = ["CHECK_STATUS_SUBJECT", "Observation", "allowed_silence_s", "evaluate"]

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


def evaluate(rule: Rule, check_id: str, facts: dict[str, Any], status: str) -> list[Observation]:
    """Judge ``facts`` reported by check ``check_id`` with status ``status`` against ``rule``.

    A status other than OK or PARTIAL yields one failing ``check-status`` observation: a check that
    cannot run is itself a gap an auditor must see. PARTIAL results are judged on what they carry.
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
        message = judged.message.replace(f"{rule.id}: ", f"{rule.id}: {subject}: ", 1)
        out.append(Observation(subject, judged.passed, message, evidence))
    return out


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
