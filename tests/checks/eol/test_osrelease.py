"""``parse_os_release`` and ``os_item`` on os-release files as the distributions ship them."""

from __future__ import annotations

import pytest

from checks.eol import EolItem, OsRelease, os_item, os_product, parse_os_release
from tests.checks.eol import _fixtures

# fixture -> (ID, VERSION_ID, endoflife.date product, item name)
EXPECTED: dict[str, tuple[str, str, str, str]] = {
    "debian-11": ("debian", "11", "debian", "debian 11"),
    "debian-12": ("debian", "12", "debian", "debian 12"),
    "debian-13": ("debian", "13", "debian", "debian 13"),
    "ubuntu-20.04": ("ubuntu", "20.04", "ubuntu", "ubuntu 20.04"),
    "ubuntu-22.04": ("ubuntu", "22.04", "ubuntu", "ubuntu 22.04"),
    "ubuntu-24.04": ("ubuntu", "24.04", "ubuntu", "ubuntu 24.04"),
    "rhel-8.7": ("rhel", "8.7", "rhel", "rhel 8.7"),
    "rhel-9.6": ("rhel", "9.6", "rhel", "rhel 9.6"),
    "rocky-9.3": ("rocky", "9.3", "rocky-linux", "rocky 9.3"),
    "almalinux-9.1": ("almalinux", "9.1", "almalinux", "almalinux 9.1"),
    "centos-8": ("centos", "8", "centos", "centos 8"),
    # Same ID as CentOS Linux, but its own (shorter) lifecycle: NAME tells them apart.
    "centos-stream-9": ("centos", "9", "centos-stream", "centos 9"),
    "sles-15-sp5": ("sles", "15.5", "sles", "sles 15.5"),
    "opensuse-leap-15.4": ("opensuse-leap", "15.4", "opensuse", "opensuse-leap 15.4"),
    # Rolling: not an endoflife.date product; the ID goes through and the controller's dataset lists it as rolling.
    "opensuse-tumbleweed-20230304": (
        "opensuse-tumbleweed",
        "20230304",
        "opensuse-tumbleweed",
        "opensuse-tumbleweed 20230304",
    ),
    "alpine-3.19.1": ("alpine", "3.19.1", "alpine-linux", "alpine 3.19.1"),
    "alpine-3.20.2": ("alpine", "3.20.2", "alpine-linux", "alpine 3.20.2"),
    "amzn-2": ("amzn", "2", "amazon-linux", "amzn 2"),
    "amzn-2023": ("amzn", "2023", "amazon-linux", "amzn 2023"),
}


def test_every_os_release_fixture_has_an_expectation() -> None:
    # The fields of these are checked here; every fixture's outcome is in os-release-outcomes.tsv.
    assert set(EXPECTED) <= set(_fixtures.names("os-release"))


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_os_release_maps_to_product_and_version(fixture: str) -> None:
    os_id, version_id, product, name = EXPECTED[fixture]
    osr = _fixtures.os_release(fixture)
    assert (osr.id, osr.version_id, os_product(osr)) == (os_id, version_id, product)
    assert os_item(osr) == EolItem(
        kind="os",
        name=name,
        product=product,
        version=version_id,
        source="os-release",
        lifecycle="os",
        lifecycle_reason="the operating system itself",
        product_like=item_like(osr),
    )


def item_like(osr: OsRelease) -> tuple[str, ...]:
    return os_item(osr).product_like


@pytest.mark.parametrize(("fixture", "like"), [
    ("centos-7", ("rhel",)),  # "rhel fedora": Fedora is not the parent of an Enterprise Linux major
    ("rocky-9.3", ("rhel", "centos")),
    ("raspbian-8", ("debian",)),
    ("pop-22.04", ("ubuntu", "debian")),
    ("linuxmint-21.3", ()),  # Mint 21 is not Ubuntu 21
    ("mageia-8", ()),  # Mageia 8 is not Fedora 8
    ("amzn-2", ()),  # Amazon Linux 2 is not RHEL 2
    ("rhel-9.6", ()),  # RHEL 9 is not Fedora 9
    ("opensuse-leap-15.4", ("suse",)),  # its own product (opensuse) is not repeated
])
def test_id_like_parents_are_reported_unless_numbering_differs(fixture: str, like: tuple[str, ...]) -> None:
    assert os_item(_fixtures.os_release(fixture)).product_like == like


