"""Defender's ``Get-MpComputerStatus | ConvertTo-Json``, on fixtures written in the documented format.

They are not captured output (no Windows here): see fixtures/README.md for what they follow.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from checks.av import NEVER_UPDATED_HOURS, AvProduct, MpStatusError, ProbeError, parse_mpcomputerstatus
from checks.av.products.defender import product_from_powershell, read_captured
from tests.checks.av._fixtures import UTC, defender

# A day after the healthy host's signatures were installed (2024-06-04 08:06:27 PDT).
NOW = dt.datetime(2024, 6, 5, 15, 6, 27, tzinfo=UTC)


def parse(name: str, now: dt.datetime = NOW) -> AvProduct | None:
    return parse_mpcomputerstatus(read_captured(str(defender(name))), now)


HEALTHY = AvProduct(
    name="windows-defender",
    engine_version="1.1.24050.5",
    signature_version="1.413.102.0",
    signature_built_at=dt.datetime(2024, 6, 4, 15, 6, 27, tzinfo=UTC),
    signature_age_hours=24.0,
    engine_running=True,
    updater_running=False,
    updater_known=False,
    realtime_protection=True,
)


def test_fixtures_are_in_each_shells_layout() -> None:
    ps51 = defender("ps51_healthy").read_text()
    ps7 = defender("ps7_healthy").read_text()
    assert '"AntivirusSignatureLastUpdated":  "\\/Date(1717513587000)\\/"' in ps51
    assert '"AntivirusSignatureLastUpdated": "2024-06-04T08:06:27-07:00"' in ps7
    for text in (ps51, ps7):
        data = json.loads(text)
        assert data["CimSystemProperties"]["ClassName"] == "MSFT_MpComputerStatus"
        assert 'AMEngineVersion = "1.1.24050.5"' in data["CimInstanceProperties"]


@pytest.mark.parametrize("name", ["ps51_healthy", "ps7_healthy"])
def test_healthy(name: str) -> None:
    assert parse(name) == HEALTHY


@pytest.mark.parametrize("name", ["ps51_stale", "ps7_stale"])
def test_stale(name: str) -> None:
    product = parse(name)
    assert product is not None
    assert product.engine_version == "1.1.24030.4"
    assert product.signature_version == "1.411.287.0"
    # Installed 2024-05-12 05:14:09 +02:00: 24 days 11 h 52 min 18 s before NOW.
    assert product.signature_built_at is not None
    assert product.signature_built_at.replace(microsecond=0) == dt.datetime(2024, 5, 12, 3, 14, 9, tzinfo=UTC)
    assert product.signature_age_hours == 587.87
    assert product.realtime_protection is False
    assert product.engine_running is True


def test_ps7_keeps_fractional_seconds_of_seven_digits() -> None:
    product = parse("ps7_stale")
    assert product is not None and product.signature_built_at is not None
    assert product.signature_built_at.microsecond == 523456  # .5234567: .NET ticks, cut to microseconds


def test_service_off_has_no_engine_and_no_signatures() -> None:
    assert parse("ps51_service_off") == AvProduct(
        name="windows-defender",
        engine_version="",  # "0.0.0.0"
        signature_version="",  # "0.0.0.0"
        signature_built_at=None,
        signature_age_hours=NEVER_UPDATED_HOURS,  # AntivirusSignatureAge 4294967295, no date
        engine_running=False,
        realtime_protection=False,
    )


def _edited(name: str, **changes: object) -> str:
    data = json.loads(read_captured(str(defender(name))))
    data.update(changes)
    return json.dumps(data)


def test_age_falls_back_to_whole_days() -> None:
    product = parse_mpcomputerstatus(
        _edited("ps51_healthy", AntivirusSignatureLastUpdated=None, AntivirusSignatureAge=3), NOW
    )
    assert product is not None
    assert (product.signature_built_at, product.signature_age_hours) == (None, 72.0)


def test_filetime_zero_date_means_never() -> None:
    product = parse_mpcomputerstatus(
        _edited("ps51_healthy", AntivirusSignatureLastUpdated="/Date(-11644473600000)/", AntivirusSignatureAge=None),
        NOW,
    )
    assert product is not None
    assert (product.signature_built_at, product.signature_age_hours) == (None, NEVER_UPDATED_HOURS)


def test_ms_date_with_offset_is_still_utc_milliseconds() -> None:
    text = _edited("ps51_healthy", AntivirusSignatureLastUpdated="/Date(1717513587000+0200)/")
    product = parse_mpcomputerstatus(text, NOW)
    assert product is not None and product.signature_built_at == HEALTHY.signature_built_at


@pytest.mark.parametrize(
    ("changes", "engine_running"),
    [
        ({"AMServiceEnabled": True, "AntivirusEnabled": True}, True),
        ({"AMServiceEnabled": True, "AntivirusEnabled": False}, False),
        ({"AMServiceEnabled": False, "AntivirusEnabled": True}, False),
        ({"AMServiceEnabled": None, "AntivirusEnabled": True}, False),
    ],
)
def test_engine_runs_only_when_service_and_antivirus_are_enabled(
    changes: dict[str, object], engine_running: bool
) -> None:
    product = parse_mpcomputerstatus(_edited("ps7_healthy", **changes), NOW)
    assert product is not None and product.engine_running is engine_running


@pytest.mark.parametrize("text", ["", "  \r\n", "null", "[]", "\ufeff"])
def test_empty_output_is_no_product(text: str) -> None:
    assert parse_mpcomputerstatus(text, NOW) is None


def test_a_list_of_one_status_is_read() -> None:
    text = "[" + read_captured(str(defender("ps7_healthy"))) + "]"
    assert parse_mpcomputerstatus(text, NOW) == HEALTHY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Get-MpComputerStatus : Access denied", "not JSON"),
        ('{"Name": "WinDefend", "Status": 4}', "not Get-MpComputerStatus output"),
        ('"text"', "not Get-MpComputerStatus output"),
    ],
)
def test_other_output_raises(text: str, message: str) -> None:
    with pytest.raises(MpStatusError, match=message) as info:
        parse_mpcomputerstatus(text, NOW)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", ["6/4/2024 8:06:27 AM", 1717513587000])
def test_unreadable_date_names_the_field(value: object) -> None:
    with pytest.raises(MpStatusError, match="AntivirusSignatureLastUpdated"):
        parse_mpcomputerstatus(_edited("ps51_healthy", AntivirusSignatureLastUpdated=value), NOW)


def test_utf16_capture_from_windows_powershell_redirect(tmp_path) -> None:
    # `Get-MpComputerStatus | ConvertTo-Json > status.json` in 5.1 writes UTF-16 LE with a BOM.
    path = tmp_path / "status.json"
    path.write_bytes(defender("ps51_healthy").read_text().encode("utf-16"))
    assert parse_mpcomputerstatus(read_captured(str(path)), NOW) == HEALTHY


def test_missing_capture_file_is_a_probe_error(tmp_path) -> None:
    with pytest.raises(ProbeError, match=r"cannot read defender_json file .*missing\.json"):
        read_captured(str(tmp_path / "missing.json"))


def test_powershell_success_is_parsed() -> None:
    stdout = read_captured(str(defender("ps51_healthy")))
    assert product_from_powershell(0, stdout, "", NOW) == HEALTHY


def test_stopped_service_is_reported_not_running() -> None:
    stderr = (
        "Get-MpComputerStatus : Operation failed with the following error: 0x800106ba\r\n"
        "At line:1 char:1\r\n"
        "    + CategoryInfo          : NotSpecified: (MSFT_MpComputerStatus:ROOT\\Microsoft\\...pComputerStatus) "
        "[Get-MpComputerStatus], CimException\r\n"
    )
    assert product_from_powershell(1, "", stderr, NOW) == AvProduct(name="windows-defender")


def test_missing_cmdlet_is_no_defender() -> None:
    stderr = (
        "Get-MpComputerStatus : The term 'Get-MpComputerStatus' is not recognized as the name of a cmdlet, "
        "function, script file, or operable program.\r\n"
        "    + FullyQualifiedErrorId : CommandNotFoundException\r\n"
    )
    assert product_from_powershell(1, "", stderr, NOW) is None


def test_other_failure_raises_with_the_first_line() -> None:
    with pytest.raises(ProbeError, match=r"failed \(exit 1\): Get-MpComputerStatus : Access denied"):
        product_from_powershell(1, "", "\r\nGet-MpComputerStatus : Access denied\r\nAt line:1\r\n", NOW)
    with pytest.raises(ProbeError, match="no error output"):
        product_from_powershell(5, "", "", NOW)
