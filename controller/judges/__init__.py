"""Judges: everything the controller knows about one check, one module per check id.

Public: :data:`~controller.judges.registry.JUDGES`, :func:`~controller.judges.registry.judge_for`,
:class:`~controller.judges.base.Judge`, :class:`~controller.judges.base.Observation`,
:func:`evaluate`. Pure: no I/O, no database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.baselines import Rule
from controller.judges.base import (
    CHECK_STATUS_SUBJECT,
    JUDGEABLE,
    InvalidFacts,
    Judge,
    Observation,
    TicketView,
    cannot_judge,
)
from controller.judges.registry import JUDGES, judge_for

__all__ = [
    "CHECK_STATUS_SUBJECT",
    "JUDGES",
    "InvalidFacts",
    "Judge",
    "Observation",
    "TicketView",
    "cannot_judge",
    "evaluate",
    "judge_for",
]


def evaluate(
    rule: Rule,
    check_id: str,
    facts: Mapping[str, Any],
    status: str,
    changes: Mapping[str, str] | None = None,
    status_message: str = "",
) -> list[Observation]:
    """Judge ``facts`` reported by check ``check_id`` with status ``status`` against ``rule``.

    A status other than OK or PARTIAL yields one unknown ``check-status`` observation at once: a check
    that cannot run (it errored, timed out, or the agent refused its params) leaves the rule unjudged,
    which is itself a gap an auditor must see. PARTIAL results are judged on what they carry.
    ``changes`` maps the ids of approved changes that fim events carry to their reasons (for messages).
    """
    if check_id != rule.check:
        raise ValueError(f"rule {rule.id} judges check {rule.check!r}, not {check_id!r}")
    if status not in JUDGEABLE:
        said = f": {status_message}" if status_message else ""
        return [cannot_judge(CHECK_STATUS_SUBJECT, f"the {check_id} check reported {status}{said}, so {rule.id} "
                             "could not be evaluated", {"status": status, "check": check_id,
                                                        "status_message": status_message})]
    return judge_for(check_id).evaluate(rule, facts, changes or {})
