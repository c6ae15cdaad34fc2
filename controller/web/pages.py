"""The pages of the web UI. Plain HTML forms: POST, then 303 to a GET page; an error re-renders the same page
with the reason and a 4xx status. The rules (roles, ticket states, two-person approval, baseline validation)
are the controller's own (:mod:`controller.domain.workflow`, :mod:`controller.domain.changes`,
:mod:`controller.domain.exceptions`, :meth:`controller.core.Controller.apply_baseline`); this module only shows them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from common import __version__
from common.errors import UsageError
from controller import vocabulary
from controller.baselines import MAX_BYTES, BaselineError
from controller.core import Controller
from controller.domain import audit, changes, exceptions, integrity, tickets, users, workflow
from controller.domain.tickets import ACTIVE
from controller.domain.users import needs_mfa, require, role_allows
from controller.errors import Conflict, Forbidden, NotFound, http_status
from controller.storage.models import MAX_ID, Agent, ApiKey, AuditEntry, Baseline, Finding, Ticket, TicketReport, User
from controller.storage.serialize import agent_json, rfc3339
from controller.web import auth, charts, stats

router = APIRouter(include_in_schema=False)

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SEVERITY_RANK = vocabulary.SEVERITY_RANK
TRANSITION_LABELS = {"acknowledged": "Acknowledge", "in_progress": "Start work", "resolved": "Resolve",
                     "closed": "Close", "open": "Reopen", "false_positive": "Mark false positive"}
STATUS_LABELS = {"open": "open", "acknowledged": "acknowledged", "in_progress": "in progress", "resolved": "resolved",
                 "closed": "closed", "false_positive": "false positive"}
# A baseline of MAX_BYTES, URL-encoded (up to three bytes per byte), with the rest of its form.
MAX_FORM_BYTES = 3 * MAX_BYTES + 64 * 1024
ERRORS: tuple[type[Exception], ...] = (UsageError, BaselineError, Conflict, Forbidden, NotFound)


@dataclass
class WebState:
    ctl: Controller
    templates: Jinja2Templates
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    idle_timeout: dt.timedelta = auth.IDLE_TIMEOUT
    lifetime: dt.timedelta = auth.ABSOLUTE_LIFETIME


class Redirect(Exception):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class Refused(Exception):
    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def state_of(request: Request) -> WebState:
    st: WebState = request.app.state.vigil_web
    return st


def secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect(url: str) -> Response:
    return secure(RedirectResponse(url, status_code=303))


@dataclass
class Ctx:
    """One authenticated request: its database session (one transaction), user and web session."""

    request: Request
    state: WebState
    s: Session
    user: User
    ws: Any
    now: dt.datetime
    error: str | None = None
    problems: list[str] = field(default_factory=list)
    status: int = 200
    form: Mapping[str, Any] = field(default_factory=dict)

    @property
    def can_work(self) -> bool:
        return role_allows(self.user.role, "analyst")

    @property
    def is_admin(self) -> bool:
        return role_allows(self.user.role, "admin")

    def render(self, template: str, title: str, **context: Any) -> Response:
        st = self.state
        flash = auth.read_flash(self.ws.csrf_token, self.request.cookies.get(auth.FLASH_COOKIE))
        nav = self.request.url.path.split("/")[1] if self.request.url.path != "/" else ""
        response = st.templates.TemplateResponse(self.request, template, {
            "title": title, "user": self.user, "csrf": self.ws.csrf_token, "flash": flash, "error": self.error,
            "problems": self.problems, "form": self.form, "can_work": self.can_work, "is_admin": self.is_admin,
            "now": self.now, "nav": nav, "mfa_pending": needs_mfa(self.user) and not self.ws.mfa_passed,
            "version": __version__,
            "idle_minutes": int(st.idle_timeout.total_seconds() // 60), **context,
        }, status_code=self.status)
        if self.request.cookies.get(auth.FLASH_COOKIE):
            auth.clear_cookie(response, self.request, auth.FLASH_COOKIE)
        return secure(response)


def _login_url(request: Request, reason: str) -> str:
    query = {"reason": reason} if reason not in ("none", "") else {}
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method == "GET" and target != "/":
        query["next"] = target
    return "/login" + (f"?{urlencode(query)}" if query else "")


@contextlib.contextmanager
def page(request: Request, mfa_pending: bool = False) -> Iterator[Ctx]:
    """Authenticate the request and yield it in one transaction. Without a live session: to the login page
    (saying why); with a second factor still due: to the TOTP page."""
    st = state_of(request)
    now = st.clock()
    s = st.ctl.sessions()
    try:
        with s.begin():
            got = auth.load(s, request, now, st.idle_timeout, st.lifetime)
        if isinstance(got, str):
            raise Redirect(_login_url(request, got))
        if got.mfa_due and not mfa_pending:
            raise Redirect("/login/totp" if got.user.totp_enabled else "/login/enrol")
        with s.begin():
            yield Ctx(request, st, s, got.user, got.web_session, now)
    finally:
        s.close()


Work = Callable[[Session, User, FormData, dt.datetime], tuple[str, str]]
Redisplay = Callable[[Ctx], Response]


async def bounded_form(request: Request) -> FormData:
    """The posted form, its size bounded before it is parsed: browsers send form posts with a length,
    and none of ours needs more than a baseline does, URL-encoded."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        raise Refused("a form post needs a Content-Length", 411)
    if int(declared) > MAX_FORM_BYTES:
        raise Refused(f"the form is {int(declared)} bytes, more than the {MAX_FORM_BYTES // 2**20} MiB a form may "
                      f"send (a baseline may hold {MAX_BYTES // 1024} KiB)", 413)
    return await request.form()


