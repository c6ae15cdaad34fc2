"""The controller's EOL dataset: validation, cycle matching, enrichment, endoflife.date conversion, the
REST endpoints and the ``vigil eol`` verbs (against a local HTTP server standing in for endoflife.date).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from sqlalchemy import select

from common.errors import UsageError
from controller import eoldata
from controller.cli import eol as eol_cli
from controller.core import Controller, ControllerConfig
from controller.domain import eol
from controller.domain.users import create_api_key, create_user, role_allows, user_for_api_key
from controller.eoldata.dataset import from_document
from controller.rest import eol as eol_rest
from controller.storage.models import AuditEntry, User

TODAY = dt.date(2026, 11, 21)
PASSWORD = "Correct-Horse-42-battery"


@pytest.fixture(scope="module")
def ds() -> eoldata.Dataset:
    return eoldata.packaged_dataset()


def _item(**kw: Any) -> dict[str, Any]:
    base = {"kind": "package", "name": "", "product": "", "version": "", "source": "", "lifecycle": "upstream",
            "lifecycle_reason": ""}
    base.update(kw)
    return base


DEBIAN = _item(kind="os", name="debian 12", product="debian", version="12.8", source="/etc/os-release",
               lifecycle="os", lifecycle_reason="the operating system")


def _only(facts: dict[str, Any], name: str) -> dict[str, Any]:
    (item,) = [i for i in facts["items"] if i["name"] == name]
    return dict(item)


# -- the packaged dataset --------------------------------------------------------------------------
def test_packaged_dataset_loads_and_covers_the_products(ds: eoldata.Dataset) -> None:
    assert ds.origin == "packaged" and ds.version == "2026-12-04" and ds.source
    required = {"debian", "ubuntu", "rhel", "rocky-linux", "almalinux", "sles", "opensuse", "alpine-linux",
                "amazon-linux", "python", "openssl", "nginx", "apache-http-server", "php", "nodejs",
                "eclipse-temurin", "postgresql", "mysql", "mariadb", "redis", "openssh"}
    assert required <= set(ds.products)
    assert set(ds.notes) == set(ds.products), "every product says where its dates come from"
    bookworm = ds.cycle_for("debian", "12")
    assert bookworm is not None and bookworm.eol == dt.date(2026, 6, 10)
    assert bookworm.extended_support == dt.date(2028, 6, 30) and bookworm.codename == "bookworm"
    # The packaged file round-trips through the writer unchanged (one cycle per line).
    assert eoldata.dump_document(ds.document) == eoldata.PACKAGED.read_text(encoding="utf-8")


def test_a_bad_dataset_is_rejected_naming_product_cycle_and_field(ds: eoldata.Dataset) -> None:
    doc = json.loads(json.dumps(ds.document))
    doc["products"]["debian"][1]["eol"] = "2026-13-01"
    doc["products"]["nodejs"][0]["extendedSupport"] = "2030-01-01"
    doc["products"]["php"].append(dict(doc["products"]["php"][0]))
    del doc["products"]["redis"][0]["eol"]
    doc["generated"] = "yesterday"
    with pytest.raises(eoldata.DatasetError) as err:
        from_document(doc, "mine.json")
    where = dict(err.value.problems)
    assert "products.debian[12].eol" in where and "2026-13-01" in where["products.debian[12].eol"]
    assert "did you mean 'extended_support'" in where["products.nodejs[26].extendedSupport"]
    assert where["products.php[8.5]"] == "cycle is listed twice"
    assert "is required" in where["products.redis[8.6].eol"]
    assert "generated" in where
    assert str(err.value).startswith("mine.json: invalid EOL dataset: ")
    assert isinstance(err.value, ValueError)


def test_not_json_names_the_line() -> None:
    with pytest.raises(eoldata.DatasetError) as err:
        eoldata.parse_dataset(b'{"format": 1,\n "products": }', "x.json")
    assert err.value.problems[0][0] == "line 2"


def test_an_imported_dataset_in_the_data_dir_wins(tmp_path: Path, ds: eoldata.Dataset) -> None:
    doc = json.loads(json.dumps(ds.document))
    doc["generated"] = "2026-12-01"
    eol.store_dataset(tmp_path, from_document(doc))
    loaded = eol.load_for(tmp_path)
    assert loaded.origin == "imported" and loaded.version == "2026-12-01"
    assert loaded.path == tmp_path / "eol" / "products.json"
    assert eol.load_for(tmp_path / "elsewhere").origin == "packaged"
    eol.store_dataset(tmp_path, ds)
    assert (tmp_path / "eol" / "products.prev.json").is_file(), "the previous import is kept"


# -- cycle matching ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("product", "version", "cycle"), [
    ("python", "3.11.7", "3.11"),
    ("nodejs", "18.19.0", "18"),
    ("nodejs", "18.19.0-1nodesource1", "18"),
    ("nodejs", "v20.11.1", "20"),
    ("debian", "12", "12"),
    ("debian", "12.8", "12"),
    ("php", "8.2.12", "8.2"),
    ("nginx", "1.24.0", "1.24"),
    ("nginx", "1.22.1-9+deb12u1", "1.22"),
    ("rhel", "9.3", "9"),
    ("ubuntu", "22.04", "22.04"),
    ("ubuntu", "22.04.3 LTS", "22.04"),
    ("openssl", "1:3.0.11-1~deb12u2", "3.0"),
    ("openssl", "1.1.1w", "1.1.1"),
    ("openssl", "3.0.7-27.el9", "3.0"),
    ("apache-http-server", "2.4.57-2", "2.4"),
    ("apache-http-server", "2.2.34", "2.2"),
    ("alpine-linux", "3.19.1", "3.19"),
    ("amazon-linux", "2023", "2023"),
    ("amazon-linux", "2023.6.20250203.1", "2023"),
    ("amazon-linux", "2", "2"),
    ("amazon-linux", "2018.03", "2018.03"),
    ("mariadb", "1:10.11.6-0+deb12u1", "10.11"),
    ("postgresql", "15.5", "15"),
    ("postgresql", "9.6.24", "9.6"),
    ("eclipse-temurin", "17.0.9+9", "17"),
    ("eclipse-temurin", "1.8.0_392", "8"),
    ("sles", "15.6", "15.6"),
    ("sles", "15", "15"),
])
def test_cycle_for(ds: eoldata.Dataset, product: str, version: str, cycle: str) -> None:
    found = ds.cycle_for(product, version)
    assert found is not None and found.cycle == cycle


@pytest.mark.parametrize(("product", "version"), [
    ("sles", "15.7"),  # a sub-cycle the dataset does not have: not judged by 15 GA
    ("nginx", "1.30.1"),  # newer than every cycle
    ("opensuse", "15"),  # ambiguous
    ("debian", "bookworm/sid"),  # no numbers
    ("cobol", "1.0"),  # unknown product
    ("python", ""),
])
def test_cycle_for_unknown(ds: eoldata.Dataset, product: str, version: str) -> None:
    assert ds.cycle_for(product, version) is None


def test_python_3_1_is_not_taken_for_3_11(ds: eoldata.Dataset) -> None:
    assert eoldata.normalize_version("python", "3.11.7") == (3, 11, 7)
    assert ds.cycle_for("python", "3.11.7").cycle == "3.11"  # type: ignore[union-attr]


# -- enrichment --------------------------------------------------------------------------------------
def test_debian_12_on_2026_11_21_is_past_security_support_but_in_lts(ds: eoldata.Dataset) -> None:
    facts = eoldata.enrich({"items": [DEBIAN], "dataset_version": ""}, ds, TODAY)
    item = _only(facts, "debian 12")
    assert item["known"] is True and item["cycle"] == "12"
    assert item["release_date"] == "2023-06-10"
    assert item["eol_date"] == "2026-06-10" and item["extended_support_date"] == "2028-06-30"
    assert item["eol"] is True and item["in_extended_support"] is True and item["supported"] is True
    assert item["days_to_eol"] == (dt.date(2026, 6, 10) - TODAY).days < 0
    assert item["days_to_end_of_support"] == (dt.date(2028, 6, 30) - TODAY).days == 587
    assert item["lts"] is False
    assert facts["dataset_version"] == ds.version


def test_nodesource_node_16_is_past_eol_and_unsupported(ds: eoldata.Dataset) -> None:
    node = _item(kind="runtime", name="nodejs 16 (/usr/bin/node)", product="nodejs", version="16.20.2-1nodesource1",
                 source="dpkg:nodejs", lifecycle="upstream", lifecycle_reason="packaged by NodeSource, not Debian")
    item = _only(eoldata.enrich({"items": [DEBIAN, node]}, ds, TODAY), node["name"])
    assert item["known"] is True and item["cycle"] == "16" and item["eol_date"] == "2023-09-11"
    assert item["eol"] is True and item["supported"] is False and item["in_extended_support"] is False
    assert item["days_to_eol"] == (dt.date(2023, 9, 11) - TODAY).days
    assert item["lts"] is True
    # HeroDevs' paid support exists but does not make it supported.
    assert "paid extended support" in item["lifecycle_reason"]
    assert item["lifecycle_reason"].startswith("packaged by NodeSource, not Debian; ")


def test_debian_packaged_openssl_is_judged_by_debian_12(ds: eoldata.Dataset) -> None:
    ssl = _item(name="openssl 3.0 (dpkg)", product="openssl", version="3.0.11-1~deb12u2", source="dpkg:openssl",
                lifecycle="os", lifecycle_reason="Debian's security team patches it")
    item = _only(eoldata.enrich({"items": [ssl, DEBIAN]}, ds, TODAY), ssl["name"])
    assert item["product"] == "openssl" and item["version"] == "3.0.11-1~deb12u2"
    assert item["cycle"] == "debian 12" and item["eol_date"] == "2026-06-10"
    assert item["extended_support_date"] == "2028-06-30"
    assert item["supported"] is True and item["in_extended_support"] is True and item["known"] is True
    assert "judged by debian 12's lifecycle" in item["lifecycle_reason"]
    # Upstream OpenSSL 3.0 ended 2026-09-07; said as evidence, not used for the verdict.
    assert "openssl 3.0 ends 2026-09-07" in item["lifecycle_reason"]
    upstream = eoldata.enrich({"items": [{**ssl, "lifecycle": "upstream"}]}, ds, TODAY)["items"][0]
    assert upstream["supported"] is False and upstream["eol_date"] == "2026-09-07"


def test_unknown_product_and_missing_os_are_not_known(ds: eoldata.Dataset) -> None:
    cobol = _item(name="cobol 1.0", product="cobol", version="1.0")
    lonely = _item(name="zlib", product="zlib", version="1.2.13", lifecycle="os")
    facts = eoldata.enrich({"items": [cobol, lonely]}, ds, TODAY)
    for name in ("cobol 1.0", "zlib"):
        item = _only(facts, name)
        assert item["known"] is False and item["eol_date"] == "" and item["release_date"] == ""
        assert item["extended_support_date"] == "" and item["cycle"] == ""
    assert "not in the EOL dataset" in _only(facts, "cobol 1.0")["lifecycle_reason"]
    assert "no OS item was reported" in _only(facts, "zlib")["lifecycle_reason"]


def test_the_agents_own_verdict_is_overwritten(ds: eoldata.Dataset) -> None:
    lying = _item(name="python 3.8", product="python", version="3.8.10", eol=False, supported=True, known=True,
                  days_to_eol=9999, eol_date="2099-01-01")
    item = eoldata.enrich({"items": [lying], "dataset_version": "2020-01-01"}, ds, TODAY)
    assert item["dataset_version"] == ds.version and item["agent_dataset_version"] == "2020-01-01"
    (py,) = item["items"]
    assert py["eol"] is True and py["supported"] is False and py["eol_date"] == "2024-10-07"


def test_ubuntu_esm_is_paid_so_20_04_is_unsupported(ds: eoldata.Dataset) -> None:
    focal = _item(kind="os", name="ubuntu 20.04", product="ubuntu", version="20.04", lifecycle="os")
    (item,) = eoldata.enrich({"items": [focal]}, ds, TODAY)["items"]
    assert item["eol"] is True and item["supported"] is False and item["lts"] is True
    assert "paid extended support exists until 2030-04-02" in item["lifecycle_reason"]


def test_no_end_date_and_ancient_versions(ds: eoldata.Dataset) -> None:
    httpd = _item(name="apache 2.4", product="apache-http-server", version="2.4.62")
    old = _item(name="apache 2.2", product="apache-http-server", version="2.2.34")
    py31 = _item(name="python 3.1", product="python", version="3.1.2")
    facts = eoldata.enrich({"items": [httpd, old, py31]}, ds, TODAY)
    new = _only(facts, "apache 2.4")
    assert new["eol"] is False and new["supported"] is True and new["eol_date"] == ""
    assert new["days_to_eol"] == eoldata.NO_DATE_DAYS == new["days_to_end_of_support"]
    two = _only(facts, "apache 2.2")
    assert two["known"] is True and two["cycle"] == "2.2" and two["eol"] is True and two["supported"] is False
    ancient = _only(facts, "python 3.1")
    assert ancient["known"] is True and ancient["cycle"] == "before 3.4" and ancient["eol"] is True
    assert ancient["supported"] is False and ancient["days_to_eol"] == 0
    assert "python 3.1.2 is older than 3.4, which reached end of life on 2019-03-18" in ancient["lifecycle_reason"]


def test_versions_the_dataset_cannot_place_stay_unknown_naming_why(ds: eoldata.Dataset) -> None:
    doc = json.loads(json.dumps(ds.document))
    doc["products"]["redis"] = [{"cycle": "7.4", "eol": False}, {"cycle": "8.0", "eol": False}]
    mine = from_document(doc, "mine.json")
    reasons = {v: mine.match(p, v, TODAY).reason for p, v in [
        ("redis", "6.2.14"), ("nginx", "1.99.0"), ("cobol", "1"), ("python", ""), ("sles", "15.7")]}
    assert mine.match("redis", "6.2.14", TODAY).cycle is None
    assert reasons["6.2.14"] == ("redis 6.2.14 is older than every redis cycle in the EOL dataset, and the oldest "
                                 "listed (7.4) is still supported")
    assert reasons["1.99.0"].startswith("nginx 1.99.0 is newer than every nginx cycle in the EOL dataset")
    assert reasons["1"] == "cobol is not in the EOL dataset"
    assert reasons[""] == "no python version was reported"
    assert "sub-cycle" in reasons["15.7"]
    (item,) = eoldata.enrich({"items": [_item(name="redis 6", product="redis", version="6.2.14")]}, mine,
                             TODAY)["items"]
    assert item["known"] is False and item["supported"] is False
    assert item["lifecycle_reason"].endswith(
        "the oldest listed (7.4) is still supported; dataset: endoflife.date as of 2026-12-04")
    assert item["dataset"] == mine.label == "endoflife.date as of 2026-12-04"


def test_validate_facts() -> None:
    assert eoldata.validate_facts({"items": [DEBIAN]}) == []
    problems = eoldata.validate_facts({"items": [{"kind": "gadget", "name": "", "lifecycle": "vendor"}, 3]})
    assert any("kind 'gadget'" in p for p in problems)
    assert any("lifecycle 'vendor'" in p for p in problems)
    assert any("name must not be empty" in p for p in problems)
    assert "items[1] must be an object" in problems
    assert eoldata.validate_facts({"items": "nope"}) == ["items must be a list"]


# -- endoflife.date API conversion ----------------------------------------------------------------
def _v1(name: str, releases: list[dict[str, Any]], **labels: Any) -> dict[str, Any]:
    """A ProductResponse as documented at https://endoflife.date/docs/api/v1/ (schema 1.x)."""
    return {"schema_version": "1.2.0", "last_modified": "2026-11-20T08:00:00+00:00", "result": {
        "name": name, "label": name.title(), "aliases": [], "category": "os", "tags": ["os"], "versionCommand": None,
        "identifiers": [], "labels": {"eoas": None, "discontinued": None, "eol": "Security Support", "eoes": None,
                                      **labels},
        "links": {"icon": None, "html": f"https://endoflife.date/{name}", "releasePolicy": None},
        "releases": releases}}


