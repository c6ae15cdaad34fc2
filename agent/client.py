"""The agent's one long-lived stream to the controller, with jittered exponential backoff.

Reports go out in sequence order from the spool with a bounded window in flight; each is deleted from
the spool only when its Ack arrives (STORED or DUPLICATE; a REJECTED one moves to the spool's
quarantine). The Hello names the spool's incarnation, and why it began when the agent knows. After a
reconnect everything still in the spool is sent again: the controller stores each (agent, incarnation,
sequence) once, so a resend after a lost ack is harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from agent import AgentError, os_description
from agent.spool import Spool
from agent.state import ca_path, cert_path, key_path
from common import __version__
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import agent_service_pb2_grpc as pbg
from proto.vigil.v1 import common_pb2

log = logging.getLogger(__name__)
SERVER_NAME = "vigil-controller"
WINDOW = 512
# Results read from the spool at a time, as the stream asks for them.
BATCH = 32


class Revoked(AgentError, PermissionError):
    pass


def backoff_delays(base: float = 0.5, cap: float = 60.0) -> Iterator[float]:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**n))."""
    n = 0
    while True:
        yield random.uniform(0, min(cap, base * 2**n))
        n = min(n + 1, 20)


class Connection:
    def __init__(
        self,
        data_dir: Path,
        controller: str,
        spool: Spool,
        capabilities: list[tuple[str, int]],
        policy_id: Callable[[], str],
        on_policy: Callable[[pb.Policy], None],
        on_command: Callable[[pb.Command], None],
    ) -> None:
        self.data_dir = data_dir
        self.controller = controller
        self.spool = spool
        self.capabilities = capabilities
        self.policy_id = policy_id
        self.on_policy = on_policy
        self.on_command = on_command
        self.heartbeat_s = 30.0
        self.stopped = threading.Event()
        self.connected = threading.Event()
        self.acked = 0

    def _credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=ca_path(self.data_dir).read_bytes(),
            private_key=key_path(self.data_dir).read_bytes(),
            certificate_chain=cert_path(self.data_dir).read_bytes(),
        )

    def stop(self) -> None:
        self.stopped.set()
        self.spool.changed.set()

    def run_forever(self) -> None:
        delays = backoff_delays()
        while not self.stopped.is_set():
            started, acked = time.monotonic(), self.acked
            try:
                self._session()
            except Revoked:
                raise
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    raise Revoked(
                        f"the controller refused this agent: {exc.details()} — its certificate was revoked; "
                        "enroll again with a new token"
                    ) from exc
                log.warning("controller %s unreachable (%s): %s", self.controller, code.name if code else "?",
                            exc.details() if hasattr(exc, "details") else exc)
            except Exception:
                log.exception("agent stream failed")
            self.connected.clear()
            if self.acked > acked or time.monotonic() - started > 30:
                delays = backoff_delays()  # a session that delivered results, or a long one, resets the backoff
            delay = next(delays)
            log.info("reconnecting in %.1fs", delay)
            self.stopped.wait(delay)

    def _session(self) -> None:
        hello = pb.Hello(
            agent_version=__version__, hostname=socket.gethostname(),
            os=os_description(), policy_id=self.policy_id(),
            checks=[common_pb2.CheckCapability(check_id=c, version=v) for c, v in self.capabilities],
            spool_incarnation=self.spool.incarnation, incarnation_note=self.spool.note,
        )
        inflight: set[int] = set()
        lock = threading.Lock()
        done = threading.Event()

        def requests() -> Iterator[pb.AgentMessage]:
            """What the stream sends: the Hello, then the spool's results in sequence order (at most
            WINDOW unacknowledged) and a heartbeat every ``heartbeat_s``.

            gRPC's sending thread pulls these one at a time, each once the previous one is written, so
            no thread of ours feeds a queue, and the spool is read BATCH results at a time: a backlog
            is never held in memory whole.
            """
            yield pb.AgentMessage(hello=hello)
            after = 0  # highest sequence handed to the stream in this session
            last_beat = time.monotonic()
            while not done.is_set() and not self.stopped.is_set():
                self.spool.changed.clear()  # before reading: a put from now on wakes the wait below
                with lock:
                    room = WINDOW - len(inflight)
                batch = self.spool.pending(after, min(room, BATCH)) if room > 0 else []
                for seq, payload in batch:
                    with lock:
                        inflight.add(seq)
                    after = seq
                    yield pb.AgentMessage.FromString(payload)
                now = time.monotonic()
                if now >= last_beat + self.heartbeat_s:  # the policy may change the interval
                    stats = self.spool.stats()
                    hb = pb.Heartbeat(spool_depth=stats["depth"], dropped_records=stats["dropped"])
                    hb.sent_at.FromDatetime(dt.datetime.now(dt.UTC))
                    last_beat = now
                    yield pb.AgentMessage(heartbeat=hb)
                if len(batch) < BATCH:  # nothing more to send now: wait for a put, an ack or the next beat
                    self.spool.changed.wait(min(1.0, max(0.01, last_beat + self.heartbeat_s - time.monotonic())))

        channel = grpc.secure_channel(
            self.controller, self._credentials(),
            [("grpc.ssl_target_name_override", SERVER_NAME), ("grpc.keepalive_time_ms", 30_000),
             ("grpc.keepalive_timeout_ms", 10_000), ("grpc.keepalive_permit_without_calls", 1)],
        )
        try:
            responses = pbg.AgentChannelStub(channel).Connect(requests())
            for msg in responses:
                if not self.connected.is_set():
                    self.connected.set()
                    log.info("connected to controller %s (spool incarnation %s%s)", self.controller,
                             self.spool.incarnation, f": {self.spool.note}" if self.spool.note else "")
                kind = msg.WhichOneof("msg")
                if kind == "ack":
                    if msg.ack.outcome == pb.Ack.REJECTED:
                        # Kept, not deleted: the controller ticketed it, and an operator may want the original.
                        self.spool.quarantine(msg.ack.sequence, f"rejected by the controller: {msg.ack.message}")
                        log.warning("controller rejected report %d: %s (moved to the spool's quarantine in %s)",
                                    msg.ack.sequence, msg.ack.message, self.spool.path)
                    else:
                        self.spool.ack([msg.ack.sequence])
                    self.acked += 1
                    with lock:
                        inflight.discard(msg.ack.sequence)
                    self.spool.changed.set()
                elif kind == "policy":
                    if msg.policy.heartbeat_interval_s:
                        self.heartbeat_s = float(msg.policy.heartbeat_interval_s)
                    self.on_policy(msg.policy)
                elif kind == "command":
                    self.on_command(msg.command)
                if self.stopped.is_set():
                    break
        finally:
            done.set()
            self.spool.changed.set()  # ends requests() if it waits for something to send
            channel.close()
