"""The parameter contract: what ``baseline apply`` accepts in a rule's ``params``, every agent accepts.

Cases are data, one file per check under ``tests/contract/params/`` (see its README.md). Each case goes
to the controller as a one-rule baseline through ``load_baseline`` (so the judge's ``params_model``
decides) and to the agent the way a policy task reaches it: encoded as a protobuf Struct, read back by
``agent.runner.task_params``, then ``Args.from_params`` and what the check builds from its arguments
before it runs. A baseline the controller accepts must never fail on the agent because of its params.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.struct_pb2 import Struct
from pydantic import BaseModel

from agent.runner import task_params
from checks.registry import REGISTRY
from controller.baselines import BaselineError, StrictModel, load_baseline
from controller.judges.registry import CHECK_SPECS, JUDGES
from proto.vigil.v1 import agent_service_pb2 as pb

CASES_DIR = Path(__file__).parent / "contract" / "params"
CASES: dict[str, dict[str, Any]] = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(CASES_DIR.glob("*.yaml"))}
# A valid expect per check, so that only params can be what the controller refuses.
EXPECT: dict[str, dict[str, Any]] = {
    "ports": {"listening": {"allow": ["tcp/22"]}},
    "agent": {"max_silence": "3m"},
    "fim": {"unexpected_changes": 0},
    "av": {"engine_running": True},
    "eol": {"supported": True},
    "ntp": {"synchronized": True},
    "ssh_device": {"supported": True},
    "netscan": {"allowed": ["tcp/443"]},
}
# Fewest cases a check with parameters must have of each kind.
MIN_ACCEPT, MIN_REFUSE = 4, 6


def controller_problems(check: str, params: Any) -> list[str]:
    """What ``baseline apply`` says about ``params`` (nothing: accepted)."""
    doc = {"baseline": "contract", "version": 1,
           "rules": [{"id": "R", "check": check, "severity": "low", "params": params, "expect": EXPECT[check]}]}
    # JSON is YAML: every value of a case arrives exactly as written, whatever its characters.
    try:
        load_baseline(json.dumps(doc), "contract.yaml", CHECK_SPECS)
    except BaselineError as exc:
        fields = {p.field for p in exc.problems}
        assert all(f.startswith("rules[0].params") for f in fields), str(exc)
        return [str(exc)]
    return []


def agent_problem(check: str, params: dict[str, Any]) -> str | None:
    """Why the agent would refuse ``params`` (None: it would run the check with them)."""
    struct = Struct()
    struct.update(params)
    task = pb.Task(task_id="t", check_id=check, interval_s=60, params=struct)
    (registered,) = [r for r in REGISTRY if r.id == check]
    try:
        args = registered.load().args_type.from_params(task_params(task))
        if check == "fim":
            # The globs are compiled when the check starts, not in from_params: that is part of accepting.
            from checks.fim.globs import PathMatcher

            PathMatcher(args.exclude)  # type: ignore[attr-defined]
            PathMatcher(args.nodiff)  # type: ignore[attr-defined]
    except Exception as exc:  # whatever the agent raises, the check would not run
        return f"{type(exc).__name__}: {exc}"
    return None


def _cases(kind: str) -> list[Any]:
    out = []
    for check, cases in CASES.items():
        for i, case in enumerate(cases.get(kind) or []):
            out.append(pytest.param(check, case, id=f"{check}-{kind}-{i}"))
    return out


@pytest.mark.parametrize(("check", "params"), _cases("accept"))
def test_both_accept(check: str, params: dict[str, Any]) -> None:
    assert controller_problems(check, params) == []
    assert agent_problem(check, params) is None


@pytest.mark.parametrize(("check", "params"), _cases("refuse"))
def test_both_refuse(check: str, params: dict[str, Any]) -> None:
    assert controller_problems(check, params) != []
    assert agent_problem(check, params) is not None


@pytest.mark.parametrize(("check", "case"), _cases("stricter"))
def test_controller_refuses_what_the_agent_would_let_through(check: str, case: dict[str, Any]) -> None:
    assert case.get("why"), "every stricter case says why the controller refuses it"
    assert controller_problems(check, case["params"]) != []
    assert agent_problem(check, case["params"]) is None


def test_every_judge_has_a_strict_params_model() -> None:
    for check_id, judge in JUDGES.items():
        model = type(judge).__dict__.get("params_model")
        assert isinstance(model, type) and issubclass(model, StrictModel), f"judge {check_id} has no params_model"
        assert model.model_config.get("extra") == "forbid", check_id
        assert CHECK_SPECS[check_id].params_model is model


def test_every_check_has_contract_cases() -> None:
    assert set(CASES) == {r.id for r in REGISTRY} == set(JUDGES)
    for check_id, cases in CASES.items():
        assert set(cases) <= {"accept", "refuse", "stricter"}, check_id
        model: type[BaseModel] = CHECK_SPECS[check_id].params_model
        if model.model_fields:
            assert len(cases.get("accept") or []) >= MIN_ACCEPT, check_id
            assert len(cases.get("refuse") or []) >= MIN_REFUSE, check_id
        else:
            # No parameters: nothing for the agent to refuse; the controller refuses any key.
            assert cases["accept"] == [{}], check_id
            assert cases.get("stricter"), check_id


def test_the_reviewers_glob_is_refused_with_its_line() -> None:
    text = ("baseline: web\nversion: 1\nrules:\n  - id: WEB\n    check: fim\n    severity: high\n"
            '    params: {paths: [/var/www], exclude: ["[z-a]*.php"]}\n    expect: {unexpected_changes: 0}\n')
    with pytest.raises(BaselineError) as info:
        load_baseline(text, "web.yaml", CHECK_SPECS)
    assert str(info.value) == (
        "web.yaml:7: rules[0].params.exclude[0]: '[z-a]*.php' is not a valid glob: bad character range z-a"
    )
