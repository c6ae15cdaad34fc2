"""Checks whose result is a list of things judged one by one (AV products, EOL items)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from controller.baselines import Rule
from controller.judges.base import Observation, cannot_judge, generic
from controller.vocabulary import FAIL


def per_item(rule: Rule, facts: Mapping[str, Any], list_key: str, when_empty: str,
             note: Callable[[Mapping[str, Any]], str] | None = None) -> list[Observation]:
    """One observation per item (an AV product, a package), its ``name`` as subject.

    An empty list fails as a whole: a host with no antivirus is exactly what TPEx-CPA 3(8)4(2) asks to
    find. An item the controller could not place (``known: false``: an OS or product missing from the
    EOL dataset) is unknown, never passing: there is nothing to judge it by, and that gap tickets.
    """
    items = [i for i in facts.get(list_key, []) if isinstance(i, Mapping)]
    if not items:
        return [Observation(rule.check, FAIL, f"{rule.id}: {when_empty}", {"facts": dict(facts)})]
    out = []
    for item in items:
        subject = str(item.get("name", "")) or "unnamed"
        if "known" in item and item.get("known") is False:
            why = str(item.get("lifecycle_reason", "")) or "not in the controller's dataset"
            out.append(cannot_judge(subject, f"{subject}: {why}", {"item": dict(item)}))
            continue
        judged = generic(rule, item)
        evidence = {**judged.evidence, "item": dict(item)}
        text = note(item) if note else ""
        message = judged.message.replace(f"{rule.id}: ", f"{rule.id}: {subject}: {text + '; ' if text else ''}", 1)
        out.append(Observation(subject, judged.verdict, message, evidence))
    return out
