"""Pure ClamAV parts on real containers built by ``make_fixtures.sh`` (see fixtures/README.md)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from checks.av import NEVER_UPDATED_HOURS, AvDatabase, CvdHeaderError, parse_cvd_header
from checks.av.products.clamav import build_product, parse_clamav_version, select_databases
from tests.checks.av._fixtures import CLAMAV, UTC


def parse(name: str) -> AvDatabase:
    path = CLAMAV / name
    return parse_cvd_header(path.read_bytes(), path)


@pytest.mark.parametrize(
    ("name", "version", "signatures", "flevel", "built_at"),
    [
        ("main.cvd", "62", 1, 90, dt.datetime(2021, 9, 16, 12, 32, tzinfo=UTC)),
        ("bytecode.cvd", "335", 1, 90, dt.datetime(2024, 5, 7, 14, 55, tzinfo=UTC)),
        ("daily.cvd", "27450", 2, 213, dt.datetime(2024, 11, 18, 8, 42, tzinfo=UTC)),
        ("daily.cld", "27451", 3, 213, dt.datetime(2024, 11, 19, 8, 40, tzinfo=UTC)),
        ("newer/daily.cvd", "27452", 4, 213, dt.datetime(2024, 11, 20, 8, 45, tzinfo=UTC)),
    ],
)
def test_header_fields(name: str, version: str, signatures: int, flevel: int, built_at: dt.datetime) -> None:
    db = parse(name)
    assert db == AvDatabase(
        name=Path(name).stem,
        path=str(CLAMAV / name),
        version=version,
        signatures=signatures,
        functionality_level=flevel,
        built_at=built_at,
        builder="vigil-fixtures",
    )


def test_first_512_bytes_are_enough() -> None:
    data = (CLAMAV / "daily.cld").read_bytes()
    assert len(data) > 512  # header + tar
    assert parse_cvd_header(data[:512], "daily.cld") == parse_cvd_header(data, "daily.cld")


def test_cld_header_is_the_info_line_with_placeholders() -> None:
    # What freshclam writes after an incremental update: no MD5 or signature of the whole file.
    head = (CLAMAV / "daily.cld").read_bytes()[:512].decode("ascii").rstrip()
    assert head == "ClamAV-VDB:19 Nov 2024 08-40 +0000:27451:3:213:X:X:vigil-fixtures:1732005600"


def test_header_without_epoch_falls_back_to_the_text_time() -> None:
    # Headers written before ClamAV 0.93 end after the builder; the time text carries an offset.
    head = b"ClamAV-VDB:09 Mar 2008 12-22 +0100:6170:231834:26:0f0b7d2e1b8a4c3f9d6e5a4b3c2d1e0f:sig:ccordes"
    db = parse_cvd_header(head.ljust(512, b" "), "/var/lib/clamav/daily.cvd")
    assert (db.name, db.version, db.signatures, db.functionality_level, db.builder) == (
        "daily",
        "6170",
        231834,
        26,
        "ccordes",
    )
    assert db.built_at == dt.datetime(2008, 3, 9, 11, 22, tzinfo=UTC)


def test_epoch_wins_over_the_text_time() -> None:
    head = b"ClamAV-VDB:01 Jan 2020 00-00 +0000:1:1:1:X:X:b:1732005600".ljust(512)
    assert parse_cvd_header(head, "x.cvd").built_at == dt.datetime(2024, 11, 19, 8, 40, tzinfo=UTC)


def test_html_error_page_saved_as_database_raises() -> None:
    # What a broken mirror or captive portal leaves behind.
    page = b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head></html>\n".ljust(600)
    with pytest.raises(CvdHeaderError, match=r"/var/lib/clamav/daily\.cvd: not a ClamAV database") as info:
        parse_cvd_header(page, "/var/lib/clamav/daily.cvd")
    assert isinstance(info.value, ValueError)
    assert "freshclam" in str(info.value)


def test_empty_file_raises() -> None:
    with pytest.raises(CvdHeaderError, match="not a ClamAV database"):
        parse_cvd_header(b"", "main.cvd")


def test_truncated_database_raises() -> None:
    data = (CLAMAV / "daily.cvd").read_bytes()[:100]
    with pytest.raises(CvdHeaderError, match="truncated ClamAV database: 100 bytes"):
        parse_cvd_header(data, "daily.cvd")


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"ClamAV-VDB:18 Nov 2024 08-42 +0000:27450:2:213", "5 ':'-separated fields"),
        (b"ClamAV-VDB:18 Nov 2024 08-42 +0000:x27450:2:213:X:X:b:1", "version 'x27450' is not a number"),
        (b"ClamAV-VDB:18 Nov 2024 08-42 +0000:27450::213:X:X:b:1", "signature count '' is not a number"),
        # A ':' in the time shifts every field: caught as a non-numeric version.
        (b"ClamAV-VDB:18 Nov 2024 08:42 +0000:27450:2:213:X:X:b", r"version '42 \+0000' is not a number"),
        (b"ClamAV-VDB:2024-11-18:27450:2:213:X:X:b", "build time '2024-11-18'"),
        (b"ClamAV-VDB:18 Nov 2024 08-42 +0000:27450:2:213:X:X:b\xe9:1", "byte 52 is not ASCII"),
        (b"ClamAV-VDB:18 Nov 2024 08-42 +0000:27450:2:213:X:X:b:99999999999999999", "build time 99999999999999999 s"),
    ],
)
def test_damaged_header_raises(head: bytes, message: str) -> None:
    with pytest.raises(CvdHeaderError, match=message):
        parse_cvd_header(head.ljust(512), "daily.cvd")


def test_select_takes_the_higher_version_of_cld_and_cvd() -> None:
    cvd, cld, newer = parse("daily.cvd"), parse("daily.cld"), parse("newer/daily.cvd")
    assert select_databases([cvd, cld]) == [cld]
    assert select_databases([cld, cvd]) == [cld]
    assert select_databases([cld, newer]) == [newer]


def test_select_prefers_cvd_on_a_tie_like_libclamav() -> None:
    cvd = parse("daily.cvd")
    cld = AvDatabase("daily", "/db/daily.cld", cvd.version, 2, 213, cvd.built_at, "vigil-fixtures")
    assert select_databases([cld, cvd]) == [cvd]
    assert select_databases([cvd, cld]) == [cvd]


def test_select_keeps_one_per_name_sorted() -> None:
    dbs = [parse("main.cvd"), parse("daily.cvd"), parse("bytecode.cvd"), parse("daily.cld")]
    assert [(db.name, db.version) for db in select_databases(dbs)] == [
        ("bytecode", "335"),
        ("daily", "27451"),
        ("main", "62"),
    ]


NOW = dt.datetime(2024, 11, 20, 12, 0, tzinfo=UTC)


def test_build_product_from_a_full_set() -> None:
    dbs = select_databases([parse("main.cvd"), parse("daily.cld"), parse("bytecode.cvd")])
    product = build_product(dbs, "/var/lib/clamav", "1.4.3", {"clamd", "freshclam", "sshd"}, "linux", NOW)
    assert product.name == "clamav"
    assert product.engine_version == "1.4.3"
    assert product.signature_version == "27451"
    assert product.signature_built_at == dt.datetime(2024, 11, 19, 8, 40, tzinfo=UTC)
    assert product.signature_age_hours == 27.33  # 27 h 20 min
    assert (product.engine_running, product.updater_running, product.updater_known) == (True, True, True)
    assert product.realtime_protection is False  # clamd alone scans only on request
    assert product.database_dir == "/var/lib/clamav"
    assert product.databases == tuple(dbs)


def test_signature_time_is_the_newest_database_not_daily() -> None:
    # A bytecode.cvd fresher than daily (daily updates stalled) still makes the newest set.
    daily = parse("daily.cvd")
    bytecode = AvDatabase("bytecode", "/db/bytecode.cvd", "336", 1, 90, NOW - dt.timedelta(hours=2), "b")
    product = build_product([bytecode, daily], "/db", "", set(), "linux", NOW)
    assert product.signature_version == "27450"  # still daily's version, as the proto says
    assert product.signature_built_at == bytecode.built_at
    assert product.signature_age_hours == 2.0


def test_without_daily_the_newest_database_gives_the_version() -> None:
    product = build_product([parse("main.cvd"), parse("bytecode.cvd")], "/db", "", set(), "linux", NOW)
    assert product.signature_version == "335"


def test_no_databases_is_never_updated() -> None:
    product = build_product([], "", "1.4.3", {"clamd"}, "linux", NOW)
    assert product.signature_built_at is None
    assert product.signature_age_hours == NEVER_UPDATED_HOURS == 1e6
    assert product.signature_version == ""
    assert product.databases == ()


def test_onaccess_scanner_with_clamd_is_realtime_protection() -> None:
    assert build_product([], "", "", {"clamd", "clamonacc"}, "linux", NOW).realtime_protection
    assert not build_product([], "", "", {"clamonacc"}, "linux", NOW).realtime_protection


def test_updater_is_known_only_on_linux() -> None:
    assert not build_product([], "", "", {"freshclam"}, "darwin", NOW).updater_known
    assert build_product([], "", "", set(), "linux", NOW).updater_known


def test_future_build_time_gives_a_negative_age() -> None:
    db = AvDatabase("daily", "/db/daily.cvd", "1", 1, 1, NOW + dt.timedelta(hours=3), "b")
    assert build_product([db], "/db", "", set(), "linux", NOW).signature_age_hours == -3.0


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("ClamAV 1.4.3\n", "1.4.3"),
        ("ClamAV 1.0.7/27451/Tue Nov 19 08:40:00 2024\n", "1.0.7"),
        ("ClamAV 0.103.11/26879/Sun Apr  9 07:27:02 2023", "0.103.11"),
        ("ClamAV 1.5.0-rc\n", "1.5.0-rc"),
        ("clamd: unknown option\n", ""),
        ("", ""),
    ],
)
def test_parse_clamav_version(text: str, version: str) -> None:
    assert parse_clamav_version(text) == version
