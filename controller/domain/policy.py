"""What each agent should collect: the applicable baselines' rules turned into scheduled tasks.

Rules that ask one check for the same parameters share one task (so two baselines that both watch
ports cause one scan), run at the shortest interval any of them asks for. Task ids are content hashes,
so reports name the task and the controller finds the rules that task serves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.struct_pb2 import Struct

from controller.baselines import BaselineDoc, Rule
from proto.vigil.v1 import agent_service_pb2 as pb

DEFAULT_HEARTBEAT_S = 30


def task_id(check_id: str, params: dict[str, Any]) -> str:
    canonical = json.dumps([check_id, params], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Applicable:
    baseline: BaselineDoc
    rule: Rule
    task_id: str


def applicable_rules(baselines: Iterable[BaselineDoc], tags: Iterable[str]) -> list[Applicable]:
    tag_list = list(tags)
    out: list[Applicable] = []
    for doc in sorted(baselines, key=lambda d: d.name):
        if not doc.applies_to(tag_list):
            continue
        for rule in doc.rules:
            out.append(Applicable(doc, rule, task_id(rule.check, dict(rule.params))))
    return out


def build_policy(
    rules: Sequence[Applicable], heartbeat_s: int = DEFAULT_HEARTBEAT_S, supported: set[str] | None = None
) -> pb.Policy:
    tasks: dict[str, pb.Task] = {}
    for app in rules:
        if supported is not None and app.rule.check not in supported:
            continue
        existing = tasks.get(app.task_id)
        if existing is None:
            params = Struct()
            params.update(dict(app.rule.params))
            tasks[app.task_id] = pb.Task(
                task_id=app.task_id, check_id=app.rule.check, interval_s=app.rule.interval_s, params=params
            )
        else:
            existing.interval_s = min(existing.interval_s, app.rule.interval_s)
    ordered = [tasks[k] for k in sorted(tasks)]
    digest = hashlib.sha256()
    for t in ordered:
        digest.update(t.SerializeToString(deterministic=True))
    digest.update(str(heartbeat_s).encode())
    return pb.Policy(policy_id=digest.hexdigest()[:16], tasks=ordered, heartbeat_interval_s=heartbeat_s)
