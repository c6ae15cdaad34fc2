"""Package databases parsed, mapped to products, and the lifecycle decision for each: vendor-patched
packages follow the OS ("os"), third-party and left-behind ones follow upstream ("upstream")."""

from __future__ import annotations

import pytest

from checks.eol import (
    EolItem,
    EolResult,
    InstalledPackage,
    OsRelease,
    package_items,
    parse_apk_installed,
    parse_dpkg_status,
    parse_rpm_qa,
    parse_rpm_qf,
    upstream_version,
)
from proto.vigil.v1 import eol_pb2
from tests.checks.eol import _fixtures

OS, UP = "os", "upstream"


def items(fixture: str, os_release: str) -> dict[str, EolItem]:
    kind, _, _ = fixture.partition("/")
    text = _fixtures.text(fixture)
    parse = {"dpkg": parse_dpkg_status, "rpm": parse_rpm_qa, "apk": parse_apk_installed}[kind]
    found = package_items(parse(text), _fixtures.os_release(os_release))
    by_name = {i.name: i for i in found}
    assert len(by_name) == len(found), "item names must be unique: they are finding subjects"
    return by_name


def summary(found: dict[str, EolItem]) -> dict[str, tuple[str, str, str]]:
    return {name: (i.product, i.version, i.lifecycle) for name, i in found.items()}


# --- dpkg ------------------------------------------------------------------------------------------


def test_dpkg_status_of_this_host_parses_every_installed_stanza() -> None:
    packages = parse_dpkg_status(_fixtures.text("dpkg/debian12-host.status"))
    assert [p.name for p in packages] == [
        "base-files", "libpq5", "libssl3", "nodejs", "openjdk-17-jre-headless", "openssh-client", "openssl",
        "osslsigncode", "postgresql", "postgresql-15", "python3", "python3.11", "python3.11-minimal",
    ]  # fmt: skip
    by_name = {p.name: p for p in packages}
    assert by_name["nodejs"] == InstalledPackage(
        manager="dpkg",
        name="nodejs",
        version="20.20.2-1nodesource1+repack1",
        source="",
        maintainer="NodeSource Support <support@nodesource.com>",
    )
    assert by_name["libssl3"].source == "openssl"
    # "Source: python3-defaults (3.11.2-1)": the version in parentheses is not part of the name.
    assert by_name["python3"].source == "python3-defaults"


def test_debian12_host_vendor_patched_are_os_and_nodesource_is_upstream() -> None:
    found = items("dpkg/debian12-host.status", "debian-12")
    assert summary(found) == {
        "nodejs 20.20.2 (dpkg:nodejs)": ("nodejs", "20.20.2", UP),
        "openjdk 17.0.15 (dpkg:openjdk-17-jre-headless)": ("openjdk", "17.0.15", OS),
        "openssh 9.2p1 (dpkg:openssh-client)": ("openssh", "9.2p1", OS),
        # openssl and libssl3 come from one source package: one item, named after the preferred binary.
        "openssl 3.0.19 (dpkg:openssl)": ("openssl", "3.0.19", OS),
        "postgresql 15.18 (dpkg:postgresql-15)": ("postgresql", "15.18", OS),
        "python 3.11.2 (dpkg:python3.11)": ("python", "3.11.2", OS),
    }
    openssl = found["openssl 3.0.19 (dpkg:openssl)"]
    assert openssl.source == "dpkg:openssl"
    assert openssl.cycle == ""  # the controller's to fill
    assert openssl.lifecycle_reason == (
        "shipped and patched by Debian, which backports fixes into openssl 3.0.19-1~deb12u2: "
        "follows Debian 12's lifecycle, not upstream openssl's"
    )
    assert found["nodejs 20.20.2 (dpkg:nodejs)"].lifecycle_reason == (
        "from NodeSource (deb.nodesource.com), not Debian: nodejs 20.20.2-1nodesource1+repack1 gets no fixes "
        "from the OS vendor, so upstream nodejs's lifecycle applies"
    )


