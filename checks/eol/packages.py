"""Installed packages (dpkg, rpm, apk) mapped to products, and whose lifecycle each one follows.

The trap this module exists for: a package the OS vendor ships is patched by the vendor, who backports
security fixes without changing the upstream version (Debian 12's openssl 3.0.19-1~deb12u2, RHEL 8's
openssl 1.1.1k-9.el8_7). Judging it by upstream's calendar reports patched software as dead, and
judging NodeSource's nodejs by Debian's calendar hides a runtime nobody patches. So every package gets
a lifecycle:

- ``os``: the OS vendor ships and patches it; the OS release's dates apply.
- ``upstream``: it comes from a third party (NodeSource, nginx.org, PGDG, deb.sury.org, EPEL, ...) or
  was built for an older OS release and left behind by an upgrade; upstream's dates apply.

Everything here is pure: parsers take the package database's text, :func:`package_items` the parsed
packages and the OS, so they are tested on captured ``/var/lib/dpkg/status`` and ``rpm -qa`` output.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from checks.eol.model import KIND_PACKAGE, LIFECYCLE_OS, LIFECYCLE_UPSTREAM, EolItem
from checks.eol.osrelease import OsRelease

# The query whose output parse_rpm_qa reads; kept here so the parser and the collector cannot drift.
RPM_QUERY_FORMAT = "%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{VENDOR}\\t%{PACKAGER}\\n"


@dataclass(frozen=True)
class InstalledPackage:
    """One installed binary package as its package manager records it."""

    manager: str  # "dpkg", "rpm" or "apk"
    name: str
    version: str  # the package version, with epoch/revision/release as the manager reports it
    # dpkg Source / apk origin: packages built from one source share a lifecycle and are reported once.
    source: str = ""
    maintainer: str = ""  # dpkg Maintainer, rpm Packager, apk maintainer
    vendor: str = ""  # rpm Vendor
    files: tuple[str, ...] = ()  # apk only; dpkg keeps its file lists in info/*.list

    @property
    def upstream_version(self) -> str:
        return upstream_version(self.manager, self.version)


class Decision(NamedTuple):
    lifecycle: str
    reason: str


# ---------------------------------------------------------------------------------------------------
# Parsers


def parse_dpkg_status(text: str) -> list[InstalledPackage]:
    """Packages of ``/var/lib/dpkg/status`` whose Status is "... installed".

    Removed packages whose configuration files remain ("deinstall ok config-files") are left out:
    nothing of them runs. ``Source: python3-defaults (3.11.2-1)`` keeps only the source name.
    """
    packages: list[InstalledPackage] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = _control_fields(stanza)
        status = fields.get("Status", "").split()
        if "Package" not in fields or len(status) != 3 or status[2] != "installed":
            continue
        packages.append(
            InstalledPackage(
                manager="dpkg",
                name=fields["Package"],
                version=fields.get("Version", ""),
                source=fields.get("Source", "").split(" ", 1)[0],
                maintainer=fields.get("Maintainer", ""),
            )
        )
    return packages


def _control_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        # Continuation lines (Description, Conffiles) start with whitespace and are not needed.
        if not line or line[0] in " \t" or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def parse_rpm_qa(text: str) -> list[InstalledPackage]:
    """Lines of ``rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{VENDOR}\\t%{PACKAGER}\\n'``.

    rpm prints "(none)" for a tag the package does not set; that becomes "".
    """
    packages: list[InstalledPackage] = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0]:
            continue
        vendor, packager = (_none_to_empty(p) for p in [*parts, "", ""][2:4])
        packages.append(
            InstalledPackage(manager="rpm", name=parts[0], version=parts[1], maintainer=packager, vendor=vendor)
        )
    return packages


def _none_to_empty(value: str) -> str:
    return "" if value.strip() == "(none)" else value.strip()


def parse_apk_installed(text: str) -> list[InstalledPackage]:
    """Records of Alpine's ``/lib/apk/db/installed``: ``P:`` name, ``V:`` version, ``o:`` origin,
    ``m:`` maintainer, and the files as ``F:`` directory lines each followed by its ``R:`` file lines."""
    packages: list[InstalledPackage] = []
    for record in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        files: list[str] = []
        directory = ""
        for line in record.splitlines():
            key, sep, value = line.partition(":")
            if not sep or len(key) != 1:
                continue
            if key == "F":
                directory = value
            elif key == "R":
                files.append(f"/{directory}/{value}" if directory else f"/{value}")
            else:
                fields.setdefault(key, value)
        if "P" in fields:
            packages.append(
                InstalledPackage(
                    manager="apk",
                    name=fields["P"],
                    version=fields.get("V", ""),
                    source=fields.get("o", ""),
                    maintainer=fields.get("m", ""),
                    files=tuple(files),
                )
            )
    return packages


def parse_rpm_qf(text: str) -> str | None:
    """The owning package of one path from ``rpm -qf --qf '%{NAME}\\n' PATH``, None when unowned."""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if " is not owned by any package" in line or line.startswith(("error:", "file ")):
            return None
        return line
    return None


# ---------------------------------------------------------------------------------------------------
# Which packages are tracked, and as which product

# Per manager, (name pattern, endoflife.date product). Order is preference when several binary packages
# of one source are installed: "openssl" names the item rather than "libssl3".
_TRACKED: dict[str, list[tuple[re.Pattern[str], str]]] = {
    "dpkg": [
        (re.compile(p), product)
        for p, product in [
            (r"python\d\.\d+", "python"),
            (r"python\d\.\d+-minimal", "python"),
            (r"openssl", "openssl"),
            (r"libssl\d[\d.]*(?:t64)?", "openssl"),
            (r"nginx", "nginx"),
            (r"nginx-(?:core|full|light|extras)", "nginx"),
            (r"apache2", "apache-http-server"),
            (r"apache2-bin", "apache-http-server"),
            (r"php\d+\.\d+-(?:cli|fpm)", "php"),
            (r"libapache2-mod-php\d+\.\d+", "php"),
            (r"nodejs", "nodejs"),
            (r"openjdk-\d+-jre-headless", "openjdk"),
            (r"openjdk-\d+-(?:jre|jdk|jdk-headless)", "openjdk"),
            (r"temurin-\d+-(?:jdk|jre)", "eclipse-temurin"),
            (r"postgresql-\d+(?:\.\d+)?", "postgresql"),
            (r"mysql-server-\d+\.\d+", "mysql"),
            (r"mysql-server-core-\d+\.\d+", "mysql"),
            (r"mysql-community-server(?:-core)?", "mysql"),
            (r"mariadb-server(?:-\d+\.\d+)?", "mariadb"),
            (r"mariadb-server-core(?:-\d+\.\d+)?", "mariadb"),
            (r"redis-server", "redis"),
            (r"valkey-server", "valkey"),
            (r"openssh-server", "openssh"),
            (r"openssh-client", "openssh"),
        ]
    ],
    "rpm": [
        (re.compile(p), product)
        for p, product in [
            (r"python3(?:\.\d+|\d+)?", "python"),
            (r"platform-python", "python"),  # RHEL 8's system Python
            (r"openssl(?:\d+|-\d+(?:_\d+)?)?", "openssl"),
            (r"openssl(?:\d+)?-libs", "openssl"),
            (r"libopenssl\d+(?:_\d+)?", "openssl"),  # SUSE
            (r"compat-openssl\d+", "openssl"),
            (r"nginx", "nginx"),
            (r"nginx-core", "nginx"),
            (r"httpd", "apache-http-server"),
            (r"apache2", "apache-http-server"),  # SUSE
            (r"php\d*", "php"),
            (r"php\d*-(?:cli|fpm|common)", "php"),
            (r"nodejs\d*", "nodejs"),
            (r"java-(?:\d+|1\.8\.0|latest)-openjdk(?:-headless)?", "openjdk"),
            (r"java-\d+-amazon-corretto(?:-headless|-devel)?", "amazon-corretto"),
            (r"temurin-\d+-(?:jdk|jre)", "eclipse-temurin"),
            (r"postgresql\d*-server", "postgresql"),
            (r"mysql\d*-server", "mysql"),
            (r"mysql-community-server", "mysql"),
            (r"mariadb\d*-server", "mariadb"),
            (r"MariaDB-server", "mariadb"),  # mariadb.org's repository capitalises its names
            (r"mariadb", "mariadb"),  # the server itself on SUSE
            (r"redis\d*", "redis"),
            (r"valkey", "valkey"),
            (r"openssh-server", "openssh"),
            (r"openssh-clients", "openssh"),
            (r"openssh", "openssh"),
        ]
    ],
    "apk": [
        (re.compile(p), product)
        for p, product in [
            (r"python3", "python"),
            (r"openssl", "openssl"),
            (r"libssl\d+", "openssl"),
            (r"nginx", "nginx"),
            (r"apache2", "apache-http-server"),
            (r"php\d+", "php"),
            (r"nodejs(?:-current)?", "nodejs"),
            (r"openjdk\d+-jre-headless", "openjdk"),
            (r"openjdk\d+(?:-jre|-jdk)?", "openjdk"),
            (r"postgresql\d+", "postgresql"),
            (r"mariadb", "mariadb"),
            (r"redis", "redis"),
            (r"valkey", "valkey"),
            (r"openssh-server", "openssh"),
            (r"openssh-client(?:-default)?", "openssh"),
        ]
    ],
}


def tracked_product(manager: str, name: str) -> tuple[str, int] | None:
    """(product, preference rank) of a package name, or None when no tracked product ships in it."""
    for rank, (pattern, product) in enumerate(_TRACKED.get(manager, [])):
        if pattern.fullmatch(name):
            return product, rank
    return None


_LEADING_VERSION = re.compile(r"\d[0-9A-Za-z.]*")


def upstream_version(manager: str, version: str) -> str:
    """The upstream part of a package version: "3.0.19" from dpkg's "3.0.19-1~deb12u2", "9.2p1" from
    "1:9.2p1-2+deb12u6", "10.11.6" from "1:10.11.6+maria~deb12", "20.15.1" from apk's "20.15.1-r0".

    Epoch, Debian revision / rpm release / apk "-rN" go, and so does a "+dfsg", "+maria~…" or "+7"
    (Java build) suffix, because endoflife.date versions are upstream's.
    """
    v = re.sub(r"^\d+:", "", version)
    if manager == "apk":
        v = re.sub(r"-r\d+$", "", v)
    elif "-" in v:
        v = v.rsplit("-", 1)[0]
    m = _LEADING_VERSION.match(v)
    return m.group(0).rstrip(".") if m else v


# ---------------------------------------------------------------------------------------------------
# Whose lifecycle applies

# Third-party origins recognisable from a dpkg package. Checked before any sign of the OS vendor,
# because several copy Debian's Maintainer field (PGDG, deb.sury.org) or a "debNN" tag (MariaDB, MySQL).
_DPKG_ORIGINS: list[tuple[Callable[[InstalledPackage], bool], str]] = [
    (lambda p: "nodesource" in (p.version + p.maintainer).lower(), "NodeSource (deb.nodesource.com)"),
    (lambda p: "pgdg" in p.version, "apt.postgresql.org (PGDG)"),
    (
        lambda p: "deb.sury.org" in p.version or re.search(r"\+0~\d{8}\.\d+\+debian\d+~1\.gbp", p.version) is not None,
        "deb.sury.org (Ondřej Surý's PHP packages)",
    ),
    (lambda p: "+maria~" in p.version or "mariadb.org" in p.maintainer, "mariadb.org's repository"),
    (lambda p: "mysql-build@oss.oracle.com" in p.maintainer, "repo.mysql.com (Oracle's MySQL APT repository)"),
    (lambda p: "nginx-packaging@" in p.maintainer or "@nginx.com" in p.maintainer, "nginx.org's packages"),
    (lambda p: "adoptium" in p.maintainer.lower() or "@eclipse.org" in p.maintainer, "packages.adoptium.net"),
    (lambda p: "@redis.io" in p.maintainer, "packages.redis.io"),
]

_DEBIAN_MAINTAINER = re.compile(r"@(?:[\w.-]+\.)?debian\.(?:org|net)\b", re.IGNORECASE)
_UBUNTU_MAINTAINER = re.compile(r"@(?:[\w.-]+\.)?(?:ubuntu|canonical)\.com\b", re.IGNORECASE)
# Debian stable updates and backports tag the release they were built for: "+deb12u6", "~deb12u2",
# "~bpo12+1".
_DEBIAN_RELEASE = re.compile(r"[+~]deb(\d+)u\d+|~bpo(\d+)")
# Ubuntu SRUs and backports tag theirs: "0ubuntu0.22.04.1", "3.10.12-1~22.04.3".
_UBUNTU_RELEASE = re.compile(r"(?:ubuntu0\.|~)(\d\d\.\d\d)(?:\.\d+)?(?![\d.])")

# RPM vendors that are an OS vendor, per os-release ID: a package must come from *this* OS's vendor.
_RPM_OS_VENDORS: dict[str, tuple[tuple[str, str], ...]] = {
    "rhel": (("red hat", "Red Hat"),),
    "rocky": (("rocky enterprise", "Rocky Linux"),),
    "almalinux": (("almalinux", "AlmaLinux"),),
    "centos": (("centos", "CentOS"),),
    "ol": (("oracle america", "Oracle Linux"),),
    "fedora": (("fedora project", "Fedora"),),
    "amzn": (("amazon linux", "Amazon Linux"), ("amazon.com", "Amazon Linux")),
    "sles": (("suse", "SUSE"),),
    "sles_sap": (("suse", "SUSE"),),
    "opensuse-leap": (("suse", "SUSE"), ("opensuse", "openSUSE")),
    "opensuse-tumbleweed": (("opensuse", "openSUSE"), ("suse", "SUSE")),
}

_RPM_ORIGINS: list[tuple[Callable[[InstalledPackage], bool], str]] = [
    (lambda p: "nodesource" in (p.version + p.vendor).lower(), "NodeSource (rpm.nodesource.com)"),
    (lambda p: "pgdg" in p.version.lower(), "yum.postgresql.org (PGDG)"),
    (lambda p: ".ngx" in p.version or "nginx" in p.vendor.lower(), "nginx.org's packages"),
    (lambda p: "remi" in (p.version + p.vendor).lower(), "rpms.remirepo.net (Remi's RPM repository)"),
    (lambda p: "mariadb" in p.vendor.lower(), "mariadb.org's repository"),
    (lambda p: p.name.startswith("mysql-community"), "repo.mysql.com (Oracle's MySQL yum repository)"),
    (lambda p: "adoptium" in p.vendor.lower() or p.name.startswith("temurin"), "packages.adoptium.net"),
]


def decide(pkg: InstalledPackage, osr: OsRelease, product: str) -> Decision:
    """Whose lifecycle applies to ``pkg`` on the OS ``osr``, and why (one sentence for the auditor)."""
    if pkg.manager == "dpkg":
        return _decide_dpkg(pkg, osr, product)
    if pkg.manager == "rpm":
        return _decide_rpm(pkg, osr, product)
    return _os_decision("Alpine" if osr.id in ("", "alpine") else osr.vendor, pkg, osr, product)


def _decide_dpkg(pkg: InstalledPackage, osr: OsRelease, product: str) -> Decision:
    for matches, origin in _DPKG_ORIGINS:
        if matches(pkg):
            return _third_party(origin, pkg, osr, product)
    # Debian and Ubuntu tag updates with release numbers ("+deb12u1", "~22.04.1"), never with the codename;
    # third-party repositories do ("1.24.0-1~bookworm", deadsnakes' "3.12.1-1+jammy1"), some of them while
    # keeping the distribution's Maintainer field.
    codename = osr.version_codename.lower()
    if codename and re.search(rf"[~+.]{re.escape(codename)}", pkg.version.lower()):
        return _third_party(f"a third-party repository (a version built for {codename})", pkg, osr, product)
    ubuntu = "ubuntu" in pkg.version.lower() or _UBUNTU_MAINTAINER.search(pkg.maintainer) is not None
    debian = _DEBIAN_RELEASE.search(pkg.version) is not None or _DEBIAN_MAINTAINER.search(pkg.maintainer) is not None
    if not (ubuntu or debian):
        return _unrecognised(f"Maintainer {pkg.maintainer or '(none)'}", pkg, osr, product)
    left_behind = _dpkg_built_for_older_release(pkg.version, osr)
    if left_behind:
        return _left_behind(left_behind, pkg, osr, product)
    # On Ubuntu a package synced unchanged from Debian (Debian's Maintainer) is still Ubuntu's to patch.
    vendor = osr.vendor if osr.is_like("debian") else ("Ubuntu" if ubuntu else "Debian")
    return _os_decision(vendor, pkg, osr, product)


def _dpkg_built_for_older_release(version: str, osr: OsRelease) -> str:
    """The older release ("Debian 11") whose tag a package carries, or "" when it belongs to the running one."""
    if osr.id == "debian" and osr.major.isdigit():
        m = _DEBIAN_RELEASE.search(version)
        if m:
            built_for = int(m.group(1) or m.group(2))
            if built_for < int(osr.major):
                return f"Debian {built_for}"
    if osr.id == "ubuntu" and re.fullmatch(r"\d\d\.\d\d", osr.version_id):
        m = _UBUNTU_RELEASE.search(version)
        if m and m.group(1) < osr.version_id:  # "YY.MM" strings order like the releases
            return f"Ubuntu {m.group(1)}"
    return ""


def _decide_rpm(pkg: InstalledPackage, osr: OsRelease, product: str) -> Decision:
    for matches, origin in _RPM_ORIGINS:
        if matches(pkg):
            return _third_party(origin, pkg, osr, product)
    vendor_lc = pkg.vendor.lower()
    if "fedora project" in vendor_lc and osr.id != "fedora":
        return _third_party("EPEL (Fedora Project, community-maintained)", pkg, osr, product)
    known = _RPM_OS_VENDORS.get(osr.id) or tuple(v for vs in _RPM_OS_VENDORS.values() for v in vs)
    vendor = next((label for needle, label in known if needle in vendor_lc), "")
    if not vendor:
        what = f"Vendor {pkg.vendor}" if pkg.vendor else "no Vendor (built locally or by a third party)"
        return _unrecognised(what, pkg, osr, product)
    left_behind = _rpm_built_for_older_release(pkg.version, osr)
    if left_behind:
        return _left_behind(left_behind, pkg, osr, product)
    decision = _os_decision(vendor, pkg, osr, product)
    if "module+el" in pkg.version:
        # RHEL 8 Application Streams (modules) can retire before the OS: say so rather than hide it.
        return Decision(
            decision.lifecycle,
            decision.reason + "; it is an Application Stream module, which may be retired before the OS itself",
        )
    return decision


def _rpm_built_for_older_release(version: str, osr: OsRelease) -> str:
    if osr.is_like("rhel") or osr.id in ("rhel", "centos"):
        m = re.search(r"\.el(\d+)", version)
        if m and osr.major.isdigit() and int(m.group(1)) < int(osr.major):
            return f"EL {m.group(1)}"
    if osr.id == "amzn":
        m = re.search(r"\.amzn(\d+)", version)
        if m and m.group(1) != osr.major:
            return f"Amazon Linux {m.group(1)}"
    return ""


def _os_decision(vendor: str, pkg: InstalledPackage, osr: OsRelease, product: str) -> Decision:
    return Decision(
        LIFECYCLE_OS,
        f"shipped and patched by {vendor}, which backports fixes into {pkg.name} {pkg.version}: "
        f"follows {osr.label}'s lifecycle, not upstream {product}'s",
    )


def _third_party(origin: str, pkg: InstalledPackage, osr: OsRelease, product: str) -> Decision:
    return Decision(
        LIFECYCLE_UPSTREAM,
        f"from {origin}, not {osr.vendor}: {pkg.name} {pkg.version} gets no fixes from the OS vendor, "
        f"so upstream {product}'s lifecycle applies",
    )


def _unrecognised(what: str, pkg: InstalledPackage, osr: OsRelease, product: str) -> Decision:
    return Decision(
        LIFECYCLE_UPSTREAM,
        f"not recognisably from {osr.vendor} ({what}): nothing shows the OS vendor patches {pkg.name} "
        f"{pkg.version}, so upstream {product}'s lifecycle applies",
    )


def _left_behind(built_for: str, pkg: InstalledPackage, osr: OsRelease, product: str) -> Decision:
    return Decision(
        LIFECYCLE_UPSTREAM,
        f"built for {built_for} ({pkg.name} {pkg.version}) and left behind by the upgrade to {osr.label}, "
        f"which no longer patches it: upstream {product}'s lifecycle applies",
    )


# ---------------------------------------------------------------------------------------------------
# Items


def package_items(packages: Iterable[InstalledPackage], osr: OsRelease) -> list[EolItem]:
    """One item per tracked product, source package and upstream version.

    ``openssl`` and ``libssl3`` (both from source ``openssl``) are one item, named after the preferred
    binary package: ``EolItem(kind="package", name="openssl 3.0.19 (dpkg:openssl)", product="openssl",
    version="3.0.19", source="dpkg:openssl", lifecycle="os", ...)``.
    """
    groups: dict[tuple[str, str, str, str, str], list[tuple[int, InstalledPackage]]] = {}
    for pkg in packages:
        tracked = tracked_product(pkg.manager, pkg.name)
        if tracked is None:
            continue
        product, rank = tracked
        # rpm -qa has no source package, so its binaries group by vendor instead.
        origin = pkg.vendor if pkg.manager == "rpm" else (pkg.source or pkg.name)
        key = (pkg.manager, product, origin, pkg.upstream_version, pkg.version)
        groups.setdefault(key, []).append((rank, pkg))
    items: list[EolItem] = []
    for (manager, product, _origin, version, _full), members in sorted(groups.items()):
        _, rep = min(members, key=lambda m: (m[0], m[1].name))
        lifecycle, reason = decide(rep, osr, product)
        items.append(
            EolItem(
                kind=KIND_PACKAGE,
                name=f"{product} {version} ({manager}:{rep.name})",
                product=product,
                version=version,
                source=f"{manager}:{rep.name}",
                lifecycle=lifecycle,
                lifecycle_reason=reason,
            )
        )
    return items
