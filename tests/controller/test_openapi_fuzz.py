"""The OpenAPI document is true to what runs: schemathesis drives every /api/v1 operation with generated
requests (an admin API key, a bounded, derandomized number of examples per operation) and checks that no
answer is a server error and that every status, content type and body is the one the document declares."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from controller.core import Controller, ControllerConfig
from controller.domain.tickets import RuleRef, apply_outcomes
from controller.domain.users import create_api_key, create_user
from controller.judges.base import Observation
from controller.rest.app import create_app
from controller.storage.models import Agent

PASSWORD = "Correct-Horse-42-battery"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _seeded_app(data_dir: Path) -> tuple[Controller, FastAPI, str]:
    """The app on a fresh controller with an admin key, an agent and one open ticket (so that lookups by a
    real id are exercised too)."""
    ctl = Controller.open(ControllerConfig(data_dir=data_dir))
    now = dt.datetime.now(dt.UTC)
    with ctl.sessions.begin() as s:
        create_user(s, "admin", "admin", PASSWORD, "test")
        key = create_api_key(s, "admin", "test")
        s.add(Agent(id="agt-1", hostname="web1", enrolled_at=now, cert_serial="1", cert_not_after=now,
                    tags=["linux"], status="online", max_sequence=0))
        s.flush()
        ref = RuleRef("PORTS-ALLOWED", "ports", "high", ("TPEx-CPA 3(10)5",), "tw-securities-linux", 1)
        apply_outcomes(s, "agt-1", "web1", ref, [Observation("tcp/0.0.0.0:8000", "fail", "bad", {})], now, None)
    return ctl, create_app(ctl), key


# schemathesis reads the schema when this module is collected, so the app exists from then on; the fixture
# below removes it after the module's tests.
_DATA = tempfile.TemporaryDirectory(prefix="vigil-openapi-fuzz-")
CTL, APP, KEY = _seeded_app(Path(_DATA.name))
# As if every agent named were connected: the sweep is sent, not refused for want of an agent channel.
CTL.sweeps.dispatch = lambda agents, checks: list(agents or ["agt-1"])
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    CTL.writer.shutdown()
    CTL.sessions.kw["bind"].dispose()
    _DATA.cleanup()


@schema.parametrize()
@settings(max_examples=25, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS)


def test_every_operation_declares_its_refusals() -> None:
    """Each key-protected operation declares 401, 403 and 422 with the one error body and the bearer scheme;
    what else each answers is held by the fuzz test above."""
    doc = APP.openapi()
    operations = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    assert len(operations) >= 30, "the /api/v1 operations are missing from the OpenAPI document"
    for path, method, op in operations:
        if path in ("/api/v1/healthz", "/api/v1/metrics"):
            assert "security" not in op, f"{path} is for load balancers and Prometheus: no key"
            continue
        assert op.get("security") == [{"HTTPBearer": []}], f"{method} {path} does not declare the API key"
        for status in ("401", "403", "422"):
            assert status in op["responses"], f"{method.upper()} {path} does not declare {status}"
            ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            body = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
            assert body["properties"]["detail"], f"{method.upper()} {path} {status} answers no detail"
            if not path.startswith("/api/v1/eol/"):  # the EOL module names its own models of that shape
                assert ref.endswith("/ErrorBody"), f"{method.upper()} {path} {status} answers {ref}"


def test_method_not_allowed_names_every_method_of_the_path() -> None:
    with TestClient(APP) as client:
        r = client.request("OPTIONS", "/api/v1/baselines/tw-securities-linux")
    assert r.status_code == 405 and r.headers["allow"] == "GET, PUT"
