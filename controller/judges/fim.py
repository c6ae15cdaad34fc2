"""The ``fim`` judge: file-change events, expected (approved change, package manager) or not, and the file cap.

File changes are events, not states: a scan without events resolves nothing, and an expected change
does not undo an earlier unexpected one, so its tickets never resolve themselves; a result that ran
settles ``check-status``, and a full scan below the file cap settles ``file-cap``.
"""

from __future__ import annotations

import hashlib
import ntpath
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from common.globs import glob_to_regex
from controller.baselines import Rule, StrictModel, WholeNumber, check_absolute, fail
from controller.judges.base import (
    CHECK_STATUS_SUBJECT,
    JUDGEABLE,
    Context,
    InvalidFacts,
    Judge,
    Observation,
    TicketView,
    as_int,
    as_number,
)
from controller.vocabulary import FAIL, PASS

_FIM_KINDS = {"CREATED", "MODIFIED", "DELETED", "RENAMED", "PERMISSIONS"}
_FIM_DETECTORS = {"DETECTOR_UNSPECIFIED", "REALTIME", "VERIFY", "REHASH", "STARTUP", "OVERFLOW_RESCAN"}
_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]")


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
    number = as_number(value)
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
        watched, cap = as_int(facts.get("files_watched", 0)), as_int(facts.get("file_cap", 0))
        out.append(Observation(
            FILE_CAP_SUBJECT,
            FAIL,
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
            out.append(Observation(subject, FAIL, f"unexpected change: {described}", event))
        elif why.change_id:
            reason = changes.get(why.change_id, "")
            note = f" ({reason})" if reason else ""
            out.append(Observation(subject, PASS, f"expected: inside approved change {why.change_id}{note}: "
                                   f"{described}", {**event, "expected_source": why.source}))
        else:
            out.append(Observation(subject, PASS, f"expected: made by the {why.source}, which {rule.id} accepts: "
                                   f"{described}", {**event, "expected_source": why.source}))
    return out


def settled_subjects(facts: Mapping[str, Any], status: str) -> dict[str, str]:
    if status not in JUDGEABLE:
        return {}
    out = {CHECK_STATUS_SUBJECT: f"the fim check reported {status} again"}
    scan = str(facts.get("scan_kind", ""))
    if scan in _FULL_SCANS and not facts.get("file_cap_reached", False):
        watched = as_int(facts.get("files_watched", 0))
        out[FILE_CAP_SUBJECT] = f"a {scan} scan watched {watched} files, below the file cap"
    return out


def _absolute(path: Any) -> bool:
    return isinstance(path, str) and "\x00" not in path and (path.startswith("/") or bool(_WINDOWS_ABS.match(path)))


# -- params and expect, as validated at `baseline apply` ---------------------------------------------------
#
# The rules are the agent's (checks/fim/args.py and the glob compiler of checks/fim/globs.py), written
# again here because the controller never imports agent code; tests/test_param_contract.py feeds the
# same cases to both. Where this side is stricter, the contract says why.


def _one_or_many(v: Any) -> Any:
    # The agent takes a single string for a one-entry list.
    return [v] if isinstance(v, str) else v


def _check_watchable(v: str) -> str:
    check_absolute(v)
    flavour = posixpath if posixpath.isabs(v) else ntpath
    norm = flavour.normpath(v)
    if flavour.dirname(norm) == norm:
        raise fail(f"{v!r} is a filesystem root; name the directories to watch")
    return v


def _check_glob(v: str) -> str:
    if not v.strip():
        raise fail("must not be empty; write a glob such as *.log or cache/**")
    # What the agent compiles: the pattern without trailing slashes, and for "dir/**" also "dir".
    pattern = (v.rstrip("/") or v) if len(v) > 1 else v
    variants = [pattern] + ([pattern[:-3]] if pattern.endswith("/**") and len(pattern) > 3 else [])
    for variant in variants:
        try:
            re.compile(os.fsencode(glob_to_regex(variant)), re.DOTALL)
        except re.error as exc:
            raise fail(f"{v!r} is not a valid glob: {exc.msg}") from None
        except UnicodeEncodeError:
            raise fail(f"{v!r} is not a valid glob: it holds a character no file name can") from None
    return v


_Watchable = Annotated[str, AfterValidator(_check_watchable)]
_Glob = Annotated[str, AfterValidator(_check_glob)]
_Globs = Annotated[list[_Glob], BeforeValidator(_one_or_many)]


class FimParams(StrictModel):
    """What to watch and how hard the agent may work at it (docs/fim.md); the agent defaults the rest."""

    paths: Annotated[list[_Watchable], BeforeValidator(_one_or_many), Field(min_length=1)]
    exclude: _Globs | None = None
    nodiff: _Globs | None = None
    max_files: WholeNumber | None = Field(default=None, ge=1)
    hash_rate_mb_s: float | None = Field(default=None, ge=0)
    diff_max_kb: WholeNumber | None = Field(default=None, ge=0)
    rehash_days: float | None = Field(default=None, gt=0)
    realtime: bool | None = None
    # Beyond 10 s, gathering a burst turns into delaying its report (the agent clamps it there).
    coalesce_ms: WholeNumber | None = Field(default=None, ge=10, le=10_000)


def _check_unexpected(v: int) -> int:
    if v != 0:
        raise fail("must be 0: every unexpected change is a finding and a ticket of its own")
    return v


class FimExpect(StrictModel):
    unexpected_changes: Annotated[WholeNumber, AfterValidator(_check_unexpected)]
    # Changes made by a package manager (dpkg/rpm, as the agent tells) count as expected; off by default
    # because a deployment should still go through an approved change (TPEx-CPA 3(7)1).
    package_changes_expected: bool = False


class Fim(Judge):
    id = "fim"
    default_interval_s = 3600
    params_model = FimParams
    expect_model = FimExpect
    auto_resolve = False
    records_changes = True

    def validate(self, facts: dict[str, Any]) -> None:
        events = facts.get("events", [])
        if not isinstance(events, list):
            raise InvalidFacts("fim events must be a list")
        for i, event in enumerate(events):
            if not isinstance(event, dict):
                raise InvalidFacts(f"fim events[{i}] is not an event")
            kind = event.get("kind")
            if kind not in _FIM_KINDS:
                raise InvalidFacts(f"fim events[{i}].kind {kind!r} is not one of {', '.join(sorted(_FIM_KINDS))}")
            if not _absolute(event.get("path")):
                raise InvalidFacts(f"fim events[{i}].path {event.get('path')!r} is not an absolute path")
            if kind == "RENAMED" and not _absolute(event.get("old_path")):
                raise InvalidFacts(f"fim events[{i}] is a rename without an absolute old_path")
            if event.get("detected_by", "DETECTOR_UNSPECIFIED") not in _FIM_DETECTORS:
                raise InvalidFacts(f"fim events[{i}].detected_by {event.get('detected_by')!r} is unknown")
            # Only the controller says which change an event falls inside (changes.annotate fills it in).
            event["expected_change_id"] = ""
        for i, root in enumerate(facts.get("roots", []) or []):
            if not _absolute(root):
                raise InvalidFacts(f"fim roots[{i}] {root!r} is not an absolute path")

    def evaluate(self, rule: Rule, facts: Mapping[str, Any], changes: Mapping[str, str]) -> list[Observation]:
        return _fim(rule, facts, changes)

    def prepare(self, facts: dict[str, Any], ctx: Context) -> tuple[dict[str, Any], dict[str, str]]:
        # Before storing: the stored facts say which approved change each event fell inside.
        if not facts.get("events"):
            return facts, {}
        return facts, dict(ctx.approved_changes(facts))

    def settled(self, facts: Mapping[str, Any], status: str) -> dict[str, str]:
        return settled_subjects(facts, status)

    def hint(self, ticket: TicketView) -> str | None:
        if not ticket.subject.startswith("/"):
            return None
        return (f"rule {ticket.rule_id} in baseline {ticket.baseline}: add an exclude glob for {ticket.subject} to "
                "params.exclude, or request an approved change before the next deployment")


JUDGE = Fim()