def _rel(name: str, release: str, eol_from: str | None, is_eol: bool, **kw: Any) -> dict[str, Any]:
    r = {"name": name, "codename": None, "label": name, "releaseDate": release, "isLts": False, "ltsFrom": None,
         "isEol": is_eol, "eolFrom": eol_from, "isMaintained": not is_eol, "latest": None, "custom": None}
    r.update(kw)
    return r


API = {
    "debian": _v1("debian", [
        _rel("13", "2025-08-09", "2028-08-09", False, codename="Trixie", isEoes=False, eoesFrom="2030-06-30",
             latest={"name": "13.2", "date": "2026-11-15", "link": None}),
        _rel("12", "2023-06-10", "2026-06-10", True, codename="Bookworm", isEoes=False, eoesFrom="2028-06-30"),
        _rel("11", "2021-08-14", "2024-08-14", True, codename="Bullseye", isEoes=True, eoesFrom="2026-08-31"),
        _rel("7", "2013-05-04", "2016-04-25", True, codename="Wheezy", isEoes=True, eoesFrom="2018-05-31"),
    ], eoes="Debian LTS"),
    "nodejs": _v1("nodejs", [
        _rel("26", "2026-04-22", "2029-04-30", False, isLts=True, ltsFrom="2026-10-28", isEoas=False,
             eoasFrom="2027-10-20", isEoes=None, eoesFrom=None),
        _rel("16", "2021-04-20", "2023-09-11", True, isLts=True, isEoas=True, eoasFrom="2022-10-18", isEoes=False,
             eoesFrom=None),
        _rel("3", "2015-08-04", None, True, isEoas=True, eoasFrom=None),
    ]),
    "rhel": _v1("rhel", [
        _rel("10", "2025-05-20", "2035-05-31", False, isLts=True, isEoes=False, eoesFrom="2039-05-31"),
        _rel("10.1", "2025-11-11", "2026-05-19", True),
        _rel("9", "2022-05-18", "2032-05-31", False, isLts=True, isEoes=False, eoesFrom="2036-05-31"),
    ]),
    "nginx": _v1("nginx", [
        _rel("1.31", "2026-04-21", None, False, latest={"name": "1.31.2", "date": "2026-10-01", "link": None}),
        _rel("1.30", "2026-04-14", None, False),
        _rel("1.28", "2025-04-23", "2026-04-14", True),
    ]),
}

