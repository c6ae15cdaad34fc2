"""Reports in: stored exactly once per (agent, sequence), re-validated, then judged.

The controller never trusts the agent's judgement (it sends none) nor its data blindly: each result
is checked for shape and range here before the baselines see it, as GRR's server re-filters what a
client returns.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from controller import eoldata
from controller.domain import changes
from controller.domain.policy import Applicable
from controller.domain.tickets import Book, RuleRef, apply_outcomes
from controller.judges import InvalidFacts, evaluate, judge_for
from controller.judges.base import JUDGEABLE, Context
from controller.judges.registry import JUDGES
from controller.storage.models import Agent, Result
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import common_pb2, report_pb2

log = logging.getLogger(__name__)

# The Report oneof field of each check id that this controller can judge.
KNOWN_RESULTS: dict[str, str] = {check_id: j.report_field for check_id, j in JUDGES.items()}
MAX_TASK_ID = 64


# Core insert: the ORM's bulk path costs more per row than it saves here.
RESULTS: Table = Result.__table__  # type: ignore[assignment]
# Agent-row columns a judge may set from facts that describe the asset itself.
ASSET_STATE = frozenset({"spool_depth", "dropped_records"})


class InvalidReport(ValueError):
    pass


def facts_of(report: report_pb2.Report) -> dict[str, Any]:
    field = report.WhichOneof("result")
    try:
        judge = judge_for(report.check_id, report.check_version)
    except InvalidFacts as exc:
        raise InvalidReport(str(exc)) from None
    expected = judge.report_field
    if field is None:
        if report.status.kind == common_pb2.CheckStatus.OK:
            raise InvalidReport(f"check {report.check_id!r} reported OK without a result")
        return {}
    if field != expected:
        raise InvalidReport(f"check {report.check_id!r} carried a {field!r} result")
    # Defaults included: a fact of 0 or false ("unexpected_changes: 0") is a fact, not a missing one.
    facts: dict[str, Any] = MessageToDict(
        getattr(report, field), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    try:
        judge.validate(facts)
    except InvalidFacts as exc:
        raise InvalidReport(str(exc)) from None
    return facts


def _ack(seq: int, outcome: int, message: str = "") -> pb.Ack:
    return pb.Ack(sequence=seq, outcome=outcome, message=message)  # type: ignore[arg-type]


def ingest_reports(
    session: Session,
    agent_id: str,
    reports: Sequence[report_pb2.Report],
    rules: Sequence[Applicable],
    now: dt.datetime | None = None,
    eol_dataset: eoldata.Dataset | None = None,
) -> list[pb.Ack]:
    """Store and judge ``reports`` of one agent in the caller's transaction; one Ack per report, in order.

    The caller commits, then sends the acks: an ack therefore always means "durably stored". The batch
    costs a fixed number of queries (duplicates, one executemany insert and one query for its ids, the
    asset's findings and tickets) plus writes for what changed.
    """
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise LookupError(agent_id)
    when = now or dt.datetime.now(dt.UTC)
    seqs = [r.sequence for r in reports]
    stored: set[int] = set()
    for chunk in range(0, len(seqs), 500):
        stored.update(session.execute(
            select(Result.sequence).where(Result.agent_id == agent_id, Result.sequence.in_(seqs[chunk:chunk + 500]))
        ).scalars())
    acks: list[pb.Ack] = []
    accepted: list[tuple[report_pb2.Report, dict[str, Any], str]] = []
    reasons: dict[str, str] = {}  # approved changes that results fell inside: id -> reason

    def approved_changes(facts: dict[str, Any]) -> dict[str, str]:
        used = changes.annotate(session, agent_id, agent.hostname, facts, when, agent.tags)
        return {cid: change.reason for cid, change in used.items()}

    eol_data = eol_dataset if eol_dataset is not None else eoldata.packaged_dataset()
    ctx = Context(today=when.date(), eol_dataset=eol_data, approved_changes=approved_changes)
    for report in reports:
        seq = report.sequence
        if seq <= 0:
            acks.append(_ack(seq, pb.Ack.REJECTED, "sequence must be positive"))
            continue
        if seq in stored:
            log.warning("agent %s: refused replay of sequence %d (already stored)", agent_id, seq)
            acks.append(_ack(seq, pb.Ack.DUPLICATE, f"sequence {seq} already stored"))
            continue
        if len(report.task_id) > MAX_TASK_ID:  # ours are 16 characters; the column holds 64
            acks.append(_ack(seq, pb.Ack.REJECTED, f"task_id is longer than {MAX_TASK_ID} characters"))
            continue
        try:
            facts = facts_of(report)
        except InvalidReport as exc:
            log.warning("agent %s: rejected report %d: %s", agent_id, seq, exc)
            acks.append(_ack(seq, pb.Ack.REJECTED, str(exc)))
            continue
        # The judge completes the facts with what only the controller knows (its EOL dataset, the
        # approved changes) before they are stored, so the stored facts are the ones judged.
        facts, used = JUDGES[report.check_id].prepare(facts, ctx)  # facts_of found the judge
        reasons.update(used)
        stored.add(seq)  # a sequence repeated inside one batch is a duplicate too
        accepted.append((report, facts, common_pb2.CheckStatus.Kind.Name(report.status.kind)))
        acks.append(_ack(seq, pb.Ack.STORED))
    if not accepted:
        return acks
    rows = [
        {
            "agent_id": agent_id,
            "sequence": r.sequence,
            "check_id": r.check_id,
            "check_version": r.check_version,
            "task_id": r.task_id,
            "collected_at": r.collected_at.ToDatetime(dt.UTC) if r.HasField("collected_at") else when,
            "received_at": when,
            "status": status,
            "status_message": r.status.message,
            "facts": facts,
            "raw": r.SerializeToString(),
        }
        for r, facts, status in accepted
    ]
    # One executemany, then one query for the ids: INSERT ... RETURNING in parameter order runs row by row
    # on SQLite, which cost a statement per result.
    session.connection().execute(RESULTS.insert(), rows)
    by_seq: dict[int, int] = {}
    new_seqs = [r.sequence for r, _, _ in accepted]
    for chunk in range(0, len(new_seqs), 500):
        found = session.execute(select(Result.sequence, Result.id).where(
            Result.agent_id == agent_id, Result.sequence.in_(new_seqs[chunk:chunk + 500])))
        by_seq.update((int(seq), int(rid)) for seq, rid in found)
    ids = [by_seq[s] for s in new_seqs]
    agent.max_sequence = max(agent.max_sequence, *(r.sequence for r, _, _ in accepted))
    book = Book(session, agent_id, when)
    heard = dict(agent.last_results or {})
    for (report, facts, status), result_id in zip(accepted, ids, strict=True):
        for column, value in JUDGES[report.check_id].asset_state(facts).items():
            if column in ASSET_STATE:
                setattr(agent, column, value)
        if report.task_id:
            heard[report.task_id] = when.isoformat()
        judge(session, agent, report.check_id, report.task_id, facts, status, rules, when, result_id, book, reasons,
              report.status.message)
    # When each task of the agent's policy last reported: liveness tells "no data within the interval".
    # Tasks no baseline asks for any more are dropped, so the map stays the size of the policy.
    wanted = {app.task_id for app in rules}
    agent.last_results = {tid: at for tid, at in heard.items() if tid in wanted}
    return acks


def judge(
    session: Session,
    agent: Agent,
    check_id: str,
    task: str,
    facts: dict[str, Any],
    status: str,
    rules: Sequence[Applicable],
    now: dt.datetime,
    result_id: int | None,
    book: Book | None = None,
    change_reasons: Mapping[str, str] | None = None,
    status_message: str = "",
) -> None:
    judge = judge_for(check_id)
    # A check that failed to run says nothing about subjects it did not see: keep them as they were.
    complete = status in JUDGEABLE
    for app in rules:
        if app.rule.check != check_id or (task and app.task_id != task):
            continue
        outcomes = evaluate(app.rule, check_id, facts, status, change_reasons, status_message)
        ref = RuleRef.of(app)
        if judge.records_changes:
            changes.record(session, agent.id, app.rule, facts, result_id, now)
        if not judge.auto_resolve:
            # Events, not states: a result without events resolves nothing, and an expected change does
            # not undo an earlier unexpected one; only the subjects the judge says it settles resolve.
            apply_outcomes(session, agent.id, agent.hostname, ref, outcomes, now, result_id, complete=False, book=book,
                           auto_resolve=False, settled=judge.settled(facts, status))
            continue
        apply_outcomes(session, agent.id, agent.hostname, ref, outcomes, now, result_id, complete=complete, book=book)