def test_debian12_servers_from_debian_follow_debian() -> None:
    assert summary(items("dpkg/debian12-servers.status", "debian-12")) == {
        "apache-http-server 2.4.71 (dpkg:apache2-bin)": ("apache-http-server", "2.4.71", OS),
        "mariadb 10.11.19 (dpkg:mariadb-server-core)": ("mariadb", "10.11.19", OS),
        "nginx 1.22.1 (dpkg:nginx)": ("nginx", "1.22.1", OS),
        "openssh 9.2p1 (dpkg:openssh-server)": ("openssh", "9.2p1", OS),
        "php 8.2.35 (dpkg:php8.2-cli)": ("php", "8.2.35", OS),
        "redis 7.0.15 (dpkg:redis-server)": ("redis", "7.0.15", OS),
    }


def test_debian12_third_party_repositories_follow_upstream() -> None:
    found = items("dpkg/debian12-third-party.status", "debian-12")
    assert summary(found) == {
        "eclipse-temurin 17.0.10.0.0 (dpkg:temurin-17-jdk)": ("eclipse-temurin", "17.0.10.0.0", UP),
        "mariadb 10.11.6 (dpkg:mariadb-server)": ("mariadb", "10.11.6", UP),
        "mysql 8.0.36 (dpkg:mysql-community-server)": ("mysql", "8.0.36", UP),
        "nginx 1.24.0 (dpkg:nginx)": ("nginx", "1.24.0", UP),
        "openssl 1.1.1w (dpkg:libssl1.1)": ("openssl", "1.1.1w", UP),
        "php 8.3.3 (dpkg:php8.3-cli)": ("php", "8.3.3", UP),
        "postgresql 16.1 (dpkg:postgresql-16)": ("postgresql", "16.1", UP),
        # redis-server is "deinstall ok config-files": removed, so not reported.
    }
    reasons = {name.split(" ")[0]: i.lifecycle_reason for name, i in found.items()}
    # PGDG and deb.sury.org keep Debian's Maintainer field, MariaDB and MySQL put "deb12"/"debian12" in
    # the version: the third-party signs must win over the Debian-looking ones.
    assert reasons["postgresql"].startswith("from apt.postgresql.org (PGDG), not Debian:")
    assert reasons["php"].startswith("from deb.sury.org (Ondřej Surý's PHP packages), not Debian:")
    assert reasons["mariadb"].startswith("from mariadb.org's repository, not Debian:")
    assert reasons["mysql"].startswith("from repo.mysql.com (Oracle's MySQL APT repository), not Debian:")
    assert reasons["nginx"].startswith("from nginx.org's packages, not Debian:")
    assert reasons["eclipse-temurin"].startswith("from packages.adoptium.net, not Debian:")
    assert reasons["openssl"] == (
        "built for Debian 11 (libssl1.1 1.1.1w-0+deb11u1) and left behind by the upgrade to Debian 12, "
        "which no longer patches it: upstream openssl's lifecycle applies"
    )


def test_bullseye_libssl_on_bullseye_is_vendor_patched() -> None:
    found = items("dpkg/debian12-third-party.status", "debian-11")
    assert found["openssl 1.1.1w (dpkg:libssl1.1)"].lifecycle == OS


