"""Every real os-release fixture through the agent's parse + ``os_item`` and the controller's ``enrich``.

The expected outcome of each file, as of a fixed day with the packaged dataset, is in
``fixtures/os-release-outcomes.tsv``: eol, supported, rolling or unknown. Above all: no release past
its end of life may come out supported, and nothing the dataset cannot place may pass as known.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from checks.eol import EolResult, os_item
from controller import eoldata
from controller.baselines import Rule
from controller.judges import evaluate
from controller.vocabulary import FAIL, PASS, UNKNOWN
from tests.checks.eol import _fixtures
from tests.checks.eol.test_collect import collect, write

TODAY = dt.date(2026, 12, 4)
TABLE = _fixtures.FIXTURES / "os-release-outcomes.tsv"


def _table() -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fixture, product, like, outcome, through, cycle = line.split("\t")
        rows[fixture] = {"product": product, "product_like": like, "outcome": outcome, "through": through,
                         "cycle": cycle}
    return rows


ROWS = _table()


@pytest.fixture(scope="module")
def dataset() -> eoldata.Dataset:
    return eoldata.packaged_dataset()




def _enriched(fixture: str, dataset: eoldata.Dataset) -> dict[str, Any]:
    item = os_item(_fixtures.os_release(fixture), source="/etc/os-release")
    facts = MessageToDict(EolResult(items=[item]).to_proto(), preserving_proto_field_name=True,
                          always_print_fields_with_no_presence=True)
    assert eoldata.validate_facts(facts) == []
    (out,) = eoldata.enrich(facts, dataset, TODAY)["items"]
    return dict(out)


def _outcome(item: dict[str, Any]) -> str:
    if not item["known"]:
        return "unknown"
    if item["cycle"] == "rolling":
        return "rolling"
    return "supported" if item["supported"] else "eol"


def test_every_os_release_fixture_is_in_the_table() -> None:
    assert sorted(ROWS) == _fixtures.names("os-release")
    assert len(ROWS) >= 44
    assert {r["outcome"] for r in ROWS.values()} == {"eol", "supported", "rolling", "unknown"}
    assert any(r["through"] != "-" for r in ROWS.values()), "derivatives judged through ID_LIKE are covered"


@pytest.mark.parametrize("fixture", sorted(ROWS))
def test_os_release_outcome(fixture: str, dataset: eoldata.Dataset) -> None:
    row = ROWS[fixture]
    item = os_item(_fixtures.os_release(fixture))
    assert item.product == row["product"]
    assert (",".join(item.product_like) or "-") == row["product_like"]
    out = _enriched(fixture, dataset)
    assert _outcome(out) == row["outcome"], out["lifecycle_reason"]
    assert out["dataset"] == dataset.label
    if row["outcome"] in ("eol", "supported"):
        assert out["cycle"] == row["cycle"]
    if row["outcome"] == "eol":
        assert out["supported"] is False and out["eol"] is True
    if row["outcome"] == "rolling":
        assert out["supported"] is True and eoldata.ROLLING_REASON in out["lifecycle_reason"]
    if row["outcome"] == "unknown":
        assert out["supported"] is False and "not in the EOL dataset" in out["lifecycle_reason"]
    if row["through"] != "-":
        what = row["through"] if row["outcome"] == "rolling" else f"{row['through']} {item.version}"
        assert out["judged_as"] == f"judged as {what} through ID_LIKE"
        assert f"judged as {what} through ID_LIKE" in out["lifecycle_reason"]
    else:
        assert "judged_as" not in out


def test_no_release_past_its_end_of_life_comes_out_supported(dataset: eoldata.Dataset) -> None:
    # Independent of the table: wherever the dataset has a dated end for the matched cycle (and its free
    # extended support) and it lies before TODAY, the item must not be supported.
    for fixture in ROWS:
        out = _enriched(fixture, dataset)
        if not out["known"] or out["cycle"] == "rolling":
            continue
        ends = [d for d in (out["eol_date"], out["extended_support_date"]) if d]
        if ends and max(dt.date.fromisoformat(d) for d in ends) <= TODAY:
            assert out["supported"] is False, fixture


def test_an_old_agent_without_product_like_still_works(dataset: eoldata.Dataset) -> None:
    item = MessageToDict(os_item(_fixtures.os_release("centos-7")).to_proto(), preserving_proto_field_name=True)
    item.pop("product_like", None)
    (out,) = eoldata.enrich({"items": [item]}, dataset, TODAY)["items"]
    assert out["known"] is True and out["eol"] is True and out["cycle"] == "7"
    # Without ID_LIKE a derivative the dataset lacks stays unknown, never guessed.
    rasp = MessageToDict(os_item(_fixtures.os_release("raspbian-8")).to_proto(), preserving_proto_field_name=True)
    rasp.pop("product_like", None)
    (out,) = eoldata.enrich({"items": [rasp]}, dataset, TODAY)["items"]
    assert out["known"] is False
    assert out["lifecycle_reason"].endswith(f"raspbian is not in the EOL dataset; dataset: {dataset.label}")


def test_end_to_end_through_the_eol_check_and_judge(tmp_path: Path, dataset: eoldata.Dataset) -> None:
    # The real check with params.root at a directory holding Raspbian 8's os-release, then what ingest does.
    write(tmp_path, "etc/os-release", _fixtures.text("os-release/raspbian-8"))
    result, _ = collect(tmp_path)
    facts = MessageToDict(EolResult.from_proto(result.to_proto()).to_proto(), preserving_proto_field_name=True,
                          always_print_fields_with_no_presence=True)
    (os_facts,) = [i for i in facts["items"] if i["kind"] == "os"]
    assert os_facts["product"] == "raspbian" and os_facts["product_like"] == ["debian"]
    enriched = eoldata.enrich(facts, dataset, TODAY)
    assert eoldata.validate_facts(enriched) == [], "stored, enriched facts validate too"
    rule = Rule("EOL-SUPPORTED", "eol", "high", 86400, {}, {"supported": True}, (), "")
    (obs,) = [o for o in evaluate(rule, "eol", enriched, "OK") if o.subject == "raspbian 8"]
    assert obs.verdict == FAIL
    assert "judged as debian 8 through ID_LIKE" in obs.message
    assert f"dataset: {dataset.label}" in obs.message


@pytest.mark.parametrize(("fixture", "verdict", "says"), [
    ("arch", PASS, "no end of life applies (rolling release)"),
    ("elementary-7.1", UNKNOWN, "elementary is not in the EOL dataset; dataset: endoflife.date as of 2026-12-04"),
    ("centos-7", FAIL, "end of life since 2024-06-30; dataset: endoflife.date as of 2026-12-04; supported is false"),
])
def test_the_judge_names_the_outcome(fixture: str, verdict: str, says: str, dataset: eoldata.Dataset) -> None:
    facts = {"items": [_enriched(fixture, dataset)]}
    rule = Rule("EOL-SUPPORTED", "eol", "high", 86400, {}, {"supported": True}, (), "")
    (obs,) = evaluate(rule, "eol", facts, "OK")
    assert obs.verdict == verdict and says in obs.message, obs.message