async def act(request: Request, work: Work, redisplay: Redisplay) -> Response:
    """A form post: authenticate, check CSRF, run ``work`` in its own transaction (it returns the flash
    message and where to go), and on a refusal re-render ``redisplay`` with the reason.

    """
    form = await bounded_form(request)
    return await run_in_threadpool(_act, request, form, work, redisplay)


def _act(request: Request, form: FormData, work: Work, redisplay: Redisplay) -> Response:
    with page(request) as c:
        try:
            auth.check_csrf(request, form, c.ws.csrf_token)
        except auth.CsrfError as exc:
            raise Refused(str(exc)) from None
        username, key, now = c.user.username, c.ws.csrf_token, c.now
    try:
        with state_of(request).ctl.sessions.begin() as s:
            user = s.get(User, username)
            assert user is not None
            message, url = work(s, user, form, now)
    except ERRORS as exc:
        with page(request) as c:
            c.error = str(exc).splitlines()[0] if isinstance(exc, BaselineError) else str(exc)
            if isinstance(exc, BaselineError):
                c.error = f"{exc.filename}: {len(exc.problems)} problem(s); nothing was changed"
                c.problems = [f"{exc.filename}:{p.line}: {p.field + ': ' if p.field else ''}{p.reason}"
                              for p in exc.problems]
            c.status = http_status(exc)
            c.form = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
            return redisplay(c)
    response = redirect(url)
    auth.set_cookie(response, request, auth.FLASH_COOKIE, auth.flash_value(key, message), max_age=60)
    return response


