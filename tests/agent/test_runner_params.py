"""A policy task's params as plain Python values, and the small process settings of ``vigil-agent run``."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from google.protobuf import json_format

from agent import os_description
from agent.main import limit_malloc_arenas
from agent.runner import task_params
from proto.vigil.v1 import agent_service_pb2 as pb


def test_task_params_match_what_json_format_gives_with_whole_numbers_as_int() -> None:
    params: dict[str, Any] = {"paths": ["/var/www", "/usr/local/bin"], "coalesce_ms": 20, "ratio": 0.5, "nodiff": [],
              "nested": {"on": True, "off": False, "none": None, "deep": {"n": [1, 2.5, "x"]}}}
    task = pb.Task(task_id="t", check_id="fim")
    task.params.update(params)
    got = task_params(task)
    assert got == params
    assert type(got["coalesce_ms"]) is int and type(got["ratio"]) is float
    assert got == json_format.MessageToDict(task.params)  # the same values (20 == 20.0), ints as int
    assert type(got["nested"]["deep"]["n"][0]) is int
    assert task_params(pb.Task(task_id="t", check_id="fim")) == {}


def test_os_description_names_the_kernel() -> None:
    name, _, release = os_description().partition(" ")
    assert name == sys.platform.rstrip("0123456789") and release


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc arenas are glibc's (Linux)")
def test_malloc_arenas_are_capped_unless_the_operator_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert limit_malloc_arenas(16) is True  # a cap this test process never reaches: nothing slows down
