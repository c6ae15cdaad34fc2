"""Reports in: stored exactly once per (agent, spool incarnation, sequence), re-validated, then judged.

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
from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from controller import eoldata
from controller.domain import changes, integrity
from controller.domain.integrity import MAX_QUARANTINE_BYTES as MAX_QUARANTINE_BYTES
from controller.domain.policy import Applicable
from controller.domain.tickets import Book, RuleRef, apply_outcomes
from controller.judges import InvalidFacts, Observation, evaluate, judge_for
from controller.judges.agent import UNREPORTED_FAILURE
from controller.judges.base import JUDGEABLE, Context, Judge
from controller.judges.registry import JUDGES
from controller.storage.models import Agent, AgentIncarnation, Result
from controller.vocabulary import FAIL, PASS
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import common_pb2, report_pb2

log = logging.getLogger(__name__)

# The Report oneof field of each check id that this controller can judge.
KNOWN_RESULTS: dict[str, str] = {check_id: j.report_field for check_id, j in JUDGES.items()}
MAX_TASK_ID = 64
# The widest sequence the databases store (a uint64 on the wire).
MAX_SEQUENCE = 2**63 - 1
# A report's serialised size at most (the gRPC server accepts messages of 16 MiB).
MAX_REPORT_BYTES = 4 * 2**20
# A check's status message is stored and judged cut at this many bytes of UTF-8.
MAX_STATUS_MESSAGE = 4096
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


# Core insert: the ORM's bulk path costs more per row than it saves here.
RESULTS: Table = Result.__table__  # type: ignore[assignment]
INCARNATIONS: Table = AgentIncarnation.__table__  # type: ignore[assignment]
# An incarnation's counters after a batch; built once, in Core like the insert: the ORM's UPDATE would flush
# the session and search it for rows to keep in step, and building the statement per batch cost more than
# running it.
_ADVANCE = INCARNATIONS.update().where(
    INCARNATIONS.c.agent_id == bindparam("agent"), INCARNATIONS.c.incarnation == bindparam("inc"),
).values(max_sequence=bindparam("top"), reports=INCARNATIONS.c.reports + bindparam("stored"))
# The checks whose results list an agent's listening sockets (the ports judge provides them).
_LISTENER_CHECKS = tuple(cid for cid, j in JUDGES.items() if "listeners" in j.provides)
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


def status_message(message: str) -> str:
    """The check's status message as stored and judged: at most MAX_STATUS_MESSAGE bytes of UTF-8, and
    when cut, saying how long it was (the report's raw bytes keep all of it)."""
    if len(message) * 4 <= MAX_STATUS_MESSAGE:  # cannot be longer in UTF-8: no need to encode
        return message
    data = message.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_STATUS_MESSAGE:
        return message
    kept = data[:MAX_STATUS_MESSAGE].decode("utf-8", "ignore")
    return f"{kept}… [cut at {MAX_STATUS_MESSAGE} bytes: the message was {len(data)} bytes]"


def _refusal(report: report_pb2.Report, size: int, problem: str | None) -> str | None:
    """Why the envelope of ``report`` (``size`` bytes) cannot be stored, before its facts are read.
    ``problem``: what is wrong with its incarnation, if anything."""
    seq = report.sequence
    if not 1 <= seq <= MAX_SEQUENCE:
        return f"sequence {seq} is out of range (1 to 2^63 - 1)"
    if problem is not None:
        return problem
    if size > MAX_REPORT_BYTES:
        return f"the report is {size} bytes, more than the {MAX_REPORT_BYTES} bytes a report may carry"
    if len(report.task_id) > MAX_TASK_ID:  # ours are 16 characters; the column holds 64
        return f"task_id is longer than {MAX_TASK_ID} characters"
    if report.HasField("collected_at"):
        at = report.collected_at
        if not (_MIN_SECONDS <= at.seconds <= _MAX_SECONDS and 0 <= at.nanos <= 999_999_999):
            return (f"collected_at ({at.seconds} s, {at.nanos} ns) is out of range (0001-01-01 to "
                    "9999-12-31T23:59:59Z)")
    return None


def ingest_reports(
    session: Session,
    agent_id: str,
    reports: Sequence[report_pb2.Report],
    rules: Sequence[Applicable],
    now: dt.datetime | None = None,
    eol_dataset: eoldata.Dataset | None = None,
    incarnation: str = "",
) -> list[pb.Ack]:
    """Store and judge ``reports`` of one agent in the caller's transaction; one Ack per report, in order.

    A report's spool incarnation is its own, or ``incarnation`` (the stream's ``Hello.spool_incarnation``)
    when it carries none; "" for agents that predate incarnations. Each (agent, incarnation, sequence) is
    stored once; a later one is DUPLICATE. A refused report is REJECTED, kept in the quarantine and
    ticketed; sequences that never arrived are recorded and ticketed (:mod:`controller.domain.integrity`).

    The caller commits, then sends the acks: an ack therefore always means "durably stored". A batch of
    the agent's current incarnation costs a fixed number of queries (duplicates, one executemany insert
    and one query for its ids, the incarnation's counters, the asset's findings and tickets) plus writes
    for what changed; other incarnations, missing sequences and refusals cost a few more, when they occur.
    """
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise LookupError(agent_id)
    when = now or dt.datetime.now(dt.UTC)
    stream_problem = integrity.incarnation_problem(incarnation)
    if stream_problem is not None:
        stream_problem = f"Hello.{stream_problem}"
    # Each report's incarnation, bytes and envelope refusal, before anything is read.
    incs: list[str] = []
    raws: list[bytes] = []
    refusals: list[str | None] = []
    for r in reports:
        own = r.incarnation
        raw = r.SerializeToString()
        incs.append(own or incarnation)
        raws.append(raw)
        refusals.append(_refusal(r, len(raw), integrity.incarnation_problem(own) if own else stream_problem))
    # Incarnations other than the current one: each is recorded (a new one is an event) before its reports.
    tops: dict[str, int] = {agent.incarnation: agent.max_sequence}  # highest sequence received, per incarnation
    others = {inc for inc, why in zip(incs, refusals, strict=True) if why is None and inc != agent.incarnation}
    book: Book | None = None
    if others:
        book = Book(session, agent_id, when)
        _other_incarnations(session, agent, sorted(others), incarnation, tops, rules, when, book)
    wanted: dict[str, list[int]] = {}
    for r, inc, why in zip(reports, incs, refusals, strict=True):
        if why is None:
            wanted.setdefault(inc, []).append(r.sequence)
    stored: set[tuple[str, int]] = set()
    for inc, seqs in wanted.items():
        for chunk in range(0, len(seqs), 500):
            stored.update((inc, int(seq)) for seq in session.execute(select(Result.sequence).where(
                Result.agent_id == agent_id, Result.incarnation == inc,
                Result.sequence.in_(seqs[chunk:chunk + 500]))).scalars())
    acks: list[pb.Ack] = []
    accepted: list[tuple[report_pb2.Report, dict[str, Any], str, str, bytes, str]] = []
    refused: list[tuple[report_pb2.Report, str, str]] = []
    received: dict[str, list[int]] = {}  # sequences that arrived now (stored or quarantined), per incarnation
    reasons: dict[str, str] = {}  # approved changes that results fell inside: id -> reason

    def approved_changes(facts: dict[str, Any]) -> dict[str, str]:
        used = changes.annotate(session, agent_id, agent.hostname, facts, when, agent.tags)
        return {cid: change.reason for cid, change in used.items()}

    def approved_changes_of(asset: str, facts: dict[str, Any]) -> dict[str, str]:
        used = changes.annotate(session, asset, asset, facts, when, ())
        return {cid: change.reason for cid, change in used.items()}

    def listeners_of(ref: str) -> tuple[str, list[dict[str, Any]] | None] | None:
        host = session.execute(select(Agent.id).where((Agent.id == ref) | (Agent.hostname == ref))
                               .order_by(Agent.enrolled_at.desc()).limit(1)).scalar_one_or_none()
        if host is None:
            return None
        facts = session.execute(select(Result.facts).where(Result.agent_id == host,
                                                           Result.check_id.in_(_LISTENER_CHECKS),
                                                           Result.status.in_(JUDGEABLE))
                                .order_by(Result.id.desc()).limit(1)).scalar_one_or_none()
        return host, (list(facts.get("listeners", [])) if isinstance(facts, dict) else None)

    def refuse(report: report_pb2.Report, inc: str, why: str) -> None:
        why = integrity.said(why, integrity.MAX_REASON)
        log.warning("agent %s: rejected report %d: %s", agent_id, report.sequence, why)
        acks.append(_ack(report.sequence, pb.Ack.REJECTED, why))
        refused.append((report, inc, why))

    eol_data = eol_dataset if eol_dataset is not None else eoldata.packaged_dataset()
    ctx = Context(today=when.date(), eol_dataset=eol_data, approved_changes=approved_changes,
                  approved_changes_of=approved_changes_of, listeners_of=listeners_of)
    for report, inc, raw, why in zip(reports, incs, raws, refusals, strict=True):
        seq = report.sequence
        if why is not None:
            if 1 <= seq <= MAX_SEQUENCE and inc in tops:  # it arrived: no gap is reported for it
                received.setdefault(inc, []).append(seq)
            refuse(report, inc, why)
            continue
        if (inc, seq) in stored:
            log.warning("agent %s: refused replay of sequence %d of spool incarnation %s (already stored)", agent_id,
                        seq, integrity.shown(inc))
            acks.append(_ack(seq, pb.Ack.DUPLICATE, f"sequence {seq} already stored"))
            continue
        received.setdefault(inc, []).append(seq)
        try:
            facts = facts_of(report)
        except InvalidReport as exc:
            refuse(report, inc, str(exc))
            continue
        # The judge completes the facts with what only the controller knows (its EOL dataset, the
        # approved changes) before they are stored, so the stored facts are the ones judged.
        facts, used = JUDGES[report.check_id].prepare(facts, ctx)  # facts_of found the judge
        reasons.update(used)
        stored.add((inc, seq))  # a sequence repeated inside one batch is a duplicate too
        accepted.append((report, facts, common_pb2.CheckStatus.Kind.Name(report.status.kind), inc, raw,
                         status_message(report.status.message)))
        acks.append(_ack(seq, pb.Ack.STORED))
    if refused or any(not _contiguous(seqs, tops[inc]) for inc, seqs in received.items()):
        book = book if book is not None else Book(session, agent_id, when)
        if refused:
            integrity.quarantine(session, agent, rules, refused, when, book)
        _gaps_and_fills(session, agent, received, tops, rules, when, book)
    _advance(session, agent, received, tops, accepted)
    if not accepted:
        return acks
    rows = [
        {
            "agent_id": agent_id,
            "incarnation": inc,
            "sequence": r.sequence,
            "check_id": r.check_id,
            "check_version": r.check_version,
            "task_id": r.task_id,
            "collected_at": r.collected_at.ToDatetime(dt.UTC) if r.HasField("collected_at") else when,
            "received_at": when,
            "status": status,
            "status_message": message,
            "facts": facts,
            "raw": raw,
        }
        for r, facts, status, inc, raw, message in accepted
    ]
    # One executemany, then one query for the ids: INSERT ... RETURNING in parameter order runs row by row
    # on SQLite, which cost a statement per result.
    session.connection().execute(RESULTS.insert(), rows)
    by_key: dict[tuple[str, int], int] = {}
    new_keys: dict[str, list[int]] = {}
    for r, _, _, inc, _, _ in accepted:
        new_keys.setdefault(inc, []).append(r.sequence)
    for inc, seqs in new_keys.items():
        for chunk in range(0, len(seqs), 500):
            found = session.execute(select(Result.sequence, Result.id).where(
                Result.agent_id == agent_id, Result.incarnation == inc, Result.sequence.in_(seqs[chunk:chunk + 500])))
            by_key.update(((inc, int(seq)), int(rid)) for seq, rid in found)
    ids = [by_key[(inc, r.sequence)] for r, _, _, inc, _, _ in accepted]
    book = book if book is not None else Book(session, agent_id, when)
    heard = dict(agent.last_results or {})
    for (report, facts, status, _, _, message), result_id in zip(accepted, ids, strict=True):
        for column, value in JUDGES[report.check_id].asset_state(facts).items():
            if column in ASSET_STATE:
                setattr(agent, column, value)
        if report.task_id:
            heard[report.task_id] = when.isoformat()
        judge(session, agent, report.check_id, report.task_id, facts, status, rules, when, result_id, book, reasons,
              message)
    # When each task of the agent's policy last reported: liveness tells "no data within the interval".
    # Tasks no baseline asks for any more are dropped, so the map stays the size of the policy.
    wanted_tasks = {app.task_id for app in rules}
    agent.last_results = {tid: at for tid, at in heard.items() if tid in wanted_tasks}
    return acks


def _other_incarnations(session: Session, agent: Agent, others: Sequence[str], stream: str, tops: dict[str, int],
                        rules: Sequence[Applicable], when: dt.datetime, book: Book) -> None:
    """Reports of incarnations other than the agent's current one. The stream's incarnation (or, on a
    stream that named none, the one the reports name) becomes current, recorded as
    :func:`integrity.begin_incarnation` records it; an older one keeps its reports apart, under its own
    replay protection."""
    for inc in others:
        if inc == stream or (not stream and len(others) == 1):
            integrity.begin_incarnation(session, agent, inc, "", when, rules, agent.last_seen, book)
            tops[inc] = agent.max_sequence
            continue
        row = session.get(AgentIncarnation, (agent.id, inc))
        if row is None:
            # Not the stream's and never seen: recorded (an event), but the stream's stays current.
            current, top = agent.incarnation, agent.max_sequence
            integrity.begin_incarnation(session, agent, inc, "", when, rules, agent.last_seen, book)
            tops[inc] = agent.max_sequence
            agent.incarnation, agent.max_sequence = current, top
        else:
            tops[inc] = row.max_sequence


def _contiguous(seqs: Sequence[int], top: int) -> bool:
    """The sequences follow ``top`` without a hole, each once (the usual batch)."""
    return not seqs or (min(seqs) == top + 1 and max(seqs) == top + len(seqs) and len(set(seqs)) == len(seqs))


def _gaps_and_fills(session: Session, agent: Agent, received: Mapping[str, Sequence[int]], tops: Mapping[str, int],
                    rules: Sequence[Applicable], when: dt.datetime, book: Book) -> None:
    """Ranges above an incarnation's highest sequence that this batch skipped are recorded as missing;
    sequences below it that arrive now fill the ranges they were missing from."""
    ranges: list[tuple[str, int, int]] = []
    for inc, seqs in received.items():
        top = tops[inc]
        if _contiguous(seqs, top):
            continue
        ordered = sorted(set(seqs))
        late = [seq for seq in ordered if seq <= top]
        if late:
            integrity.fill_gaps(session, agent.id, inc, late)
        previous = top
        for seq in ordered:
            if seq <= top:
                continue
            if seq > previous + 1:
                ranges.append((inc, previous + 1, seq - 1))
            previous = seq
    if ranges:
        integrity.record_gaps(session, agent, rules, ranges, when, book)


def _advance(session: Session, agent: Agent, received: Mapping[str, Sequence[int]], tops: Mapping[str, int],
             accepted: Sequence[tuple[report_pb2.Report, dict[str, Any], str, str, bytes, str]]) -> None:
    """Raise each incarnation's highest sequence received and count its stored reports: the agent's own
    counter for the current one, and one UPDATE of each incarnation's row."""
    counted: dict[str, int] = {}
    for _, _, _, inc, _, _ in accepted:
        counted[inc] = counted.get(inc, 0) + 1
    for inc, seqs in received.items():
        top = max(tops[inc], *seqs)
        if inc == agent.incarnation and top != agent.max_sequence:
            agent.max_sequence = top
        session.connection().execute(_ADVANCE, {"agent": agent.id, "inc": inc, "top": top,
                                                "stored": counted.get(inc, 0)})


def _with_unreported_failures(outcomes: list[Observation], book: Book, ref: RuleRef) -> list[Observation]:
    """A pass that ends an event the finding never recorded (an overflow the agent recovered from before
    the controller heard of it) is preceded by that event's failure: it is ticketed, then resolved."""
    out: list[Observation] = []
    for o in outcomes:
        failure = o.evidence.get(UNREPORTED_FAILURE) if o.passed else None
        if failure:
            finding = book.findings.get((ref.baseline, ref.rule_id, o.subject))
            if finding is None or (finding.evidence or {}).get("episode") != o.evidence.get("episode"):
                out.append(Observation(o.subject, FAIL, str(failure), o.evidence))
        out.append(o)
    return out


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
    device = judge.asset_of(facts)
    for app in rules:
        if app.rule.check != check_id or (task and app.task_id != task):
            continue
        outcomes = evaluate(app.rule, check_id, facts, status, change_reasons, status_message)
        ref = RuleRef.of(app)
        if device is not None and not judge.names_asset(app.rule, facts):
            log.warning("agent %s: a %s result about %s, which rule %s does not name: stored, not judged",
                        agent.id, check_id, device, app.rule.id)
            continue
        if judge.records_changes:
            changes.record(session, device or agent.id, app.rule, facts, result_id, now)
        if device is not None:
            _judge_other_asset(session, judge, device, ref, outcomes, now, result_id, complete)
            continue
        if book is not None:
            outcomes = _with_unreported_failures(outcomes, book, ref)
        if not judge.auto_resolve:
            # Events, not states: a result without events resolves nothing, and an expected change does
            # not undo an earlier unexpected one; only the subjects the judge says it settles resolve.
            apply_outcomes(session, agent.id, agent.hostname, ref, outcomes, now, result_id, complete=False, book=book,
                           auto_resolve=False, settled=judge.settled(facts, status))
            continue
        if complete and book is not None and any(
                (ref.baseline, ref.rule_id, subject) in book.findings for subject in integrity.CONTROLLER_SUBJECTS):
            # The controller's own findings under this rule (lost contact, a recreated spool, missing
            # sequences, refused reports) are not the check's to settle: every other subject is.
            seen = {o.subject for o in outcomes}
            gone = {subject: f"{subject} no longer observed"
                    for (baseline, rule_id, subject), f in book.findings.items()
                    if baseline == ref.baseline and rule_id == ref.rule_id and f.status != PASS
                    and subject not in seen and subject not in integrity.CONTROLLER_SUBJECTS}
            apply_outcomes(session, agent.id, agent.hostname, ref, outcomes, now, result_id, complete=False, book=book,
                           settled=gone)
            continue
        apply_outcomes(session, agent.id, agent.hostname, ref, outcomes, now, result_id, complete=complete, book=book)


def _judge_other_asset(session: Session, judge: Judge, asset: str, ref: RuleRef, outcomes: list[Observation],
                       now: dt.datetime, result_id: int | None, complete: bool) -> None:
    """Outcomes about an asset other than the reporting agent (a device a sensor collected from), filed
    under that asset. A complete result settles its states; its events (a configuration change) stay
    until people handle them, and a result that does not mention one leaves it as it was."""
    book = Book(session, asset, now)
    name = book.hostname or asset  # a host with an agent of its own (scanned by a sensor) by its name
    states = [o for o in outcomes if not judge.event_subject(o.subject)]
    events = [o for o in outcomes if judge.event_subject(o.subject)]
    gone: dict[str, str] = {}
    if complete:
        seen = {o.subject for o in states}
        gone = {subject: f"{subject} no longer observed" for (baseline, rule_id, subject), f in book.findings.items()
                if baseline == ref.baseline and rule_id == ref.rule_id and f.status != PASS and subject not in seen
                and not judge.event_subject(subject)}
    apply_outcomes(session, asset, name, ref, states, now, result_id, complete=False, book=book, settled=gone)
    if events:
        apply_outcomes(session, asset, name, ref, events, now, result_id, complete=False, book=book,
                       auto_resolve=False)

