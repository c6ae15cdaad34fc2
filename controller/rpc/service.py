"""The agent-facing gRPC services: enrollment (server TLS) and the agent channel (mutual TLS).

gRPC's Python server either requires a client certificate on a port or does not ask for one, so the
controller listens twice: the agent channel on ``--grpc`` (mutual TLS) and enrollment on the next port
(server-authenticated TLS, the agent has no certificate yet). Both listeners serve the same services;
the agent channel refuses every call that did not present a valid agent certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from cryptography import x509
from sqlalchemy.orm import Session

from controller.baselines import BaselineDoc
from controller.core import Controller
from controller.domain import enrollment, integrity, liveness
from controller.domain.ingest import ingest_reports
from controller.domain.policy import applicable_rules, build_policy
from controller.errors import EnrollmentError
from controller.storage.models import Agent
from controller.storage.store import unwritable_reason
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import agent_service_pb2_grpc as pbg
from proto.vigil.v1 import report_pb2

log = logging.getLogger(__name__)
_BATCH = 256


@dataclass
class _Stream:
    agent_id: str
    queue: asyncio.Queue[pb.ControllerMessage | None] = field(default_factory=asyncio.Queue)
    policy_id: str = ""
    checks: set[str] = field(default_factory=set)
    tags: list[str] = field(default_factory=list)
    # The spool incarnation the agent's Hello named: the incarnation of its reports that name none.
    incarnation: str = ""


class EnrollmentService(pbg.EnrollmentServicer):
    """Enrollment, limited per source address (:class:`controller.domain.enrollment.EnrollmentLimiter`); every
    refusal is audited with the source, the hostname given and the reason."""

    def __init__(self, ctl: Controller, limiter: enrollment.EnrollmentLimiter | None = None) -> None:
        self.ctl = ctl
        self.limiter = limiter or enrollment.EnrollmentLimiter()

    async def _audit(self, entries: list[tuple[str, str, str, str, int]]) -> None:
        """(source, hostname, reason, token, refusals) each as one audit entry, in one transaction."""
        def work() -> None:
            with self.ctl.sessions.begin() as s:
                for source, hostname, reason, token, refused in entries:
                    enrollment.record_refusal(s, source, hostname, reason, token, refused)

        if entries:
            await self.ctl.db(work)

    async def Enroll(self, request: pb.EnrollRequest, context: grpc.aio.ServicerContext) -> pb.EnrollResponse:
        source = enrollment.peer_address(context.peer())
        hostname = request.hostname[:255]
        limit = enrollment.RATE_LIMITED
        due = [(src, host, limit, "", n) for src, host, n in self.limiter.pending()]
        refusal = self.limiter.attempt(source, hostname)
        if refusal is not None:
            message = enrollment.rate_limited(source, refusal.retry_after_s)
            if refusal.audit_refused is not None:
                log.warning("enrollment refused for %s from %s: %s", hostname or "?", source, message)
                due.append((source, hostname, limit, request.token, refusal.audit_refused))
            await self._audit(due)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
            raise AssertionError("unreachable: abort raises")
        await self._audit(due)

        def work() -> tuple[str, bytes]:
            with self.ctl.sessions.begin() as s:
                agent, cert = enrollment.enroll(
                    s, self.ctl.ca, request.token, request.csr_pem, request.hostname, request.agent_version,
                    request.os,
                )
                return agent.id, cert

        try:
            agent_id, cert = await self.ctl.db(work)
        except EnrollmentError as exc:
            log.warning("enrollment refused for %s from %s: %s", hostname or "?", source, exc)
            await self._audit([(source, hostname, str(exc), request.token, 1)])
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            raise  # unreachable: abort raises
        log.info("enrolled agent %s (%s)", agent_id, request.hostname)
        return pb.EnrollResponse(agent_id=agent_id, certificate_pem=cert, ca_chain_pem=self.ctl.ca.ca_pem())


def peer_identity(context: grpc.aio.ServicerContext) -> tuple[str, str] | None:
    """(agent id, certificate serial in hex) from the verified client certificate, if any."""
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert")
    if not pems:
        return None
    cert = x509.load_pem_x509_certificate(pems[0])
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not cn:
        return None
    return str(cn[0].value), format(cert.serial_number, "x")


class AgentChannelService(pbg.AgentChannelServicer):
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.streams: dict[str, _Stream] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        ctl.on_policy_change.append(self._policy_changed_threadsafe)

    # -- pushes ----------------------------------------------------------------------------------
    def _policy_changed_threadsafe(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.push_policies()))

    async def push_policies(self) -> None:
        if not self.streams:
            return
        # Read the baselines once per round, then judge every stream in memory.
        docs = await asyncio.get_running_loop().run_in_executor(None, self.ctl.baselines)
        for stream in list(self.streams.values()):
            await self._maybe_push_policy(stream, docs)

    async def _maybe_push_policy(self, stream: _Stream, docs: list[BaselineDoc] | None = None) -> None:
        if docs is None:
            docs = await asyncio.get_running_loop().run_in_executor(None, self.ctl.baselines)
        policy = build_policy(applicable_rules(docs, stream.tags), self.ctl.config.heartbeat_s, stream.checks or None)
        if policy.policy_id != stream.policy_id:
            stream.policy_id = policy.policy_id
            await stream.queue.put(pb.ControllerMessage(policy=policy))
            log.info("pushed policy %s (%d tasks) to %s", policy.policy_id, len(policy.tasks), stream.agent_id)

    def close_all(self) -> None:
        """End every agent stream (on shutdown): agents reconnect to whichever controller is up."""
        for stream in list(self.streams.values()):
            stream.queue.put_nowait(None)

    def disconnect(self, agent_id: str) -> None:
        """Close the agent's open stream, if it has one (a revoked agent). Safe to call from any thread."""
        if self.loop is None:
            return

        def close() -> None:
            stream = self.streams.get(agent_id)
            if stream is not None:
                stream.queue.put_nowait(None)

        self.loop.call_soon_threadsafe(close)

    def run_checks(self, agent_ids: list[str] | None, check_ids: list[str]) -> list[str]:
        """Queue a RUN_CHECKS command to connected agents (all when None); returns who got it."""
        cmd = pb.Command(command_id=uuid.uuid4().hex, kind=pb.Command.RUN_CHECKS, check_ids=check_ids)
        sent = []
        for aid, stream in list(self.streams.items()):
            if agent_ids is None or aid in agent_ids:
                stream.queue.put_nowait(pb.ControllerMessage(command=cmd))
                sent.append(aid)
        return sent

    # -- the stream ------------------------------------------------------------------------------
    async def Connect(
        self, request_iterator: AsyncIterator[pb.AgentMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ControllerMessage]:
        self.loop = asyncio.get_running_loop()
        ident = peer_identity(context)
        if ident is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "an agent certificate is required")
            return
        agent_id, serial = ident

        def lookup() -> list[str] | None:
            with self.ctl.sessions() as s:
                agent = enrollment.find_agent_for_cert(s, agent_id, serial)
                return list(agent.tags) if agent else None

        tags = await self.ctl.db(lookup)
        if tags is None:
            log.warning("refused agent %s: certificate serial %s is revoked or unknown", agent_id, serial)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "certificate revoked or unknown")
            return
        stream = _Stream(agent_id, tags=tags)
        old = self.streams.get(agent_id)
        if old is not None:
            old.queue.put_nowait(None)  # a reconnect replaces the previous stream
        self.streams[agent_id] = stream
        reader = asyncio.create_task(self._read(stream, request_iterator, context))
        try:
            while True:
                msg = await stream.queue.get()
                if msg is None:
                    break
                yield msg
        finally:
            reader.cancel()
            if self.streams.get(agent_id) is stream:
                del self.streams[agent_id]

    async def _read(
        self, stream: _Stream, request_iterator: AsyncIterator[pb.AgentMessage], context: grpc.aio.ServicerContext
    ) -> None:
        """Receive into an inbox; a second task judges reports in batches of whatever has arrived."""
        inbox: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue()
        worker = asyncio.create_task(self._process(stream, inbox))
        try:
            async for msg in request_iterator:
                inbox.put_nowait(msg)
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        finally:
            inbox.put_nowait(None)
            try:
                await worker
            except asyncio.CancelledError:
                worker.cancel()
            stream.queue.put_nowait(None)

    async def _process(self, stream: _Stream, inbox: asyncio.Queue[pb.AgentMessage | None]) -> None:
        try:
            while True:
                msg = await inbox.get()
                if msg is None:
                    return
                kind = msg.WhichOneof("msg")
                if kind == "report":
                    batch = [msg.report]
                    held: pb.AgentMessage | None = None
                    ended = False
                    while len(batch) < _BATCH and not inbox.empty():
                        nxt = inbox.get_nowait()
                        if nxt is None:
                            ended = True
                            break
                        if nxt.WhichOneof("msg") != "report":
                            held = nxt
                            break
                        batch.append(nxt.report)
                    await self._flush(stream, batch)
                    if ended:
                        return
                    if held is None:
                        continue
                    msg, kind = held, held.WhichOneof("msg")
                if kind == "hello":
                    await self._hello(stream, msg.hello)
                elif kind == "heartbeat" and await self.ctl.db(self._touch, stream.agent_id, msg.heartbeat):
                    log.warning("agent %s: revoked, closing its stream", stream.agent_id)
                    stream.queue.put_nowait(None)
                    return
        except Exception as exc:
            reason = unwritable_reason(exc)
            if reason is not None:
                # Nothing was acknowledged: the agent keeps its reports and sends them again after reconnecting.
                log.warning("agent %s: stream closed, its reports were not stored: %s", stream.agent_id, reason)
            else:
                log.exception("agent %s: stream failed", stream.agent_id)
            stream.queue.put_nowait(None)

    async def _flush(self, stream: _Stream, reports: list[report_pb2.Report]) -> None:
        if not reports:
            return
        rules = await asyncio.get_running_loop().run_in_executor(None, self.ctl.rules_for, stream.tags)

        def work() -> list[pb.Ack]:
            with self.ctl.sessions.begin() as s:
                self._mark_seen(s, stream.agent_id)
                return ingest_reports(s, stream.agent_id, reports, rules, eol_dataset=self.ctl.eol.dataset(),
                                      incarnation=stream.incarnation)

        acks = await self.ctl.db(work)
        for ack in acks:
            await stream.queue.put(pb.ControllerMessage(ack=ack))

    async def _hello(self, stream: _Stream, hello: pb.Hello) -> None:
        stream.policy_id = hello.policy_id
        stream.checks = {c.check_id for c in hello.checks}
        # Kept as sent: ingest refuses (and quarantines) the reports of a stream whose incarnation is bad.
        stream.incarnation = hello.spool_incarnation
        problem = integrity.incarnation_problem(hello.spool_incarnation)
        if problem is not None:
            log.warning("agent %s: Hello.%s: its reports that name no incarnation are refused", stream.agent_id,
                        problem)

        def work() -> None:
            with self.ctl.sessions.begin() as s:
                agent = s.get(Agent, stream.agent_id)
                if agent is None:
                    return
                agent.version = hello.agent_version[:64]
                agent.os = hello.os[:255] or agent.os
                agent.hostname = hello.hostname[:255] or agent.hostname
                agent.checks = [{"check_id": c.check_id, "version": c.version} for c in hello.checks]
                if problem is None:
                    note = integrity.said(hello.incarnation_note, integrity.MAX_NOTE)
                    integrity.begin_incarnation(s, agent, hello.spool_incarnation, note, dt.datetime.now(dt.UTC),
                                                self.ctl.rules_for(list(agent.tags)), agent.last_seen)
                self._mark_seen(s, stream.agent_id)

        await self.ctl.db(work)
        await self._maybe_push_policy(stream)

    def _touch(self, agent_id: str, hb: pb.Heartbeat) -> bool:
        with self.ctl.sessions.begin() as s:
            agent = s.get(Agent, agent_id)
            if agent is None or agent.revoked_at is not None:
                return True
            agent.spool_depth = hb.spool_depth
            agent.dropped_records = hb.dropped_records
            self._mark_seen(s, agent_id)
        return False

    def _mark_seen(self, s: Session, agent_id: str) -> None:
        agent = s.get(Agent, agent_id)
        if agent is None or agent.revoked_at is not None:
            return  # a revocation is never overwritten by a late heartbeat
        now = dt.datetime.now(dt.UTC)
        agent.last_seen = now
        if agent.status != "online":
            was = agent.status
            agent.status = "online"
            if was == "lost":
                liveness.contact_outcome(s, agent, True, now, self.ctl.baselines())