def _f(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _hostnames(s: Session) -> dict[str, str]:
    return {aid: h for aid, h in s.execute(select(Agent.id, Agent.hostname))}


def _workers(s: Session) -> list[str]:
    return [u.username for u in s.execute(select(User).where(User.disabled.is_(False)).order_by(User.username))
            .scalars() if role_allows(u.role, "analyst")]


def _usernames(s: Session) -> list[str]:
    return list(s.execute(select(User.username).where(User.disabled.is_(False)).order_by(User.username)).scalars())


def _initial_filed(s: Session, ticket_ids: list[int]) -> set[int]:
    if not ticket_ids:
        return set()
    return set(s.execute(select(TicketReport.ticket_id).where(TicketReport.ticket_id.in_(ticket_ids),
                                                              TicketReport.stage == "initial")).scalars())


def _date_or_time(value: str) -> str:
    """A date from a date input means the end of that day, UTC; anything else is taken as RFC 3339."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return f"{value}T23:59:59Z"
    return value


# -- dashboard ------------------------------------------------------------------------------------------


@router.get("/")
def dashboard(request: Request) -> Response:
    with page(request) as c:
        return render_dashboard(c)


def render_dashboard(c: Ctx) -> Response:
    s, now = c.s, c.now
    hist = stats.history(s, now)
    cur = hist[-1]
    pct = stats.compliance_pct(cur)
    compliance = charts.line_chart("chart-compliance", "Fleet compliance (% of findings passing)", [
        charts.Series("compliance", "s-compliance",
                      [(h.at, p) for h in hist if (p := stats.compliance_pct(h)) is not None])], y_max=100, unit="%")
    open_chart = charts.line_chart("chart-open", "Open tickets by severity", [
        charts.Series(sev, f"s-{sev}", [(h.at, float(h.open_tickets.get(sev, 0))) for h in hist])
        for sev in stats.SEVERITIES])
    agents_chart = charts.line_chart("chart-agents", "Agents by status", [
        charts.Series(st, f"s-{st}", [(h.at, float(h.agents.get(st, 0))) for h in hist])
        for st in stats.AGENT_STATUSES])
    daily = stats.daily_tickets(s, now)
    daily_chart = charts.bar_chart("chart-daily", "Tickets opened and resolved per day (UTC)", daily)
    due = list(s.execute(select(Ticket).where(Ticket.status.in_(ACTIVE), Ticket.initial_report_due.is_not(None))
                         .order_by(Ticket.initial_report_due).limit(50)).scalars())
    filed = _initial_filed(s, [t.id for t in due])
    due = [t for t in due if t.id not in filed][:10]
    urgent = sorted(s.execute(select(Ticket).where(Ticket.status.in_(ACTIVE))
                              .order_by(Ticket.last_seen.desc()).limit(200)).scalars(),
                    key=lambda t: (SEVERITY_RANK.get(t.severity, 9), -t.last_seen.timestamp()))[:8]
    return c.render("dashboard.html", "Dashboard", cur=cur, pct=pct, compliance=compliance, open_chart=open_chart,
                    agents_chart=agents_chart, daily_chart=daily_chart, daily=daily, due=due, urgent=urgent,
                    names=_hostnames(s), hist_count=len(hist) - 1, severities=stats.SEVERITIES,
                    agent_statuses=stats.AGENT_STATUSES)


# -- tickets -------------------------------------------------------------------------------------------


TICKET_FILTERS = ("status", "severity", "check", "asset", "assignee", "q")


@router.get("/tickets")
def tickets_page(request: Request) -> Response:
    with page(request) as c:
        return render_tickets(c)


def render_tickets(c: Ctx) -> Response:
    s = c.s
    params = c.request.query_params
    f = {k: (params.get(k) or "").strip() for k in TICKET_FILTERS}
    status = f["status"] or "active"
    q = select(Ticket)
    if status == "active":
        q = q.where(Ticket.status.in_(ACTIVE))
    elif status != "all":
        q = q.where(Ticket.status.in_(status.split(",")))
    if f["severity"]:
        q = q.where(Ticket.severity.in_(f["severity"].split(",")))
    if f["check"]:
        q = q.where(Ticket.check_id == f["check"])
    names = _hostnames(s)
    if f["asset"]:
        ids = [aid for aid, h in names.items() if f["asset"].casefold() in (aid.casefold(), h.casefold())]
        q = q.where(Ticket.asset.in_(ids or [f["asset"]]))
    if f["assignee"] == "-":
        q = q.where(Ticket.assignee.is_(None))
    elif f["assignee"]:
        q = q.where(Ticket.assignee == f["assignee"])
    if f["q"]:
        like = f"%{f['q']}%"
        q = q.where(or_(Ticket.title.ilike(like), Ticket.subject.ilike(like), Ticket.rule_id.ilike(like)))
    rows = list(s.execute(q.order_by(Ticket.last_seen.desc()).limit(1000)).scalars())
    rows.sort(key=lambda t: (t.status not in ACTIVE, SEVERITY_RANK.get(t.severity, 9), -t.last_seen.timestamp()))
    filed = _initial_filed(s, [t.id for t in rows if t.initial_report_due is not None])
    checks = sorted(set(s.execute(select(Ticket.check_id).distinct()).scalars()))
    counts = dict(s.execute(select(Ticket.status, func.count()).group_by(Ticket.status)).all())
    return c.render("tickets.html", "Tickets", tickets=rows, names=names, f={**f, "status": status},
                    checks=checks, workers=_workers(s), filed=filed, counts=counts,
                    statuses=list(STATUS_LABELS), severities=stats.SEVERITIES)


def _ticket_in_range(ticket_id: int) -> None:
    """An id no database row can have (below 1, above the widest integer stored) names no ticket."""
    if not 1 <= ticket_id <= MAX_ID:
        raise Refused(f"no ticket {ticket_id}", 404)


@router.get("/tickets/{ticket_id}")
def ticket_page(request: Request, ticket_id: int) -> Response:
    with page(request) as c:
        return render_ticket(c, ticket_id)


def _diff_of(evidence: Mapping[str, Any]) -> str | None:
    for holder in (evidence, evidence.get("event")):
        if isinstance(holder, Mapping) and isinstance(holder.get("diff"), str) and holder["diff"]:
            return str(holder["diff"])
    return None


def _evidence_rows(evidence: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Observed facts as (name, value) rows, nested objects flattened with dots; the diff is shown apart."""
    rows: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value and len(rows) < 200:
            for k, v in value.items():
                if k == "diff":
                    continue
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            rows.append((prefix, value))

    walk("", evidence)
    return rows


def render_ticket(c: Ctx, ticket_id: int) -> Response:
    s = c.s
    _ticket_in_range(ticket_id)
    t = s.get(Ticket, ticket_id)
    if t is None:
        raise Refused(f"no ticket {ticket_id}", 404)
    d = workflow.ticket_detail(s, t)
    filed = {r["stage"] for r in d["reports"]}
    diff = _diff_of(t.evidence or {})
    default_expiry = (c.now + dt.timedelta(days=30)).date().isoformat()
    return c.render("ticket.html", f"Ticket {t.id}", t=t, d=d, diff=diff, evidence=_evidence_rows(t.evidence or {}),
                    workers=_workers(s), users=_usernames(s), labels=TRANSITION_LABELS, status_labels=STATUS_LABELS,
                    stages=workflow.REPORT_STAGES, filed=filed, default_expiry=default_expiry,
                    show_reports=bool(t.initial_report_due) or bool(d["reports"]),
                    initial_pending=t.initial_report_due is not None and "initial" not in filed)


def _ticket_post(request: Request, ticket_id: int, work: Callable[[Session, User, FormData, dt.datetime], str]
                 ) -> Any:
    def run(s: Session, user: User, form: FormData, now: dt.datetime) -> tuple[str, str]:
        _ticket_in_range(ticket_id)
        return work(s, user, form, now), f"/tickets/{ticket_id}"

    return act(request, run, lambda c: render_ticket(c, ticket_id))


@router.post("/tickets/{ticket_id}/transition")
async def ticket_transition(request: Request, ticket_id: int) -> Response:
    def work(s: Session, user: User, form: FormData, now: dt.datetime) -> str:
        to = _f(form, "to")
        reason = _f(form, "reason")
        exc = None
        if to == "false_positive" and _f(form, "exception") == "yes":
            exc = workflow.ExceptionRequest(owner=_f(form, "exc_owner"),
                                            expires=_date_or_time(_f(form, "exc_expires")),
                                            reason=_f(form, "exc_reason") or reason,
                                            subject=_f(form, "exc_subject") or None)
        t = workflow.transition(s, ticket_id, to, user, reason, exc)
        extra = f"; exception {t.exception_id} created" if exc is not None and t.exception_id else ""
        return f"ticket {ticket_id} is now {STATUS_LABELS.get(t.status, t.status)}{extra}"

    result: Response = await _ticket_post(request, ticket_id, work)
    return result


@router.post("/tickets/{ticket_id}/assign")
async def ticket_assign(request: Request, ticket_id: int) -> Response:
    def work(s: Session, user: User, form: FormData, now: dt.datetime) -> str:
        t = workflow.assign(s, ticket_id, _f(form, "assignee") or None, user)
        return f"ticket {ticket_id} assigned to {t.assignee}" if t.assignee else f"ticket {ticket_id} unassigned"

    result: Response = await _ticket_post(request, ticket_id, work)
    return result


@router.post("/tickets/{ticket_id}/comment")
async def ticket_comment(request: Request, ticket_id: int) -> Response:
    def work(s: Session, user: User, form: FormData, now: dt.datetime) -> str:
        workflow.comment(s, ticket_id, _f(form, "text"), user)
        return "comment added"

    result: Response = await _ticket_post(request, ticket_id, work)
    return result


@router.post("/tickets/{ticket_id}/report")
async def ticket_report(request: Request, ticket_id: int) -> Response:
    def work(s: Session, user: User, form: FormData, now: dt.datetime) -> str:
        r = workflow.file_report(s, ticket_id, _f(form, "stage"), _f(form, "text"), user)
        return f"{r.stage} report filed"

    result: Response = await _ticket_post(request, ticket_id, work)
    return result


# -- agents --------------------------------------------------------------------------------------------


@router.get("/devices")
def devices_page(request: Request) -> Response:
    from controller.domain import devices

    with page(request) as c:
        rows = devices.inventory(c.s, c.state.ctl.baselines())
        return c.render("devices.html", "Devices", devices=rows)


@router.get("/agents")
def agents_page(request: Request) -> Response:
    with page(request) as c:
        s = c.s
        agents = list(s.execute(select(Agent).order_by(Agent.hostname, Agent.id)).scalars())
        failing = dict(s.execute(select(Finding.asset, func.count()).where(Finding.status == vocabulary.FAIL)
                                 .group_by(Finding.asset)).all())
        unknown = dict(s.execute(select(Finding.asset, func.count()).where(Finding.status == vocabulary.UNKNOWN)
                                 .group_by(Finding.asset)).all())
        total = dict(s.execute(select(Finding.asset, func.count()).group_by(Finding.asset)).all())
        counts: dict[str, int] = {}
        for a in agents:
            key = "revoked" if a.revoked_at is not None else a.status
            counts[key] = counts.get(key, 0) + 1
        return c.render("agents.html", "Agents", agents=agents, failing=failing, unknown=unknown, total=total,
                        counts=counts)


# The newest spool incarnations, missing ranges and quarantined reports the agent page lists of each.
AGENT_HISTORY = 20


@router.get("/agents/{agent_id}")
def agent_page(request: Request, agent_id: str) -> Response:
    with page(request) as c:
        s = c.s
        a = s.get(Agent, agent_id)
        if a is None:
            raise Refused(f"no agent {agent_id!r}", 404)
        findings = list(s.execute(
            select(Finding).where(Finding.asset == agent_id)
            .order_by(Finding.check_id, Finding.status, Finding.rule_id, Finding.subject)).scalars())
        per_check: dict[str, dict[str, Any]] = {}
        for cap in a.checks or []:
            cid = str(cap.get("check_id", "")) if isinstance(cap, Mapping) else str(cap)
            per_check.setdefault(cid, {"version": cap.get("version") if isinstance(cap, Mapping) else None,
                                       "pass": 0, "fail": 0, "unknown": 0, "last": None})
        for f in findings:
            row = per_check.setdefault(f.check_id, {"version": None, "pass": 0, "fail": 0, "unknown": 0, "last": None})
            row[f.status if f.status in vocabulary.VERDICTS else "fail"] += 1
            row["last"] = max(row["last"], f.last_seen) if row["last"] else f.last_seen
        open_tickets = list(s.execute(select(Ticket).where(Ticket.asset == agent_id, Ticket.status.in_(ACTIVE))
                                      .order_by(Ticket.last_seen.desc())).scalars())
        return c.render("agent.html", f"Agent {a.hostname}", a=a, aj=agent_json(a), findings=findings,
                        per_check=dict(sorted(per_check.items())), open_tickets=open_tickets,
                        counts=integrity.counts(s, agent_id),
                        incarnations=integrity.incarnations(s, agent_id, AGENT_HISTORY),
                        gaps=integrity.gaps(s, agent_id, AGENT_HISTORY),
                        quarantined=integrity.quarantined(s, agent_id, AGENT_HISTORY))


# -- baselines -----------------------------------------------------------------------------------------


@router.get("/baselines")
def baselines_page(request: Request) -> Response:
    with page(request) as c:
        rows = list(c.s.execute(select(Baseline).order_by(Baseline.name)).scalars())
        return c.render("baselines.html", "Baselines", baselines=rows)


@router.get("/baselines/{name}")
def baseline_page(request: Request, name: str) -> Response:
    with page(request) as c:
        return render_baseline(c, name)


def render_baseline(c: Ctx, name: str) -> Response:
    b = c.s.get(Baseline, name)
    if b is None:
        raise Refused(f"no baseline {name!r}", 404)
    rules = list((b.document or {}).get("rules", []))
    return c.render("baseline.html", f"Baseline {b.name}", b=b, rules=rules)


@router.post("/baselines/{name}")
async def baseline_apply(request: Request, name: str) -> Response:
    st = state_of(request)

    def work(s: Session, user: User, form: FormData, now: dt.datetime) -> tuple[str, str]:
        require(user, "admin", "applying a baseline")
        text = form.get("yaml")
        if not isinstance(text, str) or not text.strip():
            raise UsageError("paste the whole baseline YAML into the text box")
        filename = _f(form, "filename") or f"{name}.yaml"
        doc = st.ctl.apply_baseline(text.replace("\r\n", "\n"), filename, user.username, expect_name=name)
        return f"baseline {doc.name} version {doc.version} applied ({len(doc.rules)} rules)", f"/baselines/{name}"

    return await act(request, work, lambda c: render_baseline(c, name))


# -- approved changes ------------------------------------------------------------------------------------


@router.get("/changes")
def changes_page(request: Request) -> Response:
    with page(request) as c:
        return render_changes(c)


def render_changes(c: Ctx) -> Response:
    status = (c.request.query_params.get("status") or "").strip()
    try:
        rows = changes.list_changes(c.s, status or None, 500)
    except UsageError as exc:
        c.error, c.status, rows = str(exc), 422, []
    items = [changes.change_json(ch, c.s) for ch in rows]
    start = (c.now + dt.timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    return c.render("changes.html", "Approved changes", changes=items, status=status, statuses=changes.STATUSES,
                    default_start=rfc3339(start), default_end=rfc3339(start + dt.timedelta(hours=2)))


@router.post("/changes")
async def change_create(request: Request) -> Response:
    def work(s: Session, user: User, form: FormData, now: dt.datetime) -> tuple[str, str]:
        require(user, "analyst", "requesting a change")
        ch = changes.create(s, user.username, _f(form, "assets"), _f(form, "paths"), _f(form, "start"),
                            _f(form, "end"), _f(form, "reason"))
        return f"change {ch.id} requested; another admin must approve it", "/changes"

    return await act(request, work, render_changes)


@router.post("/changes/{change_id}/{action}")
async def change_action(request: Request, change_id: str, action: str) -> Response:
    def work(s: Session, user: User, form: FormData, now: dt.datetime) -> tuple[str, str]:
        reason = _f(form, "reason")
        if action == "approve":
            require(user, "admin", "approving a change")
            ch = changes.approve(s, change_id, user.username)
        elif action == "reject":
            require(user, "admin", "rejecting a change")
            ch = changes.reject(s, change_id, user.username, reason)
        elif action == "cancel":
            require(user, "analyst", "cancelling a change")
            ch = changes.cancel(s, change_id, user.username, reason, role_allows(user.role, "admin"))
        else:
            raise NotFound(f"no action {action!r} on changes; use approve, reject or cancel")
        return f"change {ch.id} is now {ch.status}", "/changes"

    return await act(request, work, render_changes)


# -- exceptions ------------------------------------------------------------------------------------------


@router.get("/exceptions")
def exceptions_page(request: Request) -> Response:
    with page(request) as c:
        return render_exceptions(c)


def render_exceptions(c: Ctx) -> Response:
    state = (c.request.query_params.get("state") or "").strip()
    try:
        rows = exceptions.list_exceptions(c.s, state or None)
    except UsageError as exc:
        c.error, c.status, rows = str(exc), 422, []
    items = exceptions.list_json(c.s, rows)
    return c.render("exceptions.html", "Exceptions", exceptions=items, state=state, users=_usernames(c.s),
                    default_expiry=(c.now + dt.timedelta(days=30)).date().isoformat())


@router.post("/exceptions")
async def exception_create(request: Request) -> Response:
    def work(s: Session, user: User, form: FormData, now: dt.datetime) -> tuple[str, str]:
        require(user, "analyst", "creating an exception")
        e = exceptions.create(s, user.username, _f(form, "rule_id"), _f(form, "assets"), _f(form, "subject"),
                              _f(form, "owner"), _f(form, "reason"), _date_or_time(_f(form, "expires")))
        return f"exception {e.id} created", "/exceptions"

    return await act(request, work, render_exceptions)


@router.post("/exceptions/{exception_id}/revoke")
async def exception_revoke(request: Request, exception_id: str) -> Response:
    def work(s: Session, user: User, form: FormData, now: dt.datetime) -> tuple[str, str]:
        require(user, "analyst", "revoking an exception")
        e = exceptions.revoke(s, exception_id, user, _f(form, "reason"))
        reopened = tickets.release_lapsed_exceptions(s)
        more = f"; tickets reopened: {', '.join(map(str, reopened))}" if reopened else ""
        return f"exception {e.id} revoked{more}", "/exceptions"

    return await act(request, work, render_exceptions)


# -- users and API keys (admins) ---------------------------------------------------------------------------


@router.get("/users")
def users_page(request: Request) -> Response:
    with page(request) as c:
        return render_users(c)


def render_users(c: Ctx) -> Response:
    if not c.is_admin:
        raise Refused(f"the users page needs the admin role; {c.user.username} is {c.user.role}")
    keys: dict[str, list[ApiKey]] = {}
    for k in users.list_api_keys(c.s):
        keys.setdefault(k.username, []).append(k)
    return c.render("users.html", "Users", users=users.list_users(c.s), keys=keys)


USER_ACTIONS: dict[str, tuple[Callable[[Session, str, str], User], str]] = {
    "disable": (users.disable, "disabled: its sessions ended and its API keys are refused"),
    "enable": (users.enable, "enabled"),
    "unlock": (users.unlock, "unlocked, for everyone and every source"),
}


@router.post("/users/{username}/{action}")
async def user_action(request: Request, username: str, action: str) -> Response:
    def work(s: Session, user: User, form: FormData, now: dt.datetime) -> tuple[str, str]:
        require(user, "admin", "managing users")
        if action not in USER_ACTIONS:
            raise NotFound(f"no action {action!r} on users; use {', '.join(USER_ACTIONS)}")
        fn, done = USER_ACTIONS[action]
        fn(s, username, user.username)
        return f"user {username} {done}", "/users"

    return await act(request, work, render_users)


@router.post("/apikeys/{key_id}/revoke")
async def api_key_revoke(request: Request, key_id: str) -> Response:
    def work(s: Session, user: User, form: FormData, now: dt.datetime) -> tuple[str, str]:
        require(user, "admin", "revoking an API key")
        row = users.revoke_api_key(s, key_id, user.username)
        return f"API key {row.id} of {row.username} revoked", "/users"

    return await act(request, work, render_users)


# -- audit log -------------------------------------------------------------------------------------------


AUDIT_PAGE = 100


@router.get("/audit")
def audit_page(request: Request) -> Response:
    with page(request) as c:
        s = c.s
        params = c.request.query_params
        f = {k: (params.get(k) or "").strip() for k in ("actor", "action", "object")}
        q = select(AuditEntry)
        if f["actor"]:
            q = q.where(AuditEntry.actor == f["actor"])
        if f["action"]:
            q = q.where(AuditEntry.action.ilike(f["action"].replace("*", "%") + ("" if "*" in f["action"] else "%")))
        if f["object"]:
            kind, _, oid = f["object"].partition(":")
            q = q.where(AuditEntry.object_type == kind)
            if oid:
                q = q.where(AuditEntry.object_id == oid)
        before = params.get("before", "")
        if before.isdigit() and len(before) <= 19 and int(before) <= MAX_ID:
            q = q.where(AuditEntry.seq < int(before))
        rows = list(s.execute(q.order_by(AuditEntry.seq.desc()).limit(AUDIT_PAGE + 1)).scalars())
        more = len(rows) > AUDIT_PAGE
        rows = rows[:AUDIT_PAGE]
        older = urlencode({**{k: v for k, v in f.items() if v}, "before": rows[-1].seq}) if more and rows else None
        result = audit.verify(s)
        return c.render("audit.html", "Audit log", entries=rows, verify=result, f=f, older=older)


# -- errors ------------------------------------------------------------------------------------------------


def store_unavailable_page(request: Request, message: str) -> Response:
    """The controller's database cannot be written (disk full, read-only): a 503 page saying so."""
    st = state_of(request)
    return secure(st.templates.TemplateResponse(request, "error.html", {
        "title": "Storage unavailable", "message": message, "status": 503,
        "user": None, "csrf": "", "nav": "", "version": __version__, "flash": None, "error": None, "problems": [],
        "form": {}, "idle_minutes": int(st.idle_timeout.total_seconds() // 60)}, status_code=503,
        headers={"Retry-After": "30"}))


def refused_page(request: Request, exc: Refused) -> Response:
    st = state_of(request)
    return secure(st.templates.TemplateResponse(request, "error.html", {
        "title": "Refused" if exc.status == 403 else "Not found", "message": exc.message, "status": exc.status,
        "user": None, "csrf": "", "nav": "", "version": __version__, "flash": None, "error": None, "problems": [],
        "form": {}, "idle_minutes": int(st.idle_timeout.total_seconds() // 60)}, status_code=exc.status))
