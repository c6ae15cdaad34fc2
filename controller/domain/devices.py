"""The inventory of assets that are not agents: the devices sensors collect from (SFA-ETG Art.22/25/29).

A device is listed as soon as a baseline in force names it, and completed from the latest result its
sensor reported: when it was last collected, whether it was reached, what it runs, its support status
and its open tickets. The judges say which rules name such assets (``Judge.declared_assets``) and
which results are about them (``Judge.asset_of``); nothing here names a check.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.baselines import BaselineDoc
from controller.judges.registry import JUDGES
from controller.storage.models import Agent, Finding, Result, Ticket
from controller.storage.serialize import rfc3339
from controller.vocabulary import ACTIVE_STATUSES, FAIL, PASS, UNKNOWN

SUPPORT = {PASS: "supported", FAIL: "end of life", UNKNOWN: "unknown"}  # the support finding's verdict
CSV_COLUMNS = ("name", "asset", "purpose", "address", "connection", "ports_used", "platform", "version", "model",
               "serial", "support", "last_collected", "reached", "error", "sensor", "baseline", "open_tickets")


def declared(baselines: Iterable[BaselineDoc]) -> dict[str, dict[str, Any]]:
    """asset -> what the baselines in force say of it (the first baseline naming it, by name, wins)."""
    out: dict[str, dict[str, Any]] = {}
    for doc in sorted(baselines, key=lambda d: d.name):
        for rule in doc.rules:
            judge = JUDGES.get(rule.check)
            if judge is None:
                continue
            for item in judge.declared_assets(rule.params):
                known = out.get(item["asset"])
                # One entry per asset: the first that says what it is (a platform) wins over one that
                # only scans it; otherwise the first baseline by name.
                if known is None or (not known.get("platform") and item.get("platform")):
                    out[item["asset"]] = {**item, "baseline": doc.name, "rule_id": rule.id,
                                          "scope": list(doc.scope_tags or []),
                                          "_subjects": dict(judge.inventory_subjects)}
    return out


def inventory(session: Session, baselines: Iterable[BaselineDoc]) -> list[dict[str, Any]]:
    """Every declared device, with what its latest result says; sorted by name."""
    items = declared(baselines)
    if not items:
        return []
    assets = list(items)
    # The latest result about each asset is the one its "seen" finding points at (every result of the
    # asset observes that subject); findings carry the result id: a few queries however long the history.
    subjects = {s for i in items.values() for s in i["_subjects"].values()}
    latest: dict[str, Finding] = {}
    support_of: dict[str, Finding] = {}
    for f in session.execute(select(Finding).where(Finding.asset.in_(assets), Finding.subject.in_(subjects))
                             .order_by(Finding.last_seen)).scalars():
        mine = items[f.asset]["_subjects"]
        if f.subject == mine.get("seen"):
            latest[f.asset] = f
        if f.subject == mine.get("support"):
            support_of[f.asset] = f
    results = {r.id: r for r in session.execute(select(Result).where(
        Result.id.in_([f.result_id for f in latest.values() if f.result_id is not None]))).scalars()}
    # What each asset exposes: the open ports of the latest result of a check that scans them.
    scanners = [cid for cid, j in JUDGES.items() if "reachable_ports" in j.provides]
    scan_ids = dict(session.execute(select(Finding.asset, func.max(Finding.result_id)).where(
        Finding.asset.in_(assets), Finding.check_id.in_(scanners)).group_by(Finding.asset)).all())
    scanned: dict[str, list[str]] = {}
    scan_results: dict[str, Result] = {}
    by_id = {i: a for a, i in scan_ids.items() if i}
    for r in session.execute(select(Result).where(Result.id.in_(list(by_id)))).scalars():
        scan_results[by_id[r.id]] = r
        scanned[by_id[r.id]] = [f"tcp/{int(p.get('port', 0))}" for p in (r.facts or {}).get("open", []) or []]
    tickets = dict(session.execute(select(Ticket.asset, func.count()).where(
        Ticket.asset.in_(assets), Ticket.status.in_(ACTIVE_STATUSES)).group_by(Ticket.asset)).all())
    sensors = {a.id: a.hostname for a in session.execute(select(Agent).where(Agent.id.in_(
        [r.agent_id for r in [*results.values(), *scan_results.values()]]))).scalars()}
    rows = []
    for asset, item in items.items():
        finding = latest.get(asset)
        result = results.get(finding.result_id) if finding is not None and finding.result_id else None
        facts: dict[str, Any] = dict(result.facts or {}) if result is not None else {}
        seen = result if result is not None else scan_results.get(asset)  # a target that is only scanned
        sup = support_of.get(asset)
        support = SUPPORT.get(sup.status, sup.status) if sup is not None else "not collected yet"
        rows.append({
            **{k: v for k, v in item.items() if not k.startswith("_")},
            "ports_used": sorted({*item.get("ports_used", []), *scanned.get(asset, [])},
                                 key=lambda p: int(p.split("/")[1])),
            "version": facts.get("version", ""),
            "model": facts.get("model", ""),
            "serial": facts.get("serial", ""),
            "os_name": facts.get("os_name", ""),
            "support": support,
            "support_detail": sup.message if sup is not None else "",
            "last_collected": rfc3339(seen.collected_at) if seen is not None else None,
            "reached": bool(facts.get("reached")) if result is not None else None,
            "error": facts.get("error", "") if result is not None else "",
            "sensor": sensors.get(seen.agent_id, seen.agent_id) if seen is not None else "",
            "sensor_id": seen.agent_id if seen is not None else "",
            "open_tickets": int(tickets.get(asset, 0)),
        })
    return sorted(rows, key=lambda r: str(r["name"]))


def csv_text(rows: list[dict[str, Any]]) -> str:
    """The inventory as CSV (RFC 4180: quoted where needed), one device a line, the columns of CSV_COLUMNS."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else _csv_cell(r.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def _csv_cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value)
    text = str(value).lower() if isinstance(value, bool) else str(value)
    # A cell a spreadsheet would run as a formula is prefixed (OWASP CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
