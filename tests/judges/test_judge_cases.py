"""Every judge case under tests/judges/cases/: rule + facts in, observations out (one runner for all)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.json_format import MessageToDict, ParseDict

from controller.baselines import load_baseline
from controller.judges import JUDGES, InvalidFacts, evaluate, judge_for
from controller.judges.registry import CHECK_SPECS
from proto.vigil.v1 import report_pb2

CASES = sorted((Path(__file__).parent / "cases").glob("*/*.yaml"))


def _baseline(rule: dict[str, Any]) -> str:
    body = {"id": "R-1", "severity": "medium", **rule}
    return yaml.safe_dump({"baseline": "cases", "version": 1, "rules": [body]}, sort_keys=False)


def _facts(check_id: str, facts: dict[str, Any]) -> dict[str, Any]:
    """The facts as ingest hands them to the judge: through the proto message, defaults included."""
    field = judge_for(check_id).report_field
    message = getattr(report_pb2.Report(), field).__class__()
    ParseDict(facts, message)
    out: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True,
                                        always_print_fields_with_no_presence=True)
    return out


def test_every_judge_has_cases() -> None:
    assert {p.parent.name for p in CASES} == set(JUDGES)


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_judge_case(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    (rule,) = load_baseline(_baseline(case["rule"]), str(path), CHECK_SPECS).rules
    status = case.get("status", "OK")
    facts = _facts(rule.check, case.get("facts") or {})
    if "refused" in case:
        with pytest.raises(InvalidFacts) as refused:
            judge_for(rule.check).validate(facts)
        assert case["refused"] in str(refused.value)
        return
    judge_for(rule.check).validate(facts)
    observed = evaluate(rule, rule.check, facts, status, {}, case.get("message", ""))
    got = [{"subject": o.subject, "verdict": o.verdict, "message": o.message} for o in observed]
    want = case["observations"]
    # A case may leave a message out; subject and verdict always count.
    assert got == [{"message": g["message"], **w} for g, w in zip(got, want, strict=False)] and len(got) == len(
        want), f"{path.name}: {path.read_text().splitlines()[0]}"