def test_ubuntu_packages_follow_ubuntu_and_leftover_from_focal_does_not() -> None:
    found = items("dpkg/ubuntu2204.status", "ubuntu-22.04")
    assert summary(found) == {
        "mysql 8.0.36 (dpkg:mysql-server-8.0)": ("mysql", "8.0.36", OS),
        "nginx 1.18.0 (dpkg:nginx-core)": ("nginx", "1.18.0", OS),
        # Node 12 is long dead upstream, but this is Ubuntu's package with Ubuntu's fixes.
        "nodejs 12.22.9 (dpkg:nodejs)": ("nodejs", "12.22.9", OS),
        "openssh 8.9p1 (dpkg:openssh-server)": ("openssh", "8.9p1", OS),
        "openssl 3.0.2 (dpkg:openssl)": ("openssl", "3.0.2", OS),
        "php 8.1.2 (dpkg:php8.1-cli)": ("php", "8.1.2", OS),
        "python 3.10.12 (dpkg:python3.10)": ("python", "3.10.12", OS),
        "python 3.8.10 (dpkg:python3.8)": ("python", "3.8.10", UP),
        "redis 6.0.16 (dpkg:redis-server)": ("redis", "6.0.16", OS),
    }
    assert found["openssl 3.0.2 (dpkg:openssl)"].lifecycle_reason.endswith(
        "follows Ubuntu 22.04's lifecycle, not upstream openssl's"
    )
    assert found["python 3.8.10 (dpkg:python3.8)"].lifecycle_reason.startswith(
        "built for Ubuntu 20.04 (python3.8 3.8.10-0ubuntu1~20.04.9) and left behind by the upgrade to Ubuntu 22.04"
    )


def test_debian_package_on_ubuntu_is_ubuntus_to_patch() -> None:
    # Ubuntu syncs many packages unchanged from Debian, Maintainer and all.
    synced = InstalledPackage("dpkg", "redis-server", "5:7.0.15-1", "redis", "Chris Lamb <lamby@debian.org>")
    [item] = package_items([synced], _fixtures.os_release("ubuntu-24.04"))
    assert item.lifecycle == OS
    assert "shipped and patched by Ubuntu" in item.lifecycle_reason


def test_version_built_for_the_codename_is_a_third_party_repository() -> None:
    # A PPA rebuild keeps Ubuntu's Maintainer field; Ubuntu itself never puts the codename in a version.
    ppa = InstalledPackage(
        "dpkg", "python3.12", "3.12.1-1+jammy1", maintainer="Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>"
    )
    [item] = package_items([ppa], _fixtures.os_release("ubuntu-22.04"))
    assert item.lifecycle == UP
    assert item.lifecycle_reason.startswith("from a third-party repository (a version built for jammy), not Ubuntu:")


def test_unrecognised_origin_is_upstream_and_says_why() -> None:
    local = InstalledPackage("dpkg", "nginx", "1.25.4-1", maintainer="Ops Team <ops@example.com>")
    [item] = package_items([local], _fixtures.os_release("debian-12"))
    assert item.lifecycle == UP
    assert item.lifecycle_reason == (
        "not recognisably from Debian (Maintainer Ops Team <ops@example.com>): nothing shows the OS vendor "
        "patches nginx 1.25.4-1, so upstream nginx's lifecycle applies"
    )


def test_untracked_packages_are_not_reported() -> None:
    pkgs = [
        InstalledPackage("dpkg", n, "1.0-1", maintainer="X <x@debian.org>")
        for n in ("base-files", "python3", "libpython3.11", "php-common", "postgresql", "libpq5", "nodejs-doc")
    ]
    assert package_items(pkgs, OsRelease(id="debian", version_id="12")) == []


# --- rpm -------------------------------------------------------------------------------------------


def test_rpm_qa_parses_tab_separated_lines_and_none() -> None:
    packages = parse_rpm_qa(_fixtures.text("rpm/rocky-9.3.qa"))
    by_name = {p.name: p for p in packages}
    assert by_name["openssl"] == InstalledPackage(
        manager="rpm",
        name="openssl",
        version="3.0.7-25.el9_3",
        maintainer="Rocky Linux Build System (Peridot) <releng@rockylinux.org>",
        vendor="Rocky Enterprise Software Foundation",
    )
    assert (by_name["nodejs"].vendor, by_name["nodejs"].maintainer) == ("", "")  # "(none)"
    assert len(packages) == 18