# The legacy format of https://endoflife.date/api/python.json (a list of cycles).
LEGACY_PYTHON = [
    {"cycle": "3.14", "releaseDate": "2025-10-07", "support": "2027-10-01", "eol": "2030-10-31", "latest": "3.14.9",
     "latestReleaseDate": "2026-10-01", "lts": False},
    {"cycle": "3.9", "releaseDate": "2020-10-05", "support": "2022-05-17", "eol": "2025-10-31", "latest": "3.9.25",
     "latestReleaseDate": "2025-10-31", "lts": False},
    {"cycle": "2.6", "releaseDate": "2008-10-01", "support": True, "eol": "2013-10-29", "latest": "2.6.9",
     "latestReleaseDate": "2013-10-29", "lts": False},
]


def test_convert_v1_product_responses() -> None:
    debian = eol.convert_product("debian", API["debian"], TODAY)
    assert [c["cycle"] for c in debian] == ["13", "12", "11"], "7 ended more than 8 years ago"
    assert debian[1] == {"cycle": "12", "codename": "Bookworm", "release_date": "2023-06-10", "eol": "2026-06-10",
                         "lts": False, "extended_support": "2028-06-30"}
    assert debian[0]["latest"] == "13.2" and debian[0]["latest_release_date"] == "2026-11-15"
    node = {c["cycle"]: c for c in eol.convert_product("nodejs", API["nodejs"], TODAY)}
    assert set(node) == {"26", "16"}
    assert node["26"]["lts"] is True and node["26"]["support"] == "2027-10-20"
    assert "commercial_support" not in node["26"], "isEoes null: not eligible"
    assert node["16"]["commercial_support"] is False and "extended_support" not in node["16"], "paid: not counted"
    assert [c["cycle"] for c in eol.convert_product("rhel", API["rhel"], TODAY)] == ["10", "9"], "major releases only"
    assert eol.convert_product("nginx", API["nginx"], TODAY)[0]["eol"] is False, "eol booleans are kept"


