"""Network devices in the EOL dataset: a vendor's version string mapped to a product and cycle
(``controller.eoldata.devices``), and every device fixture's version placed in the packaged dataset.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from controller import eoldata
from controller.eoldata import DeviceRelease, device_match, device_product
from controller.eoldata.dataset import dump_document, read_dataset

TODAY = dt.date(2026, 12, 4)
FIXTURES = Path(__file__).resolve().parents[1] / "checks" / "device" / "fixtures"
DEVICE_PRODUCTS = ("cisco-ios", "cisco-ios-xe", "cisco-nx-os", "junos", "fortios", "panos", "arista-eos")

# platform, version as printed, product, cycle key
MAPPED = [
    # Cisco IOS (classic): the major.minor of A.B(C)train
    ("cisco_ios", "15.2(4)E", "cisco-ios", "15.2"),
    ("cisco_ios", "15.2(4)E10", "cisco-ios", "15.2"),
    ("cisco_ios", "15.2(7)E8", "cisco-ios", "15.2"),
    ("cisco_ios", "12.2(55)SE12", "cisco-ios", "12.2"),
    ("cisco_ios", "12.1(22)EA14", "cisco-ios", "12.1"),
    ("cisco_ios", "15.4(3)M10", "cisco-ios", "15.4"),
    ("cisco_ios", "12.4(24)T8", "cisco-ios", "12.4"),
    ("cisco_ios", "15.9(3)M6", "cisco-ios", "15.9"),
    ("cisco_ios", "15.0(2)SE11", "cisco-ios", "15.0"),
    ("cisco_ios", "12.4(25f)", "cisco-ios", "12.4"),
    ("cisco_ios", "15.1(4)M12a", "cisco-ios", "15.1"),
    ("cisco_xe", "15.8(3)M9", "cisco-ios", "15.8"),
    # Cisco IOS-XE (either platform name: they share parsers)
    ("cisco_xe", "17.3.4a", "cisco-ios-xe", "17.3"),
    ("cisco_xe", "16.9.5", "cisco-ios-xe", "16.9"),
    ("cisco_xe", "17.9.4a", "cisco-ios-xe", "17.9"),
    ("cisco_xe", "16.12.4", "cisco-ios-xe", "16.12"),
    ("cisco_xe", "17.09.04a", "cisco-ios-xe", "17.9"),
    ("cisco_xe", "03.16.08.S", "cisco-ios-xe", "3.16"),
    ("cisco_xe", "03.16.05.S", "cisco-ios-xe", "3.16"),
    ("cisco_xe", "03.06.06E", "cisco-ios-xe", "3.6"),
    ("cisco_ios", "17.12.1", "cisco-ios-xe", "17.12"),
    ("cisco_ios", "16.12.1s", "cisco-ios-xe", "16.12"),
    # Cisco NX-OS
    ("cisco_nxos", "7.0(3)I4(3)", "cisco-nx-os", "7.0"),
    ("cisco_nxos", "7.0(3)I7(9)", "cisco-nx-os", "7.0"),
    ("cisco_nxos", "9.3(8)", "cisco-nx-os", "9.3"),
    ("cisco_nxos", "9.3(10)", "cisco-nx-os", "9.3"),
    ("cisco_nxos", "10.2(5)", "cisco-nx-os", "10.2"),
    ("cisco_nxos", "10.3(3)", "cisco-nx-os", "10.3"),
    ("cisco_nxos", "10.4(1)F", "cisco-nx-os", "10.4"),
    ("cisco_nxos", "8.4(2)", "cisco-nx-os", "8.4"),
    ("cisco_nxos", "6.0(2)N2(7)", "cisco-nx-os", "6.0"),
    ("cisco_nxos", "5.2(1)N1(9a)", "cisco-nx-os", "5.2"),
    # Cisco ASA
    ("cisco_asa", "9.8(4)10", "cisco-asa", "9.8"),
    ("cisco_asa", "9.16(3)19", "cisco-asa", "9.16"),
    ("cisco_asa", "8.4(7)30", "cisco-asa", "8.4"),
    ("cisco_asa", "9.1(7)32", "cisco-asa", "9.1"),
    ("cisco_asa", "9.6(4)45", "cisco-asa", "9.6"),
    ("cisco_asa", "9.12(4)37", "cisco-asa", "9.12"),
    ("cisco_asa", "9.18(2)", "cisco-asa", "9.18"),
    ("cisco_asa", "9.20(1)5", "cisco-asa", "9.20"),
    # Juniper Junos: A.B of R releases, A.B.X for an X train
    ("juniper_junos", "19.4R3-S1.3", "junos", "19.4"),
    ("juniper_junos", "21.4R3-S5", "junos", "21.4"),
    ("juniper_junos", "21.4R3-S2.3", "junos", "21.4"),
    ("juniper_junos", "12.3R12.4", "junos", "12.3"),
    ("juniper_junos", "18.4R2-S3", "junos", "18.4"),
    ("juniper_junos", "17.3R3-S3.3", "junos", "17.3"),
    ("juniper_junos", "20.4R3.8", "junos", "20.4"),
    ("juniper_junos", "12.3X48-D105", "junos", "12.3.48"),
    ("juniper_junos", "12.1X44-D45.2", "junos", "12.1.44"),
    ("juniper_junos", "15.1X49-D170.4", "junos", "15.1.49"),
    ("juniper_junos", "15.1F6", "junos", "15.1"),
    ("juniper_junos", "21.4R3-S5.11-EVO", "junos", "21.4"),
    # FortiOS
    ("fortinet", "7.0.13", "fortios", "7.0"),
    ("fortinet", "v7.0.13", "fortios", "7.0"),
    ("fortinet", "v6.4.9", "fortios", "6.4"),
    ("fortinet", "v7.2.5,build1517 (GA.F)", "fortios", "7.2"),
    ("fortinet", "v6.4.9-build1966", "fortios", "6.4"),
    ("fortinet", "7.0.13 build0566", "fortios", "7.0"),
    ("fortinet", "5.6.3", "fortios", "5.6"),
    ("fortinet", "7.6.0", "fortios", "7.6"),
    ("fortinet", "6.0.17", "fortios", "6.0"),
    # PAN-OS
    ("paloalto_panos", "10.1.6-h6", "panos", "10.1"),
    ("paloalto_panos", "9.1.0", "panos", "9.1"),
    ("paloalto_panos", "9.1.16", "panos", "9.1"),
    ("paloalto_panos", "11.0.2-h2", "panos", "11.0"),
    ("paloalto_panos", "8.1.21", "panos", "8.1"),
    ("paloalto_panos", "10.0.11-h1", "panos", "10.0"),
    ("paloalto_panos", "10.2.4-h4", "panos", "10.2"),
    ("paloalto_panos", "11.1.0", "panos", "11.1"),
    ("paloalto_panos", "10.1.14-h20", "panos", "10.1"),
    # Arista EOS
    ("arista_eos", "4.28.3M", "arista-eos", "4.28"),
    ("arista_eos", "4.24.2.1F", "arista-eos", "4.24"),
    ("arista_eos", "4.30.1F", "arista-eos", "4.30"),
    ("arista_eos", "4.24.3M", "arista-eos", "4.24"),
    ("arista_eos", "4.27.0F", "arista-eos", "4.27"),
    ("arista_eos", "4.23.2.1F", "arista-eos", "4.23"),
    ("arista_eos", "4.21.1.1F", "arista-eos", "4.21"),
    ("arista_eos", "4.25.4M", "arista-eos", "4.25"),
    ("arista_eos", "4.30.1F-32308478.4301F", "arista-eos", "4.30"),
]


@pytest.mark.parametrize(("platform", "version", "product", "cycle"), MAPPED)
def test_version_maps_to_product_and_cycle(platform: str, version: str, product: str, cycle: str) -> None:
    release = device_product(platform, version)
    assert release is not None, version
    assert (release.product, release.cycle) == (product, cycle)


def test_every_platform_has_at_least_eight_versions() -> None:
    per: dict[str, int] = {}
    for platform, *_ in MAPPED:
        per[platform] = per.get(platform, 0) + 1
    for platform in ("cisco_ios", "cisco_xe", "cisco_nxos", "cisco_asa", "juniper_junos", "fortinet",
                     "paloalto_panos", "arista_eos"):
        assert per.get(platform, 0) >= 8, platform


def test_train_names_the_vendor_train() -> None:
    assert device_product("cisco_ios", "15.2(7)E8") == DeviceRelease("cisco-ios", "15.2", "15.2(x)E")
    assert device_product("cisco_nxos", "7.0(3)I7(9)") == DeviceRelease("cisco-nx-os", "7.0", "7.0(3)I7")
    assert device_product("juniper_junos", "12.3X48-D105") == DeviceRelease("junos", "12.3.48", "12.3X48")
    assert device_product("cisco_xe", "03.16.05.S") == DeviceRelease("cisco-ios-xe", "3.16", "3.16S")


@pytest.mark.parametrize(("platform", "version"), [
    ("linux", "12"), ("linux", "22.04"), ("cisco_iosxr", "7.5.2"), ("", "15.2(4)E"), ("CISCO", "15.2(4)E"),
    ("cisco_ios", ""), ("cisco_ios", "   "), ("cisco_ios", "15.2(20200924:215240)"), ("cisco_ios", "unknown"),
    ("cisco_ios", "15.2(4"), ("cisco_ios", "15.2(4)E" + "9" * 200), ("cisco_xe", "17"), ("cisco_xe", "17.3"),
    ("cisco_nxos", "9.3"), ("cisco_nxos", "9.3(8"), ("cisco_nxos", "NX-OS"), ("cisco_asa", "9.8.4"),
    ("cisco_asa", "9.8(4)x"), ("juniper_junos", "19.4"), ("juniper_junos", "20.1I20190912"),
    ("juniper_junos", "19.1B1"), ("fortinet", "7"), ("fortinet", "7.0.x"), ("fortinet", "FortiOS"),
    ("paloalto_panos", "9.0-XFR"), ("paloalto_panos", "10.1"), ("arista_eos", "4.28"), ("arista_eos", "4.28.3Q"),
    ("arista_eos", "\x00\x01"), ("fortinet", "v" * 10_000), ("juniper_junos", "١٩.٤R3"),
])
def test_malformed_or_unknown_gives_none_never_raises(ds: eoldata.Dataset, platform: str, version: str) -> None:
    assert device_product(platform, version) is None
    found = device_match(ds, platform, version, TODAY)
    assert found.cycle is None and found.reason


@pytest.mark.parametrize("junk", [None, 42, b"15.2(4)E", ["15.2(4)E"]])
def test_non_text_gives_none(junk: object) -> None:
    assert device_product("cisco_ios", junk) is None  # type: ignore[arg-type]
    assert device_product(junk, "15.2(4)E") is None  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ds() -> eoldata.Dataset:
    return eoldata.packaged_dataset()


def test_packaged_dataset_loads_validates_and_keeps_its_layout(ds: eoldata.Dataset) -> None:
    again = read_dataset(eoldata.PACKAGED)
    assert again.products == ds.products
    for product in DEVICE_PRODUCTS:
        assert ds.products[product], product
        assert ds.notes.get(product), product  # provenance for every device product
    # Cisco ASA has no sourced dates: not a product of the dataset (its gap is told in docs/eol-dataset.md).
    assert "cisco-asa" not in ds.products
    assert set(ds.notes) == set(ds.products)
    # One cycle per line, as dump_document writes it: a dataset diff reads as one line per cycle.
    assert eoldata.PACKAGED.read_text(encoding="utf-8") == dump_document(ds.document)


def test_cycles_found_and_judged(ds: eoldata.Dataset) -> None:
    cases = [
        ("cisco_xe", "17.3.4a", "17.3", "2024-07-31"),
        ("cisco_ios", "15.9(3)M6", "15.9", "2029-07-27"),
        ("cisco_nxos", "9.3(8)", "9.3", "2026-04-07"),
        ("fortinet", "v7.0.13", "7.0", "2025-09-30"),
        ("paloalto_panos", "10.1.6-h6", "10.1", "2024-12-01"),
        ("arista_eos", "4.28.3M", "4.28", "2025-04-18"),
    ]
    for platform, version, cycle, eol in cases:
        found = device_match(ds, platform, version, TODAY)
        assert found.cycle is not None, (platform, version, found.reason)
        assert found.cycle.cycle == cycle
        assert isinstance(found.cycle.eol, dt.date) and found.cycle.eol.isoformat() == eol
    junos = device_match(ds, "juniper_junos", "19.4R3-S1.3", TODAY)
    assert junos.cycle is not None and junos.cycle.cycle == "19.4" and junos.cycle.eol is True


def test_x_train_is_never_judged_by_the_mainline_release(ds: eoldata.Dataset) -> None:
    found = device_match(ds, "juniper_junos", "15.1X49-D170.4", TODAY)
    assert found.cycle is None
    mainline = device_match(ds, "juniper_junos", "15.1R7-S6", TODAY)
    assert mainline.cycle is not None and mainline.cycle.cycle == "15.1"
    x53 = device_match(ds, "juniper_junos", "15.1X53-D59.4", TODAY)
    assert x53.cycle is not None and x53.cycle.cycle == "15.1.53"


def test_older_than_every_cycle(ds: eoldata.Dataset) -> None:
    # FortiOS, PAN-OS and EOS trains come out in order: older than an ended oldest cycle has ended.
    old = device_match(ds, "fortinet", "5.6.3", TODAY)
    assert old.cycle is not None and old.cycle.cycle == "before 6.0" and old.cycle.ended(TODAY)
    eos = device_match(ds, "arista_eos", "4.21.1.1F", TODAY)
    assert eos.cycle is not None and eos.cycle.cycle == "before 4.26"
    # IOS trains do not: 15.2(7)E is not "before 15.8" (it outlives 15.8(3)M); unknown instead.
    ios = device_match(ds, "cisco_ios", "15.2(7)E8", TODAY)
    assert ios.cycle is None and "15.2(x)E" in ios.reason
    nxos = device_match(ds, "cisco_nxos", "8.4(2)", TODAY)
    assert nxos.cycle is None


def test_newer_than_every_cycle_is_unknown(ds: eoldata.Dataset) -> None:
    found = device_match(ds, "paloalto_panos", "13.0.1", TODAY)
    assert found.cycle is None and "newer than every panos cycle" in found.reason


# Fixture versions whose cycle the packaged dataset cannot place, and why (see docs/eol-dataset.md).
KNOWN_GAPS = {
    ("cisco_ios", "15.4(3)M10"): "IOS 15.4(x)M: no sourced dates (endoflife.date lists only 15.8, 15.9)",
    ("cisco_ios", "12.1(22)EA14"): "IOS 12.1(x)EA: no sourced dates",
    ("cisco_ios", "15.2(4)E10"): "IOS 15.2(x)E: no sourced dates",
    ("cisco_ios", "15.2(7)E8"): "IOS 15.2(x)E: no sourced dates",
    ("cisco_ios", "15.0(2)SE11"): "IOS 15.0(x)SE: no sourced dates",
    ("cisco_ios", "12.4(24)T8"): "IOS 12.4(x)T: no sourced dates",
    ("cisco_ios", "15.7(3)M5"): "IOS 15.7(x)M: no sourced dates",
    ("cisco_ios", "15.2(20200924:215240)"): "an experimental IOSvL2 build: no release train to map",
    ("cisco_nxos", "7.0(3)I7(9)"): "NX-OS 7.0(3)I7: not on endoflife.date's page",
    ("cisco_nxos", "7.0(3)I4(3)"): "NX-OS 7.0(3)I4: not on endoflife.date's page",
    ("cisco_nxos", "6.0(2)N2(7)"): "NX-OS 6.0(2)N2 (Nexus 5000): not on endoflife.date's page",
    ("cisco_nxos", "8.4(2)"): "NX-OS 8.4 (Nexus 7000): not on endoflife.date's page",
    ("cisco_xe", "03.06.06E"): "IOS-XE 3.6E: not on endoflife.date's page (starts at 16.12)",
    ("cisco_xe", "03.16.05.S"): "IOS-XE 3.16S: not on endoflife.date's page (starts at 16.12)",
    ("cisco_xe", "16.9.5"): "IOS-XE 16.9: not on endoflife.date's page (starts at 16.12)",
    ("cisco_xe", "16.9.4"): "IOS-XE 16.9: not on endoflife.date's page (starts at 16.12)",
    ("cisco_asa", "8.4(7)30"): "Cisco ASA: no sourced dates at all",
    ("cisco_asa", "9.8(4)10"): "Cisco ASA: no sourced dates at all",
    ("cisco_asa", "9.1(7)32"): "Cisco ASA: no sourced dates at all",
    ("cisco_asa", "9.6(4)45"): "Cisco ASA: no sourced dates at all",
    ("cisco_asa", "9.12(4)37"): "Cisco ASA: no sourced dates at all",
    ("cisco_asa", "9.16(3)19"): "Cisco ASA: no sourced dates at all",
    ("juniper_junos", "12.3R12.4"): "Junos 12.3: older than Juniper's EOS-release list, never guessed ended",
    ("juniper_junos", "21.4R3-S2.3"): "Junos 21.4 (EEOL): not on Juniper's EOS-release list, no dates sourced",
    ("juniper_junos", "12.1X44-D45.2"): "Junos 12.1X44 (SRX): no sourced dates",
    ("juniper_junos", "15.1X49-D170.4"): "Junos 15.1X49 (SRX): no sourced dates",
}


def _fixture_versions() -> list[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for path in sorted(FIXTURES.glob("*/*/*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        version = doc.get("version") if isinstance(doc, dict) else None
        if isinstance(version, str):
            out.add((path.parent.parent.name, version))
    return sorted(out)


def test_fixture_versions_are_found() -> None:
    assert len(_fixture_versions()) >= 50  # the fixtures are there (a moved folder must not pass silently)


@pytest.mark.parametrize(("platform", "version"), _fixture_versions())
def test_every_fixture_version_is_placed_or_a_known_gap(ds: eoldata.Dataset, platform: str, version: str) -> None:
    if platform == "linux":  # a host: os-release judges it, not this mapping
        assert device_product(platform, version) is None
        return
    found = device_match(ds, platform, version, TODAY)
    if (platform, version) in KNOWN_GAPS:
        assert found.cycle is None, f"{platform} {version} is placed now: drop it from KNOWN_GAPS"
        assert found.reason
        return
    release = device_product(platform, version)
    assert release is not None and release.product in ds.products, (platform, version)
    assert found.cycle is not None, (platform, version, found.reason)
