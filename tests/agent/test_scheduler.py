from __future__ import annotations

from typing import Any

from google.protobuf.struct_pb2 import Struct

from agent.scheduler import Scheduler
from checks.base import Args, Check, Context
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import report_pb2


class _Seen(Args):
    params: dict[str, Any] = {}

    @classmethod
    def from_params(cls, params: Any) -> _Seen:
        _Seen.params = dict(params)
        return cls()


class _Probe(Check[_Seen, Any]):
    id = "probe"
    version = 1
    platforms = ("linux", "darwin", "win32")
    args_type = _Seen
    report_field = "agent"

    def collect(self, args: _Seen, ctx: Context) -> Any:
        return iter(())


def test_integers_in_params_arrive_as_integers_not_doubles() -> None:
    delivered: list[report_pb2.Report] = []
    sched = Scheduler({"probe": _Probe()}, delivered.append)
    params = Struct()
    params.update({"samples": 3, "timeout_s": 2.5, "nested": {"n": 1, "xs": [1, 2.5]}})
    sched._run(pb.Task(task_id="t1", check_id="probe", interval_s=60, params=params))
    assert _Seen.params == {"samples": 3, "timeout_s": 2.5, "nested": {"n": 1, "xs": [1, 2.5]}}
    assert isinstance(_Seen.params["samples"], int)
    assert delivered and delivered[0].task_id == "t1"