def test_converted_cycles_are_numbered_as_os_release_numbers_them() -> None:
    # endoflife.date names COS milestones "cos-125" (os-release says VERSION_ID=125) and lists Slackware's
    # unnumbered "current"; a refresh must neither break on them nor make the dataset invalid.
    cos = eol.convert_product("cos", _v1("cos", [_rel("cos-125", "2025-10-09", "2027-09-01", False)]), TODAY)
    assert cos == [{"cycle": "125", "codename": "cos-125", "release_date": "2025-10-09", "eol": "2027-09-01",
                    "lts": False}]
    slack = eol.convert_product("slackware", _v1("slackware", [
        _rel("current", "1993-07-27", None, False), _rel("15.0", "2022-02-03", None, False)]), TODAY)
    assert [c["cycle"] for c in slack] == ["15.0"]
    merged = eol.merge(eoldata.packaged_dataset(), {"cos": cos, "slackware": slack}, "test", TODAY)
    assert merged.cycle_for("cos", "125") is not None and merged.rolling, "rolling releases are kept"


def test_convert_legacy_and_full_dumps() -> None:
    py = eol.convert_api(LEGACY_PYTHON, ["python"], TODAY, product="python")["python"]
    assert [c["cycle"] for c in py] == ["3.14", "3.9"]
    assert py[0] == {"cycle": "3.14", "release_date": "2025-10-07", "eol": "2030-10-31", "support": "2027-10-01",
                     "lts": False, "latest": "3.14.9", "latest_release_date": "2026-10-01"}
    full = {"schema_version": "1.2.0", "total": 2, "result": [API["debian"]["result"],
                                                              {**API["nginx"]["result"], "aliases": ["nginx-web"]}]}
    converted = eol.convert_api(full, ["debian", "nginx", "ubuntu"], TODAY)
    assert set(converted) == {"debian", "nginx"}
    ds = eol.merge(eoldata.packaged_dataset(), converted, "test", TODAY)
    assert ds.cycle_for("nginx", "1.30.1").cycle == "1.30"  # type: ignore[union-attr]
    assert ds.cycle_for("redis", "7.2.4") is not None, "products not in the download are kept"


