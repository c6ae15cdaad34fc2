"""Enrichment: every item of an ``eol`` result mapped onto a dataset as of a day (fields 9-18).

Pure: a function of the facts, the dataset and the day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

from controller.eoldata.dataset import Cycle, Dataset, Match

# days_to_eol / days_to_end_of_support when no end date is set and the cycle has not ended.
NO_DATE_DAYS: Final = 36500
ROLLING_REASON: Final = "no end of life applies (rolling release)"
ROLLING_CYCLE: Final = "rolling"

_KINDS = {"os", "package", "runtime"}
_LIFECYCLES = {"os", "upstream", ""}
_MAX_LIKE = 16


def _judge(c: Cycle, today: dt.date) -> dict[str, Any]:
    eol_date = c.eol if isinstance(c.eol, dt.date) else None
    eol = c.ended(today)
    ext = c.extended_support
    ext_date = ext if isinstance(ext, dt.date) else None
    ext_running = (today < ext_date) if ext_date else (ext is False)
    in_ext = eol and ext_running
    # Ended on an unknown date counts as 0 days left; no date and not ended as NO_DATE_DAYS.
    days_to_eol = (eol_date - today).days if eol_date else (0 if eol else NO_DATE_DAYS)
    if ext_date:
        days_to_end = (ext_date - today).days
    elif ext is False:  # extended support with no end date set
        days_to_end = NO_DATE_DAYS
    else:
        days_to_end = days_to_eol
    return {
        "cycle": c.cycle,
        "release_date": c.release_date.isoformat() if c.release_date else "",
        "eol_date": eol_date.isoformat() if eol_date else "",
        "extended_support_date": ext_date.isoformat() if ext_date else "",
        "eol": eol,
        "days_to_eol": _int32(days_to_eol),
        "in_extended_support": in_ext,
        "supported": (not eol) or in_ext,
        "days_to_end_of_support": _int32(days_to_end),
        "lts": c.lts,
        "known": True,
    }


def _rolling() -> dict[str, Any]:
    return {"cycle": ROLLING_CYCLE, "release_date": "", "eol_date": "", "extended_support_date": "", "eol": False,
            "days_to_eol": NO_DATE_DAYS, "in_extended_support": False, "supported": True,
            "days_to_end_of_support": NO_DATE_DAYS, "lts": False, "known": True}


def _unknown() -> dict[str, Any]:
    return {"cycle": "", "release_date": "", "eol_date": "", "extended_support_date": "", "eol": False,
            "days_to_eol": 0, "in_extended_support": False, "supported": False, "days_to_end_of_support": 0,
            "lts": False, "known": False}


def _int32(n: int) -> int:
    return max(-(2**31), min(2**31 - 1, n))


def _describe(c: Cycle) -> str:
    if isinstance(c.eol, dt.date):
        return f"{c.label()} ends {c.eol.isoformat()}"
    return f"{c.label()} {'has ended' if c.eol else 'has no end date'}"


def _append_reason(item: dict[str, Any], text: str) -> None:
    if not text:
        return
    prev = str(item.get("lifecycle_reason") or "").strip()
    item["lifecycle_reason"] = f"{prev}; {text}" if prev else text


def _likes(item: Mapping[str, Any]) -> list[str]:
    raw = item.get("product_like", [])
    return [str(p) for p in raw if isinstance(p, str) and p] if isinstance(raw, list) else []


class _Os:
    """How the OS item was placed: the product judged, whether through ID_LIKE, and its match."""

    def __init__(self, item: Mapping[str, Any], dataset: Dataset, today: dt.date) -> None:
        self.product = str(item.get("product", ""))
        self.version = str(item.get("version", ""))
        self.through_like = False
        self.tried = [self.product] if self.product else []
        if not dataset.knows(self.product):
            for like in _likes(item):
                self.tried.append(like)
                if dataset.knows(like):
                    self.product, self.through_like = like, True
                    break
        self.rolling = self.product in dataset.rolling
        if self.rolling:
            self.match = Match(None)
        elif dataset.knows(self.product):
            self.match = dataset.match(self.product, self.version, today)
        else:
            names = ", ".join(self.tried) or "no product"
            self.match = Match(None, f"the OS ({names}) is not in the EOL dataset" if len(self.tried) > 1 else
                                     f"{names} is not in the EOL dataset")

    @property
    def judged_as(self) -> str:
        what = self.product if self.rolling else f"{self.product} {self.version}".strip()
        return f"judged as {what} through ID_LIKE" if self.through_like else ""


def enrich(facts: Mapping[str, Any], dataset: Dataset, today: dt.date) -> dict[str, Any]:
    """Fill EolItem fields 9-18 of every item from ``dataset`` as of ``today``; returns a new dict.

    Whatever the agent sent in those fields is overwritten: the controller judges with its own data.
    The OS item is looked up by ``product``, and when the dataset does not have that product, by each
    ``product_like`` (os-release ID_LIKE) in order, the first the dataset has winning. A rolling release
    is known and supported with :data:`ROLLING_REASON`. An item with lifecycle ``os`` (the OS vendor
    patches it, e.g. Debian's openssl) takes the OS item's cycle and keeps its own product and version.
    Anything the dataset cannot place is ``known: false`` with ``lifecycle_reason`` naming what was
    missing. Every item gets ``dataset``: which dataset judged it.
    """
    out = dict(facts)
    items = [dict(i) for i in facts.get("items", []) if isinstance(i, Mapping)]
    os_item = next((i for i in items if i.get("kind") == "os"), None)
    placed = _Os(os_item, dataset, today) if os_item is not None else None
    for item in items:
        item["dataset"] = dataset.label
        if item is os_item and placed is not None:
            _enrich_os(item, placed, today)
        elif item.get("lifecycle") == "os":
            _enrich_by_os(item, placed, dataset, today)
        else:
            _enrich_own(item, dataset.match(str(item.get("product", "")), str(item.get("version", "")), today),
                        today)
        if item.get("known") is False:  # the judge reports these by their reason alone: name the dataset there
            _append_reason(item, f"dataset: {dataset.label}")
    out["items"] = items
    sent = str(facts.get("dataset_version", "") or "")
    if sent and sent != dataset.version:
        out["agent_dataset_version"] = sent
    out["dataset_version"] = dataset.version
    return out


def _enrich_os(item: dict[str, Any], placed: _Os, today: dt.date) -> None:
    if placed.judged_as:
        item["judged_as"] = placed.judged_as
    if placed.rolling:
        item.update(_rolling())
        _append_reason(item, placed.judged_as)
        _append_reason(item, ROLLING_REASON)
        return
    _enrich_own(item, placed.match, today)
    if placed.judged_as:
        _append_reason(item, placed.judged_as)


def _enrich_by_os(item: dict[str, Any], placed: _Os | None, dataset: Dataset, today: dt.date) -> None:
    if placed is None:
        item.update(_unknown())
        _append_reason(item, "the OS lifecycle applies, but no OS item was reported")
        return
    if placed.rolling:
        item.update(_rolling())
        _append_reason(item, f"judged by {placed.product}'s lifecycle: {ROLLING_REASON}")
        return
    os_cycle = placed.match.cycle
    if os_cycle is None:
        item.update(_unknown())
        _append_reason(item, f"the OS lifecycle applies, but the OS cannot be judged: {placed.match.reason}")
        return
    item.update(_judge(os_cycle, today))
    item["cycle"] = os_cycle.label()
    own = dataset.cycle_for(str(item.get("product", "")), str(item.get("version", "")))
    upstream = f" (upstream: {_describe(own)})" if own is not None else ""
    _append_reason(item, f"judged by {os_cycle.label()}'s lifecycle{upstream}")


def _enrich_own(item: dict[str, Any], found: Match, today: dt.date) -> None:
    own = found.cycle
    if own is None:
        item.update(_unknown())
        _append_reason(item, found.reason or "not in the EOL dataset")
        return
    item.update(_judge(own, today))
    if found.reason:
        _append_reason(item, found.reason)
    commercial = own.commercial_support
    if item["eol"] and not item["in_extended_support"] and commercial is not None and commercial is not True:
        if commercial is False:
            _append_reason(item, "paid extended support exists (no end date set); not counted as supported")
        elif today < commercial:
            _append_reason(item, f"paid extended support exists until {commercial.isoformat()}; "
                                 "not counted as supported")


def validate_facts(facts: Mapping[str, Any]) -> list[str]:
    """Shape problems of an ``eol`` result as the agent sent it (the controller re-validates input).

    Keys the controller adds when enriching (``dataset``, ``judged_as``) are accepted, so stored,
    enriched facts validate too.
    """
    problems: list[str] = []
    items = facts.get("items", [])
    if not isinstance(items, list):
        return ["items must be a list"]
    if len(items) > 20000:
        problems.append(f"items: {len(items)} items is more than the 20000 allowed")
    for i, item in enumerate(items[:20000]):
        if not isinstance(item, Mapping):
            problems.append(f"items[{i}] must be an object")
            continue
        if item.get("kind") not in _KINDS:
            problems.append(f"items[{i}].kind {item.get('kind')!r} is not one of {sorted(_KINDS)}")
        if item.get("lifecycle", "") not in _LIFECYCLES:
            problems.append(f"items[{i}].lifecycle {item.get('lifecycle')!r} is not 'os' or 'upstream'")
        for key, limit in (("name", 512), ("product", 128), ("version", 256), ("source", 1024),
                           ("lifecycle_reason", 2048), ("dataset", 256), ("judged_as", 512)):
            value = item.get(key, "")
            if not isinstance(value, str):
                problems.append(f"items[{i}].{key} must be a string")
            elif len(value) > limit:
                problems.append(f"items[{i}].{key} is longer than {limit} characters")
        likes = item.get("product_like", [])
        if not isinstance(likes, list) or not all(isinstance(p, str) and len(p) <= 128 for p in likes):
            problems.append(f"items[{i}].product_like must be a list of product ids of at most 128 characters")
        elif len(likes) > _MAX_LIKE:
            problems.append(f"items[{i}].product_like lists {len(likes)} products, more than the {_MAX_LIKE} allowed")
        if not str(item.get("name", "")).strip():
            problems.append(f"items[{i}].name must not be empty (it is the finding subject)")
    return problems