def server_credentials(ctl: Controller, mutual: bool) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(ctl.ca.server_key_path.read_bytes(), ctl.ca.server_chain_pem())],
        root_certificates=ctl.ca.ca_pem() if mutual else None,
        require_client_auth=mutual,
    )


async def start_grpc(ctl: Controller) -> tuple[grpc.aio.Server, AgentChannelService, int, int]:
    """Start both listeners; returns (server, channel service, agent port, enrollment port)."""
    server = grpc.aio.server(
        options=[
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_receive_message_length", 16 * 2**20),
        ],
        maximum_concurrent_rpcs=None,
    )
    channel = AgentChannelService(ctl)
    pbg.add_EnrollmentServicer_to_server(EnrollmentService(ctl), server)
    pbg.add_AgentChannelServicer_to_server(channel, server)
    port = server.add_secure_port(ctl.config.grpc_addr, server_credentials(ctl, mutual=True))
    enroll_addr = ctl.config.enroll_address
    if ctl.config.grpc_addr.endswith(":0") and not ctl.config.enroll_addr:
        enroll_addr = ctl.config.grpc_addr
    enroll_port = server.add_secure_port(enroll_addr, server_credentials(ctl, mutual=False))
    if port == 0 or enroll_port == 0:
        raise OSError(f"cannot listen on {ctl.config.grpc_addr} / {enroll_addr} (address in use?)")
    await server.start()
    channel.loop = asyncio.get_running_loop()
    return server, channel, port, enroll_port