def test_debian_12_fields() -> None:
    assert _fixtures.os_release("debian-12") == OsRelease(
        id="debian",
        version_id="12",
        id_like=(),
        pretty_name="Debian GNU/Linux 12 (bookworm)",
        version_codename="bookworm",
        name="Debian GNU/Linux",
    )


@pytest.mark.parametrize(
    ("fixture", "id_like", "major", "label", "vendor"),
    [
        ("ubuntu-22.04", ("debian",), "22", "Ubuntu 22.04", "Ubuntu"),
        ("rocky-9.3", ("rhel", "centos", "fedora"), "9", "Rocky Linux 9.3", "Rocky Linux"),
        ("almalinux-9.1", ("rhel", "centos", "fedora"), "9", "AlmaLinux 9.1", "AlmaLinux"),
        ("rhel-8.7", ("fedora",), "8", "RHEL 8.7", "Red Hat"),
        ("sles-15-sp5", ("suse",), "15", "SLES 15.5", "SUSE"),
        ("opensuse-leap-15.4", ("suse", "opensuse"), "15", "openSUSE Leap 15.4", "openSUSE"),
        ("amzn-2", ("centos", "rhel", "fedora"), "2", "Amazon Linux 2", "Amazon Linux"),
        ("alpine-3.20.2", (), "3", "Alpine 3.20.2", "Alpine"),
    ],
)
def test_family_and_labels_used_in_reasons(
    fixture: str, id_like: tuple[str, ...], major: str, label: str, vendor: str
) -> None:
    osr = _fixtures.os_release(fixture)
    assert (osr.id_like, osr.major, osr.label, osr.vendor) == (id_like, major, label, vendor)


def test_comment_in_tumbleweed_is_ignored() -> None:
    # Tumbleweed ships '# VERSION="20230304"': a commented-out key must not be read.
    text = _fixtures.text("os-release/opensuse-tumbleweed-20230304")
    assert '# VERSION="20230304"' in text
    assert parse_os_release(text).pretty_name == "openSUSE Tumbleweed"


def test_shell_quoting_and_escapes() -> None:
    osr = parse_os_release(
        "# a comment\n"
        "\n"
        "ID='my-os'\n"
        'PRETTY_NAME="My \\"quoted\\" OS \\$HOME"\n'
        "VERSION_ID=1.0\n"
        "not a key value line\n"
        "BAD KEY=x\n"
        'ID_LIKE="Debian  Ubuntu"\n'
    )
    assert osr == OsRelease(
        id="my-os", version_id="1.0", id_like=("debian", "ubuntu"), pretty_name='My "quoted" OS $HOME'
    )


def test_unbalanced_quote_keeps_the_value() -> None:
    assert parse_os_release('ID=debian\nPRETTY_NAME="Broken\n').pretty_name == "Broken"


def test_testing_without_version_id_is_named_by_codename() -> None:
    # Debian testing/sid ships no VERSION_ID: the item still has a unique name and an empty version.
    osr = parse_os_release(
        'PRETTY_NAME="Debian GNU/Linux trixie/sid"\nNAME="Debian GNU/Linux"\nVERSION_CODENAME=trixie\nID=debian\n'
    )
    item = os_item(osr)
    assert (item.name, item.product, item.version) == ("debian trixie", "debian-testing", "")


def test_lmde_is_not_taken_for_linux_mint() -> None:
    # LMDE 6 says ID=linuxmint but numbers its releases from 1: Mint 6 ended in 2010, LMDE 6 did not.
    assert os_item(_fixtures.os_release("lmde-6")).product == "lmde"


def test_empty_file_gives_a_named_item() -> None:
    assert os_item(parse_os_release("")).name == "unknown os"