def test_rocky9_vendor_packages_and_third_party_repositories() -> None:
    found = items("rpm/rocky-9.3.qa", "rocky-9.3")
    assert summary(found) == {
        "apache-http-server 2.4.57 (rpm:httpd)": ("apache-http-server", "2.4.57", OS),
        "mariadb 10.5.22 (rpm:mariadb-server)": ("mariadb", "10.5.22", OS),
        "nginx 1.20.1 (rpm:nginx)": ("nginx", "1.20.1", OS),
        "nodejs 20.11.1 (rpm:nodejs)": ("nodejs", "20.11.1", UP),
        "openjdk 17.0.10.0.7 (rpm:java-17-openjdk-headless)": ("openjdk", "17.0.10.0.7", OS),
        "openssh 8.7p1 (rpm:openssh-server)": ("openssh", "8.7p1", OS),
        "openssl 3.0.7 (rpm:openssl)": ("openssl", "3.0.7", OS),
        "php 8.2.16 (rpm:php-cli)": ("php", "8.2.16", UP),
        "postgresql 16.2 (rpm:postgresql16-server)": ("postgresql", "16.2", UP),
        "python 3.11.5 (rpm:python3.11)": ("python", "3.11.5", OS),
        "python 3.9.18 (rpm:python3)": ("python", "3.9.18", OS),
        "valkey 8.0.1 (rpm:valkey)": ("valkey", "8.0.1", UP),
    }
    reasons = {name: i.lifecycle_reason for name, i in found.items()}
    assert reasons["openssl 3.0.7 (rpm:openssl)"].startswith("shipped and patched by Rocky Linux")
    assert reasons["nodejs 20.11.1 (rpm:nodejs)"].startswith("from NodeSource (rpm.nodesource.com), not Rocky Linux")
    assert reasons["postgresql 16.2 (rpm:postgresql16-server)"].startswith("from yum.postgresql.org (PGDG)")
    assert reasons["php 8.2.16 (rpm:php-cli)"].startswith("from rpms.remirepo.net (Remi's RPM repository)")
    assert reasons["valkey 8.0.1 (rpm:valkey)"].startswith("from EPEL (Fedora Project, community-maintained)")


def test_rhel8_patched_packages_follow_rhel_even_when_upstream_is_long_dead() -> None:
    found = items("rpm/rhel-8.7.qa", "rhel-8.7")
    assert summary(found) == {
        "apache-http-server 2.4.37 (rpm:httpd)": ("apache-http-server", "2.4.37", OS),
        "nginx 1.14.1 (rpm:nginx)": ("nginx", "1.14.1", OS),
        "nodejs 16.18.1 (rpm:nodejs)": ("nodejs", "16.18.1", OS),
        "openjdk 11.0.18.0.10 (rpm:java-11-openjdk-headless)": ("openjdk", "11.0.18.0.10", OS),
        "openssh 8.0p1 (rpm:openssh-server)": ("openssh", "8.0p1", OS),
        # OpenSSL 1.0.2 ended upstream in 2019; RHEL 8 still patches its compat package.
        "openssl 1.0.2o (rpm:compat-openssl10)": ("openssl", "1.0.2o", OS),
        "openssl 1.1.1k (rpm:openssl)": ("openssl", "1.1.1k", OS),
        "postgresql 13.7 (rpm:postgresql-server)": ("postgresql", "13.7", OS),
        "python 3.6.8 (rpm:platform-python)": ("python", "3.6.8", OS),
        "python 3.9.13 (rpm:python39)": ("python", "3.9.13", OS),
        "redis 5.0.3 (rpm:redis)": ("redis", "5.0.3", OS),
    }
    nodejs = found["nodejs 16.18.1 (rpm:nodejs)"].lifecycle_reason
    assert nodejs.startswith("shipped and patched by Red Hat, which backports fixes into nodejs 16.18.1-3.module+el8")
    assert nodejs.endswith("it is an Application Stream module, which may be retired before the OS itself")
    assert "Application Stream" not in found["openssl 1.1.1k (rpm:openssl)"].lifecycle_reason


