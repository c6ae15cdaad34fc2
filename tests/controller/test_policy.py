"""Policies: rules asking one check for the same parameters share one task at the shortest interval."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from controller.baselines import BaselineDoc, Rule
from controller.domain.policy import DEFAULT_HEARTBEAT_S, Applicable, applicable_rules, build_policy, task_id


def rule(rule_id: str, check: str, interval_s: int, params: dict[str, Any] | None = None) -> Rule:
    return Rule(id=rule_id, check=check, severity="high", interval_s=interval_s, params=params or {})


def doc(name: str, *rules: Rule, tags: tuple[str, ...] | None = None) -> BaselineDoc:
    return BaselineDoc(name=name, version=1, scope_tags=tags, rules=rules)


WEB_ROOT = {"paths": ["/var/www/html"], "exclude": ["*.log"]}


def fleet(fim_params: dict[str, Any] | None = None, ports_interval: int = 60) -> list[BaselineDoc]:
    return [
        doc(
            "web",
            rule("PORTS-ALLOWED", "ports", 300),
            rule("WEBROOT", "fim", 3600, dict(fim_params or WEB_ROOT)),
            tags=("web",),
        ),
        doc("linux", rule("NO-TELNET", "ports", ports_interval), rule("CLOCK", "ntp", 30, {"servers": ["a", "b"]})),
    ]


def tasks_of(policy: Any) -> dict[str, dict[str, Any]]:
    return {t.check_id: MessageToDict(t, preserving_proto_field_name=True) for t in policy.tasks}


def test_equal_check_and_params_share_one_task_at_the_shortest_interval() -> None:
    policy = build_policy(applicable_rules(fleet(), ["web", "linux"]))
    assert sorted(t.check_id for t in policy.tasks) == ["fim", "ntp", "ports"]
    ports = next(t for t in policy.tasks if t.check_id == "ports")
    assert ports.interval_s == 60
    assert ports.task_id == task_id("ports", {})
    assert policy.heartbeat_interval_s == DEFAULT_HEARTBEAT_S
    tasks = tasks_of(policy)
    assert tasks["fim"]["params"] == WEB_ROOT
    assert tasks["fim"]["interval_s"] == 3600
    assert tasks["ntp"]["params"] == {"servers": ["a", "b"]}


def test_shortest_interval_wins_in_any_order() -> None:
    rules = applicable_rules(fleet(ports_interval=600), ["web"])
    for ordered in (rules, list(reversed(rules))):
        policy = build_policy(ordered)
        assert next(t for t in policy.tasks if t.check_id == "ports").interval_s == 300


def test_different_params_make_different_tasks() -> None:
    docs = [doc("a", rule("FIM-1", "fim", 3600, {"paths": ["/etc"]}), rule("FIM-2", "fim", 600, {"paths": ["/usr"]}))]
    policy = build_policy(applicable_rules(docs, []))
    assert sorted(t.interval_s for t in policy.tasks) == [600, 3600]
    assert len({t.task_id for t in policy.tasks}) == 2


def test_task_id_ignores_key_order_of_params() -> None:
    assert task_id("fim", {"paths": ["/etc"], "exclude": []}) == task_id("fim", {"exclude": [], "paths": ["/etc"]})
    assert task_id("fim", {"paths": ["/etc"]}) != task_id("fim", {"paths": ["/etc/"]})
    assert task_id("fim", {}) != task_id("ports", {})


def test_policy_id_is_stable_for_equal_input() -> None:
    a = build_policy(applicable_rules(fleet(), ["web"]))
    b = build_policy(applicable_rules(fleet(), ["web"]))
    c = build_policy(list(reversed(applicable_rules(fleet(), ["web"]))))
    assert a.policy_id == b.policy_id == c.policy_id
    assert a == b == c
    assert len(a.policy_id) == 16


@pytest.mark.parametrize(
    "change",
    [
        {"fim_params": {"paths": ["/var/www/html", "/etc/nginx"], "exclude": ["*.log"]}},
        {"fim_params": {"paths": ["/var/www/html"], "exclude": []}},
        {"ports_interval": 120},
    ],
)
def test_policy_id_changes_when_a_task_changes(change: dict[str, Any]) -> None:
    base = build_policy(applicable_rules(fleet(), ["web"]))
    changed = build_policy(applicable_rules(fleet(**change), ["web"]))
    assert changed.policy_id != base.policy_id


def test_policy_id_changes_with_the_heartbeat() -> None:
    rules = applicable_rules(fleet(), ["web"])
    assert build_policy(rules, heartbeat_s=30).policy_id != build_policy(rules, heartbeat_s=10).policy_id
    assert build_policy(rules, heartbeat_s=10).heartbeat_interval_s == 10


def test_supported_filters_checks_the_agent_lacks() -> None:
    rules = applicable_rules(fleet(), ["web"])
    assert sorted(t.check_id for t in build_policy(rules, supported={"ports", "ntp"}).tasks) == ["ntp", "ports"]
    assert list(build_policy(rules, supported=set()).tasks) == []
    everything = build_policy(rules, supported=None)
    assert everything == build_policy(rules, supported={"ports", "ntp", "fim", "av"})
    assert build_policy(rules, supported={"ports"}).policy_id != everything.policy_id


def test_applicable_rules_follow_scope_tags() -> None:
    assert [a.rule.id for a in applicable_rules(fleet(), ["db"])] == ["NO-TELNET", "CLOCK"]
    assert [a.rule.id for a in applicable_rules(fleet(), ["web"])] == ["NO-TELNET", "CLOCK", "PORTS-ALLOWED", "WEBROOT"]
    applicable = applicable_rules(fleet(), ["web"])
    assert all(isinstance(a, Applicable) and a.task_id == task_id(a.rule.check, a.rule.params) for a in applicable)


def test_empty_policy() -> None:
    policy = build_policy([])
    assert list(policy.tasks) == []
    assert policy.policy_id == build_policy([]).policy_id
