"""The controller's shared words: severities, verdicts, finding and ticket statuses, ticket transitions.

Every layer imports these from here (the baseline language, judges, domain, notify, transports), so a
status or severity is defined once. Pure: no imports beyond the standard library.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "ACTIVE_STATUSES",
    "CLOSED_STATUSES",
    "FAIL",
    "PASS",
    "REPORTED_SEVERITIES",
    "RESOLVED_STATUSES",
    "SEVERITIES",
    "SEVERITY_RANK",
    "TICKET_STATUSES",
    "TRANSITIONS",
    "UNKNOWN",
    "VERDICTS",
    "Severity",
    "Verdict",
]

# Most severe first.
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
Severity = Literal["critical", "high", "medium", "low"]
# Tickets of these severities need staged incident reports (TPEx-CPA 3(12)2).
REPORTED_SEVERITIES: tuple[str, ...] = ("critical", "high")

# A verdict is what the controller concluded about one subject of one rule. "unknown" means it could
# not judge (no data, the check errored, the product is not in the dataset): never counted as passing.
Verdict = Literal["pass", "fail", "unknown"]
PASS: Final = "pass"
FAIL: Final = "fail"
UNKNOWN: Final = "unknown"
VERDICTS: tuple[Verdict, ...] = (PASS, FAIL, UNKNOWN)

# Ticket statuses by what they mean: being worked or waiting for work (a new failure adds to the
# ticket), resolved (a new failure reopens it), closed.
ACTIVE_STATUSES: tuple[str, ...] = ("open", "acknowledged", "in_progress")
RESOLVED_STATUSES: tuple[str, ...] = ("resolved", "false_positive")
CLOSED_STATUSES: tuple[str, ...] = ("closed",)
TICKET_STATUSES: tuple[str, ...] = ACTIVE_STATUSES + RESOLVED_STATUSES + CLOSED_STATUSES

# Which status a ticket may move to from each status, by hand (ingest moves them too: reopen, auto-resolve).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("acknowledged", "in_progress", "resolved", "false_positive"),
    "acknowledged": ("in_progress", "resolved", "false_positive"),
    "in_progress": ("resolved", "false_positive", "acknowledged"),
    "resolved": ("closed", "open"),
    "closed": ("open",),
    "false_positive": ("open", "closed"),
}