def test_amazon_linux_2023_packages_follow_amazon_linux() -> None:
    assert summary(items("rpm/amzn-2023.qa", "amzn-2023")) == {
        "amazon-corretto 17.0.10 (rpm:java-17-amazon-corretto-headless)": ("amazon-corretto", "17.0.10", OS),
        "mariadb 10.5.23 (rpm:mariadb105-server)": ("mariadb", "10.5.23", OS),
        "nginx 1.24.0 (rpm:nginx)": ("nginx", "1.24.0", OS),
        "nodejs 20.10.0 (rpm:nodejs20)": ("nodejs", "20.10.0", OS),
        "openssh 8.7p1 (rpm:openssh-server)": ("openssh", "8.7p1", OS),
        "openssl 3.0.8 (rpm:openssl)": ("openssl", "3.0.8", OS),
        "postgresql 15.5 (rpm:postgresql15-server)": ("postgresql", "15.5", OS),
        "python 3.11.6 (rpm:python3.11)": ("python", "3.11.6", OS),
        "python 3.9.16 (rpm:python3)": ("python", "3.9.16", OS),
        "redis 6.2.14 (rpm:redis6)": ("redis", "6.2.14", OS),
    }


def test_sles_packages_follow_sles() -> None:
    found = items("rpm/sles-15-sp5.qa", "sles-15-sp5")
    assert summary(found) == {
        "apache-http-server 2.4.51 (rpm:apache2)": ("apache-http-server", "2.4.51", OS),
        "mariadb 10.6.16 (rpm:mariadb)": ("mariadb", "10.6.16", OS),
        "nginx 1.21.5 (rpm:nginx)": ("nginx", "1.21.5", OS),
        "nodejs 18.19.1 (rpm:nodejs18)": ("nodejs", "18.19.1", OS),
        "openjdk 17.0.10.0 (rpm:java-17-openjdk-headless)": ("openjdk", "17.0.10.0", OS),
        "openssh 9.6p1 (rpm:openssh-server)": ("openssh", "9.6p1", OS),
        "openssl 1.1.1l (rpm:libopenssl1_1)": ("openssl", "1.1.1l", OS),
        "openssl 3.0.8 (rpm:openssl-3)": ("openssl", "3.0.8", OS),
        "php 8.0.30 (rpm:php8)": ("php", "8.0.30", OS),
        "postgresql 15.6 (rpm:postgresql15-server)": ("postgresql", "15.6", OS),
        "python 3.11.8 (rpm:python311)": ("python", "3.11.8", OS),
        "python 3.6.15 (rpm:python3)": ("python", "3.6.15", OS),
        "redis 7.0.8 (rpm:redis7)": ("redis", "7.0.8", OS),
    }
    assert all(i.lifecycle_reason.endswith("s lifecycle, not upstream " + i.product + "'s") for i in found.values())
    assert "follows SLES 15.5's lifecycle" in found["nginx 1.21.5 (rpm:nginx)"].lifecycle_reason


def test_rpm_vendor_must_be_this_os_vendor() -> None:
    # A Rocky-built package on RHEL is not something Red Hat patches.
    found = items("rpm/rocky-9.3.qa", "rhel-9.6")
    item = found["openssl 3.0.7 (rpm:openssl)"]
    assert item.lifecycle == UP
    assert item.lifecycle_reason.startswith(
        "not recognisably from Red Hat (Vendor Rocky Enterprise Software Foundation)"
    )


def test_rpm_from_an_older_el_release_is_left_behind() -> None:
    old = InstalledPackage("rpm", "openssl-libs", "1.0.2k-26.el7_9", vendor="Red Hat, Inc.")
    [item] = package_items([old], _fixtures.os_release("rhel-8.7"))
    assert item.lifecycle == UP
    assert item.lifecycle_reason.startswith("built for EL 7 (openssl-libs 1.0.2k-26.el7_9) and left behind")


def test_rpm_without_vendor_is_upstream() -> None:
    local = InstalledPackage("rpm", "nginx", "1.25.4-1.el9")
    [item] = package_items([local], _fixtures.os_release("rocky-9.3"))
    assert item.lifecycle == UP
    assert "no Vendor (built locally or by a third party)" in item.lifecycle_reason


