"""What the connection sends about the spool, and what it does with a refusal: a real gRPC stream to a
stand-in controller on loopback (without TLS, which the trust tests cover)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent import client as client_mod
from agent.client import Connection
from agent.spool import MISSING_NOTE, open_spool
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import agent_service_pb2_grpc as pbg
from proto.vigil.v1 import report_pb2


class Controller(pbg.AgentChannelServicer):
    """Answers the first report REJECTED and the others STORED, then ends the stream."""

    def __init__(self, reports: int) -> None:
        self.reports = reports
        self.hello: pb.Hello | None = None
        self.received: list[report_pb2.Report] = []

    def Connect(self, request_iterator: Iterator[pb.AgentMessage], context: Any) -> Iterator[pb.ControllerMessage]:
        for msg in request_iterator:
            kind = msg.WhichOneof("msg")
            if kind == "hello":
                self.hello = msg.hello
            elif kind == "report":
                self.received.append(msg.report)
                outcome = pb.Ack.REJECTED if len(self.received) == 1 else pb.Ack.STORED
                yield pb.ControllerMessage(ack=pb.Ack(sequence=msg.report.sequence, outcome=outcome,
                                                      message="sequence out of range" if outcome == pb.Ack.REJECTED
                                                      else ""))
                if len(self.received) == self.reports:
                    return


@pytest.fixture
def insecure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Connection, "_credentials", lambda self: None)
    monkeypatch.setattr(client_mod.grpc, "secure_channel",
                        lambda target, creds, options: grpc.insecure_channel(target, options))


def serve(servicer: Controller) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pbg.add_AgentChannelServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_hello_names_the_incarnation_and_a_rejected_report_is_quarantined(tmp_path: Path, insecure: None) -> None:
    path = tmp_path / "spool.db"
    open_spool(path).close()
    for p in tmp_path.glob("spool.db*"):
        p.unlink()  # the spool is lost while the agent is stopped
    spool = open_spool(path)
    for i in range(2):
        report = report_pb2.Report(check_id="ports", check_version=1, task_id=f"t{i}", incarnation=spool.incarnation)

        def build(seq: int, report: report_pb2.Report = report) -> bytes:
            report.sequence = seq
            return pb.AgentMessage(report=report).SerializeToString()

        spool.put(build)
    servicer = Controller(reports=2)
    server, address = serve(servicer)
    try:
        conn = Connection(tmp_path, address, spool, [("ports", 1)], lambda: "", lambda p: None, lambda c: None)
        worker = threading.Thread(target=conn._session, daemon=True)
        worker.start()
        worker.join(30)
        assert not worker.is_alive()
        assert servicer.hello is not None
        assert servicer.hello.spool_incarnation == spool.incarnation
        assert servicer.hello.incarnation_note == MISSING_NOTE
        assert [r.incarnation for r in servicer.received] == [spool.incarnation] * 2
        # The refused report is kept, not deleted; the stored one is gone from the queue.
        assert spool.pending() == []
        [(seq, payload, reason, _at)] = spool.quarantined()
        assert seq == 1 and reason == "rejected by the controller: sequence out of range"
        assert pb.AgentMessage.FromString(payload).report.task_id == "t0"
        assert spool.stats()["quarantined"] == 1
    finally:
        server.stop(None)
        spool.close()