# -- the REST API and `vigil eol` ------------------------------------------------------------------
class _FakeEndoflife(BaseHTTPRequestHandler):
    """Answers /api/v1/products/<p> and /api/<p>.json from the fixtures; 404 for anything else."""

    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        name = self.path.rsplit("/", 1)[-1].removesuffix(".json")
        body = API.get(name) if self.path.startswith("/api/v1/products/") else (
            LEGACY_PYTHON if self.path == "/api/python.json" else None)
        if body is None:
            self.send_error(404, "Product not found")
            return
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def endoflife() -> Iterator[tuple[str, list[str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEndoflife)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1", server.paths  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class FakeClient:
    """Records what `vigil eol` sends; serves a dataset document like the controller would."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.calls: list[tuple[str, str]] = []
        self.put: bytes | None = None

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:
        self.calls.append((method, path))
        if method == "GET" and path == "/eol/dataset/document":
            return self.document
        if method == "PUT" and path == "/eol/dataset":
            assert raw is not None and (headers or {}).get("Content-Type") == "application/json"
            self.put = raw
            ds = eoldata.parse_dataset(raw, "PUT body")
            return {**ds.summary(), "previous_version": self.document["generated"]}
        raise AssertionError(f"unexpected {method} {path}")


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vigil")
    p.add_argument("--json", action="store_true")
    sub = p.add_subparsers(dest="noun", required=True)
    eol_cli.add_cli(sub)
    return p.parse_args(list(argv))


def test_update_fetches_every_product_and_keeps_what_endoflife_date_lacks(
        endoflife: tuple[str, list[str]], ds: eoldata.Dataset) -> None:
    api, paths = endoflife
    client = FakeClient(ds.document)
    args = _parse("eol", "update", "--api-url", api, "--json")
    assert args.json is True and eol_cli.needs_controller(args)
    out, human = eol_cli.run_cli(args, client, today=TODAY)
    assert client.calls == [("GET", "/eol/dataset/document"), ("PUT", "/eol/dataset")]
    assert sorted(paths) == sorted(f"/api/v1/products/{p}" for p in ds.products), "one request per product"
    assert out["updated"] == ["debian", "nginx", "nodejs", "rhel"]
    assert "openssh" in out["kept"] and "python" in out["kept"]
    assert "kept unchanged" in human
    assert client.put is not None
    sent = eoldata.parse_dataset(client.put)
    assert sent.version == TODAY.isoformat() and "endoflife.date API" in sent.source
    assert [c.cycle for c in sent.products["debian"]] == ["13", "12", "11"]
    assert sent.cycle_for("nginx", "1.30.0").cycle == "1.30"  # type: ignore[union-attr]
    assert sent.products["openssh"] == ds.products["openssh"]
    assert "endoflife.date API" in sent.notes["nginx"] and sent.notes["openssh"] == ds.notes["openssh"]


def test_update_with_products_and_the_legacy_api(endoflife: tuple[str, list[str]], ds: eoldata.Dataset) -> None:
    api, paths = endoflife
    client = FakeClient(ds.document)
    out, _ = eol_cli.run_cli(_parse("eol", "update", "--api-url", api.removesuffix("/v1"), "--products", "python"),
                         client, today=TODAY)
    assert paths == ["/api/python.json"] and out["updated"] == ["python"]
    sent = eoldata.parse_dataset(client.put or b"")
    assert [c.cycle for c in sent.products["python"]] == ["3.14", "3.9"]


def test_update_names_an_unknown_product(endoflife: tuple[str, list[str]], ds: eoldata.Dataset) -> None:
    with pytest.raises(UsageError, match="no product 'cobol'"):
        eol_cli.run_cli(_parse("eol", "update", "--api-url", endoflife[0], "--products", "cobol"),
                        FakeClient(ds.document), today=TODAY)


def test_fetch_without_a_controller_then_update_from_the_file(
        endoflife: tuple[str, list[str]], tmp_path: Path, ds: eoldata.Dataset) -> None:
    out_file = tmp_path / "carry" / "eol.json"
    args = _parse("eol", "fetch", "--api-url", endoflife[0], "--out", str(out_file))
    assert not eol_cli.needs_controller(args)
    out, human = eol_cli.run_cli(args, None, today=TODAY)
    assert out["version"] == TODAY.isoformat() and str(out_file) in human
    client = FakeClient(ds.document)
    eol_cli.run_cli(_parse("eol", "update", "--from-file", str(out_file)), client, today=TODAY)
    assert client.put == out_file.read_bytes()


def test_update_from_an_endoflife_date_download(tmp_path: Path, ds: eoldata.Dataset) -> None:
    dump = tmp_path / "full.json"
    dump.write_text(json.dumps({"schema_version": "1.2.0", "total": 1, "result": [API["rhel"]["result"]]}))
    client = FakeClient(ds.document)
    eol_cli.run_cli(_parse("eol", "update", "--from-file", str(dump)), client, today=TODAY)
    sent = eoldata.parse_dataset(client.put or b"")
    assert [c.cycle for c in sent.products["rhel"]] == ["10", "9"] and sent.products["debian"] == ds.products["debian"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**ds.document, "format": 2}))
    untouched = FakeClient(ds.document)
    with pytest.raises(eoldata.DatasetError, match="format: must be 1"):
        eol_cli.run_cli(_parse("eol", "update", "--from-file", str(bad)), untouched, today=TODAY)
    assert untouched.calls == [], "a bad file is refused before the controller is contacted"
    whole = FakeClient(ds.document)
    eol_cli.run_cli(_parse("eol", "update", "--from-file", str(eoldata.PACKAGED)), whole, today=TODAY)
    assert whole.calls == [("PUT", "/eol/dataset")] and whole.put == eoldata.PACKAGED.read_bytes()


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[tuple[TestClient, dict[str, str], Controller]]:
    ctl = Controller.open(ControllerConfig(data_dir=tmp_path, db_url=db_url))
    keys = {}
    with ctl.sessions.begin() as s:
        for role in ("viewer", "admin"):
            create_user(s, role, role, PASSWORD, "test")
            keys[role] = create_api_key(s, role, "test")

    # The same dependencies as controller.rest.app.create_app, so register_routes is tested as it is mounted.
    def current_user(request: Request) -> User:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        with ctl.sessions() as s:
            user = user_for_api_key(s, key.strip()) if scheme.lower() == "bearer" else None
            if user is None:
                raise HTTPException(401, "missing or invalid API key")
            s.expunge(user)
            return user

    # Dependency as a default value: this module uses postponed annotations, which FastAPI resolves from
    # module globals, where a fixture-local function is not.
    def need(role: str) -> Any:
        def dep(user: User = Depends(current_user)) -> User:
            if not role_allows(user.role, role):
                raise HTTPException(403, f"this needs the {role} role")
            return user
        return dep

    app = FastAPI()
    router = APIRouter(prefix="/api/v1")
    eol_rest.register_routes(router, ctl, need)
    app.include_router(router)
    try:
        with TestClient(app) as client:
            yield client, keys, ctl
    finally:
        ctl.writer.shutdown()
        ctl.sessions.kw["bind"].dispose()


class RestClient:
    """controller.cli.operator.Client's call() over FastAPI's TestClient."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client, self.key = client, key

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:
        r = self.client.request(method, "/api/v1" + path, content=raw, json=body,
                                headers={"Authorization": f"Bearer {self.key}", **(headers or {})})
        assert r.status_code == 200, r.text
        return r.json()


def test_rest_endpoints_validate_store_and_audit(api: tuple[TestClient, dict[str, str], Controller],
                                                 ds: eoldata.Dataset, tmp_path: Path) -> None:
    client, keys, ctl = api
    viewer, admin = ({"Authorization": f"Bearer {keys[r]}"} for r in ("viewer", "admin"))
    assert client.get("/api/v1/eol/dataset").status_code == 401
    summary = client.get("/api/v1/eol/dataset", headers=viewer).json()
    assert summary["version"] == ds.version and summary["origin"] == "packaged"
    packaged = json.loads((Path(eoldata.__file__).parent / "products.json").read_text())["products"]
    assert summary["products"] == len(ds.products) == len(packaged) >= 37
    body = json.loads(json.dumps(ds.document))
    body["generated"] = "2026-11-22"
    assert client.put("/api/v1/eol/dataset", json=body, headers=viewer).status_code == 403
    broken = json.loads(json.dumps(body))
    broken["products"]["debian"][1]["extended_support"] = "LTS"
    r = client.put("/api/v1/eol/dataset", json=broken, headers=admin)
    assert r.status_code == 422
    assert {"where": "products.debian[12].extended_support",
            "reason": "must be a date YYYY-MM-DD or true/false, got 'LTS'"} in r.json()["problems"]
    assert not (tmp_path / "eol" / "products.json").exists(), "nothing is stored from a bad import"
    r = client.put("/api/v1/eol/dataset", json=body, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "2026-11-22" and r.json()["previous_version"] == ds.version
    assert r.json()["origin"] == "imported"
    assert client.get("/api/v1/eol/dataset", headers=viewer).json()["origin"] == "imported"
    assert ctl.eol.dataset().version == "2026-11-22", "ingest judges with the import at once"
    with ctl.sessions() as s:
        (entry,) = s.execute(select(AuditEntry).where(AuditEntry.action == "eol.dataset.import")).scalars()
        assert entry.actor == "admin" and entry.object_type == "eol" and entry.object_id == "2026-11-22"
        assert entry.details["previous_version"] == ds.version and entry.details["products"] == len(packaged)
    # `vigil eol export` writes what the controller has; `show` reports it.
    out_file = tmp_path / "export" / "products.json"
    adapter = RestClient(client, keys["viewer"])
    out, human = eol_cli.run_cli(_parse("eol", "export", "--out", str(out_file)), adapter, today=TODAY)
    assert eoldata.read_dataset(out_file).version == "2026-11-22" and "wrote EOL dataset 2026-11-22" in human
    out, human = eol_cli.run_cli(_parse("eol", "show"), adapter, today=TODAY)
    assert out["origin"] == "imported" and human.startswith(f"EOL dataset 2026-11-22 ({len(packaged)} products")


def test_update_end_to_end_through_the_rest_api(api: tuple[TestClient, dict[str, str], Controller],
                                                endoflife: tuple[str, list[str]]) -> None:
    client, keys, ctl = api
    out, human = eol_cli.run_cli(_parse("eol", "update", "--api-url", endoflife[0], "--products", "debian,nodejs"),
                             RestClient(client, keys["admin"]), today=TODAY)
    assert out["updated"] == ["debian", "nodejs"] and out["origin"] == "imported"
    assert human.startswith(f"imported EOL dataset {TODAY.isoformat()}")
    active = ctl.eol.dataset()
    assert [c.cycle for c in active.products["debian"]] == ["13", "12", "11"]
    item = eoldata.enrich({"items": [DEBIAN]}, active, TODAY)["items"][0]
    assert item["supported"] is True and item["extended_support_date"] == "2028-06-30"


@pytest.mark.parametrize(("body", "where"), [
    (b"\xff\xfe not utf-8", "file"),
    (b"[" * 100000 + b"]" * 100000, "file"),  # nested too deeply for the JSON parser
    (b'{"format": 1, "generated": "2026-12-04", "source": "x", "products": {"a": [{"cycle": "' + b"9" * 5000
     + b'", "eol": true}]}}', "products.a[#0].cycle"),
    (b'{"format": 1, "generated": "2026-12-04", "source": "x", "products": {"a": [{"cycle": "1", "eol": true,'
     b' "codename": "\\ud800"}]}}', "document"),
    (b'{"format": 1, "generated": "2026-12-04", "source": "x", "products": {"a": [{"cycle": "1", '
     b'"eol": NaN}]}}', "document"),
    (b'{"format": true, "generated": "2026-12-04", "source": "x", "products": {"a": [{"cycle": "1", "eol": true}]}}',
     "format"),
    (b'{"format": 1, "generated": "2026-12-04", "source": "x", "rolling": {"arch": ""}, '
     b'"products": {"a": [{"cycle": "1", "eol": true}]}}', "rolling.arch"),
    (b'{"format": 1, "generated": "2026-12-04", "source": "x", "rolling": {"a": "rolling"}, '
     b'"products": {"a": [{"cycle": "1", "eol": true}]}}', "products.a"),
    (b"12", "document"),
    (b"", "line 1"),
])
def test_every_malformed_put_body_is_a_422_naming_where(api: tuple[TestClient, dict[str, str], Controller],
                                                        tmp_path: Path, body: bytes, where: str) -> None:
    client, keys, _ = api
    r = client.put("/api/v1/eol/dataset", content=body, headers={"Authorization": f"Bearer {keys['admin']}"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("request body: invalid EOL dataset")
    assert where in [p["where"] for p in r.json()["problems"]]
    assert not (tmp_path / "eol" / "products.json").exists()


def test_the_openapi_document_declares_every_status_of_the_eol_routes(
        api: tuple[TestClient, dict[str, str], Controller]) -> None:
    client, _, _ = api
    paths = client.get("/openapi.json").json()["paths"]
    put = paths["/api/v1/eol/dataset"]["put"]
    assert {"200", "401", "403", "413", "422", "507"} <= set(put["responses"])
    assert put["requestBody"]["content"]["application/json"]["schema"]["properties"]["rolling"]
    assert {"200", "401", "403"} <= set(paths["/api/v1/eol/dataset"]["get"]["responses"])
    assert {"200", "401", "403"} <= set(paths["/api/v1/eol/dataset/document"]["get"]["responses"])


def test_rolling_products_load_and_are_judged_supported(ds: eoldata.Dataset) -> None:
    assert {"arch", "gentoo", "opensuse-tumbleweed", "debian-testing"} <= set(ds.rolling)
    (item,) = eoldata.enrich({"items": [_item(kind="os", name="arch", product="arch", lifecycle="os")]}, ds,
                             TODAY)["items"]
    assert (item["known"], item["supported"], item["eol"], item["cycle"]) == (True, True, False, "rolling")
    assert item["lifecycle_reason"].endswith(eoldata.ROLLING_REASON)
    old = json.loads(json.dumps(ds.document))
    del old["rolling"], old["title"]
    assert from_document(old, "format without rolling").rolling == {}, "datasets written before rolling still load"


def test_eoldata_is_pure_and_the_judge_needs_only_it() -> None:
    import ast
    import sys

    root = Path(__file__).resolve().parents[2]

    def imported(path: Path) -> set[str]:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        return names

    for file in (root / "controller" / "eoldata").glob("*.py"):
        outside = {n for n in imported(file) if n.split(".")[0] not in sys.stdlib_module_names
                   and n != "__future__" and not n.startswith("controller.eoldata") and n != "common.errors"}
        assert outside == set(), f"{file.name} imports {outside}"
        tree = ast.parse(file.read_text(encoding="utf-8"))
        assert not any(isinstance(n, ast.Global) for n in ast.walk(tree)), f"{file.name} keeps state in a global"
    judge = root / "controller" / "judges" / "eol.py"
    assert "from controller import eoldata" in judge.read_text(encoding="utf-8")
    assert not any(n.startswith("controller.domain") for n in imported(judge))


def test_two_controllers_judge_with_their_own_dataset(tmp_path: Path, ds: eoldata.Dataset) -> None:
    doc = json.loads(json.dumps(ds.document))
    doc["generated"] = "2026-12-05"
    eol.store_dataset(tmp_path / "a", from_document(doc))
    a, b = eol.EolData(tmp_path / "a"), eol.EolData(tmp_path / "b")
    assert (a.dataset().version, a.dataset().origin) == ("2026-12-05", "imported")
    assert (b.dataset().version, b.dataset().origin) == (ds.version, "packaged")
    (tmp_path / "a" / "eol" / "products.json").write_text("{broken", encoding="utf-8")
    assert a.dataset().version == "2026-12-05", "a broken import never replaces the good dataset in use"
    assert a.problem.startswith("the imported EOL dataset is not used:")
    doc["generated"] = "2026-12-06"
    a.replace(from_document(doc))
    assert a.dataset().version == "2026-12-06" and a.problem == ""