def test_rpm_qf() -> None:
    assert parse_rpm_qf("nodejs\n") == "nodejs"
    assert parse_rpm_qf("file /usr/local/bin/node is not owned by any package\n") is None
    assert parse_rpm_qf("error: file /nope: No such file or directory\n") is None
    assert parse_rpm_qf("") is None


# --- apk -------------------------------------------------------------------------------------------


def test_apk_installed_parses_packages_and_their_files() -> None:
    packages = {p.name: p for p in parse_apk_installed(_fixtures.text("apk/alpine-3.19.installed"))}
    assert sorted(packages) == ["libssl3", "musl", "nginx", "nodejs", "openssl", "python3"]
    assert packages["nodejs"].files == ("/usr/bin/node",)
    assert packages["python3"].files == ("/usr/bin/python3", "/usr/bin/python3.11")
    assert packages["libssl3"].source == "openssl"
    assert packages["nginx"].maintainer == "Jakub Jirutka <jakub@jirutka.cz>"


def test_alpine_packages_follow_alpine() -> None:
    found = items("apk/alpine-3.19.installed", "alpine-3.19.1")
    assert summary(found) == {
        "nginx 1.24.0 (apk:nginx)": ("nginx", "1.24.0", OS),
        "nodejs 20.15.1 (apk:nodejs)": ("nodejs", "20.15.1", OS),
        "openssl 3.1.4 (apk:openssl)": ("openssl", "3.1.4", OS),
        "python 3.11.8 (apk:python3)": ("python", "3.11.8", OS),
    }
    assert found["nodejs 20.15.1 (apk:nodejs)"].lifecycle_reason == (
        "shipped and patched by Alpine, which backports fixes into nodejs 20.15.1-r0: "
        "follows Alpine 3.19.1's lifecycle, not upstream nodejs's"
    )


# --- versions and the wire -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("manager", "version", "upstream"),
    [
        ("dpkg", "3.0.19-1~deb12u2", "3.0.19"),
        ("dpkg", "1:9.2p1-2+deb12u6", "9.2p1"),
        ("dpkg", "5:7.0.15-1~deb12u10", "7.0.15"),
        ("dpkg", "1:10.11.6+maria~deb12", "10.11.6"),
        ("dpkg", "12.22.9~dfsg-1ubuntu3.6", "12.22.9"),
        ("dpkg", "17.0.15+6-1~deb12u1", "17.0.15"),
        ("dpkg", "8.3.3-1+0~20240216.17+debian12~1.gbp87e37b", "8.3.3"),
        ("dpkg", "20.20.2-1nodesource1+repack1", "20.20.2"),
        ("dpkg", "1.1.1w-0+deb11u1", "1.1.1w"),
        ("rpm", "16.18.1-3.module+el8.7.0+17465+1a1abd74", "16.18.1"),
        ("rpm", "17.0.10+7-1.amzn2023.1", "17.0.10"),
        ("rpm", "8.7p1-34.el9", "8.7p1"),
        ("apk", "20.15.1-r0", "20.15.1"),
        ("apk", "1.2.4_git20230717-r4", "1.2.4"),
    ],
)
def test_upstream_version(manager: str, version: str, upstream: str) -> None:
    assert upstream_version(manager, version) == upstream


def test_result_round_trips_through_proto_with_only_agent_fields_set() -> None:
    result = EolResult(items=list(items("dpkg/debian12-host.status", "debian-12").values()))
    msg = result.to_proto()
    assert isinstance(msg, eol_pb2.EolResult)
    assert EolResult.from_proto(eol_pb2.EolResult.FromString(msg.SerializeToString())) == result
    nodejs = next(i for i in msg.items if i.product == "nodejs")
    assert (nodejs.kind, nodejs.source, nodejs.lifecycle) == ("package", "dpkg:nodejs", "upstream")
    # Fields 9-18 are the controller's: the agent leaves them at their defaults.
    assert (nodejs.cycle, nodejs.eol_date, nodejs.release_date, nodejs.eol, nodejs.known) == ("", "", "", False, False)
