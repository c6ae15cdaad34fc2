"""What every judge shares: the observation type, the judge interface, and the generic fact operators.

A judge is everything the controller knows about one check: which result versions it can read, how it
re-validates the facts an agent sent, how it turns facts into observations against a rule, which
subjects a result settles without observing them, whether its tickets resolve themselves, the hint that
stops a false positive recurring, and the default interval. Judges are pure: no I/O, no database.

``facts`` is the JSON form of the check's result message (proto3 JSON: fields at their default value
are included by ingest, 64-bit integers may arrive as strings), so reads supply defaults and accept
numeric strings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from controller.baselines import CheckSpec, Rule
from controller.vocabulary import FAIL, PASS, UNKNOWN, Verdict

__all__ = [
    "CHECK_STATUS_SUBJECT",
    "JUDGEABLE",
    "Context",
    "InvalidFacts",
    "Judge",
    "Observation",
    "TicketView",
    "as_int",
    "as_number",
    "cannot_judge",
    "generic",
    "verdict",
]

# Subject of the observation that stands for "the check did not run", so a broken check gets a
# finding (and a ticket) of its own and is resolved by the next good result.
CHECK_STATUS_SUBJECT = "check-status"
JUDGEABLE = ("OK", "PARTIAL")


class InvalidFacts(ValueError):
    """An agent sent facts that do not hold up (shape or range); the report is rejected."""


@dataclass(frozen=True)
class Observation:
    """One subject (a listener, a path, a product; ``""`` for the host as a whole) and its verdict.

    ``unknown`` means the controller could not judge the subject (no data, the check errored, the
    product is not in the dataset); it is never counted as passing and tickets like a failure.
    """

    subject: str
    verdict: Verdict
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict == PASS


def verdict(ok: bool) -> Verdict:
    """pass or fail: for judges that could judge."""
    return PASS if ok else FAIL


def cannot_judge(subject: str, reason: str, evidence: dict[str, Any] | None = None) -> Observation:
    """The unknown verdict, its message starting "cannot judge: " and naming why."""
    return Observation(subject, UNKNOWN, f"cannot judge: {reason}", {**(evidence or {}), "unknown": reason})


@dataclass(frozen=True)
class Context:
    """What the controller knows besides a result, for judges that complete facts before they are stored.

    The judge stays pure: ``eol_dataset`` is data, and ``approved_changes`` is a function the domain
    supplies (it reads the approved changes) that marks each fim event with the change it fell inside
    and returns change id -> reason.
    """

    today: dt.date
    eol_dataset: Any = None
    approved_changes: Callable[[dict[str, Any]], Mapping[str, str]] = field(default=lambda facts: {})
    # The same for facts about another asset than the reporting agent (a device: ``dev:<name>``).
    approved_changes_of: Callable[[str, dict[str, Any]], Mapping[str, str]] = field(
        default=lambda asset, facts: {})
    # An enrolled agent (by id or hostname): (its id, the listening sockets it last reported, or None
    # when it never reported any); None when there is no such agent.
    listeners_of: Callable[[str], tuple[str, list[dict[str, Any]] | None] | None] = field(default=lambda ref: None)


@dataclass(frozen=True)
class TicketView:
    """What a judge may read of a ticket to suggest a baseline change."""

    rule_id: str
    baseline: str
    subject: str
    evidence: Mapping[str, Any]


class Judge:
    """The base of every judge; a judge module defines one subclass and one instance of it."""

    id: ClassVar[str]
    # The check versions whose results this judge reads (old agents stay judged while a fleet upgrades).
    versions: ClassVar[frozenset[int]] = frozenset({1})
    default_interval_s: ClassVar[int] = 300
    # False for checks whose observations are events (a file change): a later good event does not undo
    # an earlier bad one, and a result without events resolves nothing.
    auto_resolve: ClassVar[bool] = True
    # Its expected observations are kept as change records (TPEx-CPA 3(8)4(3)).
    records_changes: ClassVar[bool] = False
    # The rule's ``params`` as validated at ``baseline apply``: a strict model (unknown keys refused) that
    # refuses whatever the agent's ``Args.from_params`` refuses (tests/test_param_contract.py holds them
    # equal). Every judge sets one; a check without parameters sets a model without fields.
    params_model: ClassVar[type[BaseModel] | None] = None
    # The rule's ``expect``; None means the generic ``fact: {max|min|max_abs|equals: N}`` form.
    expect_model: ClassVar[type[BaseModel] | None] = None

    def spec(self) -> CheckSpec:
        """What the baseline language needs to know about this check."""
        if self.params_model is None:
            raise TypeError(f"judge {self.id!r} has no params_model; give it one (a model without fields for none)")
        return CheckSpec(self.params_model, self.expect_model, self.default_interval_s)

    @property
    def report_field(self) -> str:
        """The Report ``result`` oneof field this check's results arrive in: its id (one name for one thing)."""
        return self.id

    def validate(self, facts: dict[str, Any]) -> None:
        """Raise InvalidFacts when ``facts`` do not hold up; may normalise them in place."""

    def prepare(self, facts: dict[str, Any], ctx: Context) -> tuple[dict[str, Any], dict[str, str]]:
        """Complete valid facts with what only the controller knows, before they are stored and judged.

        Returns the facts to store and the reasons of the approved changes they refer to (for messages).
        """
        return facts, {}

    def asset_state(self, facts: Mapping[str, Any]) -> dict[str, int]:
        """Facts that describe the asset itself (its spool), kept on the agent's row: column -> value."""
        return {}

    def asset_of(self, facts: Mapping[str, Any]) -> str | None:
        """The asset a result is about when it is not the reporting agent (a device a sensor collected
        from: ``dev:<name>``); None for the agent itself. Its findings and tickets are filed there."""
        return None

    # What other judges may read from this check's latest result of an agent ("listeners": the
    # listening sockets an agent reports, for the sensor's comparison with what is reachable).
    provides: ClassVar[frozenset[str]] = frozenset()
    # For an inventory of the assets it files results under: the subject every result observes
    # ("seen") and the one that carries the support status ("support"), when there are such subjects.
    inventory_subjects: ClassVar[Mapping[str, str]] = {}

    def declared_assets(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The assets other than the agent that a rule's ``params`` name (a sensor's devices), each a dict
        with at least ``asset`` and ``name``: the inventory lists them before any result arrives."""
        return []

    def names_asset(self, rule: Rule, facts: Mapping[str, Any]) -> bool:
        """Whether ``rule`` names the other asset a result is about (:meth:`asset_of`): a result about an
        asset the rule does not name (a forged or stale report) is stored but judges nothing."""
        return True

    def event_subject(self, subject: str) -> bool:
        """Whether ``subject`` is an event (a configuration change) rather than a state: a result that does
        not mention it does not resolve it, and a later good result leaves its ticket to people."""
        return False

    def evaluate(self, rule: Rule, facts: Mapping[str, Any], changes: Mapping[str, str]) -> list[Observation]:
        """Judge facts of a result that ran (status OK or PARTIAL) against ``rule``."""
        return [generic(rule, facts)]

    def settled(self, facts: Mapping[str, Any], status: str) -> dict[str, str]:
        """Subjects a result vouches for without observing them, with the reason; their failures resolve."""
        return {}

    def hint(self, ticket: TicketView) -> str | None:
        """What to change in the baseline so this ticket's alert stops firing (TPEx-CPA 3(12)5)."""
        return (f"rule {ticket.rule_id} in baseline {ticket.baseline}: revise its expect thresholds if they do not "
                "fit this asset")


# -- the generic form: `fact: value` or `fact: {max|min|max_abs|equals: number}` -------------------------


def generic(rule: Rule, facts: Mapping[str, Any]) -> Observation:
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
        return Observation("", FAIL, f"{rule.id}: " + "; ".join(failures), evidence)
    return Observation("", PASS, f"{rule.id}: " + "; ".join(holds), evidence)


# operator -> (holds, text when it holds, text when it does not); texts take fact, value, bound.
_OPERATORS: dict[str, tuple[Callable[[float, float], bool], str, str]] = {
    "max": (lambda v, b: v <= b, "{f} {v} <= {b}", "{f} is {v}, more than the maximum {b}"),
    "min": (lambda v, b: v >= b, "{f} {v} >= {b}", "{f} is {v}, less than the minimum {b}"),
    "max_abs": (lambda v, b: abs(v) <= b, "{f} {v} within +/-{b}", "{f} is {v}, beyond +/-{b}"),
    "equals": (lambda v, b: v == b, "{f} is {v}", "{f} is {v}, expected {b}"),
}


def _operators(fact: str, have: Any, want: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    value = as_number(have)
    if value is None:
        return [f"{fact} is {_show(have)}, not a number"], []
    failures: list[str] = []
    holds: list[str] = []
    for op, bound in want.items():
        spec = _OPERATORS.get(op)
        if spec is None or as_number(bound) is None:
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
        number = as_number(have)
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


def as_number(v: Any) -> float | None:
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


def as_int(v: Any) -> int:
    number = as_number(v)
    return int(number) if number is not None else 0
