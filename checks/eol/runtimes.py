"""Runtimes and servers that no package manager installed: what to run, and how to read its version.

A tarball Node in ``/usr/local/bin``, a JDK unpacked in ``/opt``, a pyenv Python: nobody backports
fixes into these, so they follow upstream's lifecycle. The collector finds the binaries and runs
``PROBES[name].args``; the pure parsers here turn the output (stdout and stderr together, since
``java -version``, ``nginx -v`` and ``ssh -V`` print to stderr) into a product and version.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from checks.eol.model import KIND_RUNTIME, LIFECYCLE_UPSTREAM, EolItem


class Detected(NamedTuple):
    """What a version command said: endoflife.date product id and upstream version."""

    product: str
    version: str


def _first(pattern: str, text: str, flags: int = re.MULTILINE) -> str:
    m = re.search(pattern, text, flags)
    return m.group(1) if m else ""


def parse_python_version(text: str) -> Detected | None:
    """``python3 --version``: "Python 3.11.7" (Python 2 prints the same to stderr)."""
    version = _first(r"^Python (\d+\.\d+(?:\.\d+)?[\w.+]*)", text)
    return Detected("python", version) if version else None


def parse_openssl_version(text: str) -> Detected | None:
    """``openssl version``: "OpenSSL 3.0.19 27 Jan 2026 (Library: ...)"; macOS answers "LibreSSL 3.3.6".

    LibreSSL is reported under our own slug "libressl": endoflife.date has no LibreSSL product.
    """
    version = _first(r"^OpenSSL (\d+\.\d+\.\d+[a-z]*)", text)
    if version:
        return Detected("openssl", version)
    version = _first(r"^LibreSSL (\d+\.\d+\.\d+)", text)
    return Detected("libressl", version) if version else None


def parse_nginx_version(text: str) -> Detected | None:
    """``nginx -v``: "nginx version: nginx/1.22.1"."""
    version = _first(r"nginx version: nginx/(\d+\.\d+\.\d+)", text)
    return Detected("nginx", version) if version else None


def parse_apache_version(text: str) -> Detected | None:
    """``httpd -v`` / ``apache2 -v``: "Server version: Apache/2.4.57 (Debian)"."""
    version = _first(r"Server version: Apache/(\d+\.\d+\.\d+)", text)
    return Detected("apache-http-server", version) if version else None


def parse_php_version(text: str) -> Detected | None:
    """``php -v``: "PHP 8.2.7 (cli) ..."; distro builds append their revision ("8.1.2-1ubuntu2.14")."""
    version = _first(r"^PHP (\d+\.\d+\.\d+)", text)
    return Detected("php", version) if version else None


def parse_node_version(text: str) -> Detected | None:
    """``node --version``: "v20.20.2"."""
    version = _first(r"^v(\d+\.\d+\.\d+)", text)
    return Detected("nodejs", version) if version else None


# The build named in ``java -version`` decides whose support applies: each vendor has its own calendar.
_JAVA_VENDORS: list[tuple[str, str]] = [
    ("Temurin", "eclipse-temurin"),
    ("Corretto", "amazon-corretto"),
    ("Zulu", "azul-zulu"),
    ("Microsoft", "microsoft-build-of-openjdk"),
    ("Red_Hat", "redhat-build-of-openjdk"),
    ("Red Hat", "redhat-build-of-openjdk"),
    ("BellSoft", "bellsoft-liberica"),
    ("Liberica", "bellsoft-liberica"),
    ("Java(TM) SE", "oracle-jdk"),
]


def parse_java_version(text: str) -> Detected | None:
    """``java -version`` (stderr): 'openjdk version "17.0.15" 2025-04-15' then the runtime's build line.

    Builds from jdk.java.net say only "(build 21.0.2+13-58)"; endoflife.date tracks those as
    "openjdk-builds-from-oracle". Any other OpenJDK build (a distro's, a self-built one) has no
    vendor calendar there, so it is reported as our own slug "openjdk".
    """
    version = _first(r'version "([^"]+)"', text)
    if not version:
        return None
    for marker, product in _JAVA_VENDORS:
        if marker in text:
            return Detected(product, version)
    if re.search(r"\(build [\d.]+\+\d+-\d+\)", text):
        return Detected("openjdk-builds-from-oracle", version)
    return Detected("openjdk", version)


def parse_postgres_version(text: str) -> Detected | None:
    """``postgres --version``: "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"."""
    version = _first(r"\(PostgreSQL\) (\d+(?:\.\d+)*)", text)
    return Detected("postgresql", version) if version else None


def parse_mysqld_version(text: str) -> Detected | None:
    """``mysqld --version`` / ``mariadbd --version``: "... Ver 8.0.36 for Linux ... (MySQL Community Server
    - GPL)" or "... Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu ..."."""
    version = _first(r"\bVer (\d+\.\d+\.\d+)", text)
    if not version:
        return None
    return Detected("mariadb" if "mariadb" in text.lower() else "mysql", version)


def parse_redis_version(text: str) -> Detected | None:
    """``redis-server --version``: "Redis server v=7.0.15 sha=..."; Valkey answers "Valkey server v=8.0.1"."""
    m = re.search(r"^(Redis|Valkey) server v=(\d+\.\d+\.\d+)", text, re.MULTILINE)
    return Detected(m.group(1).lower(), m.group(2)) if m else None


def parse_openssh_version(text: str) -> Detected | None:
    """``ssh -V`` / ``sshd -V``: "OpenSSH_9.2p1 Debian-2+deb12u6, OpenSSL ..."; Debian 12's sshd says
    "OpenSSH_9.2, ...", older sshd print "unknown option -- V" then the version, Windows
    "OpenSSH_for_Windows_9.5p1"."""
    version = _first(r"OpenSSH_(?:for_Windows_)?(\d+\.\d+(?:p\d+)?)", text)
    return Detected("openssh", version) if version else None


@dataclass(frozen=True)
class Probe:
    """How to ask one binary for its version."""

    args: tuple[str, ...]
    parse: Callable[[str], Detected | None]


# Binary names looked for in each directory, in this order (a directory's "python3" is preferred to
# its "python" when both are the same file).
PROBES: dict[str, Probe] = {
    "python3": Probe(("--version",), parse_python_version),
    "python": Probe(("--version",), parse_python_version),
    "python2": Probe(("--version",), parse_python_version),
    "openssl": Probe(("version",), parse_openssl_version),
    "nginx": Probe(("-v",), parse_nginx_version),
    "httpd": Probe(("-v",), parse_apache_version),
    "apache2": Probe(("-v",), parse_apache_version),
    "php": Probe(("-v",), parse_php_version),
    "node": Probe(("--version",), parse_node_version),
    "nodejs": Probe(("--version",), parse_node_version),
    "java": Probe(("-version",), parse_java_version),
    "postgres": Probe(("--version",), parse_postgres_version),
    "mysqld": Probe(("--version",), parse_mysqld_version),
    "mariadbd": Probe(("--version",), parse_mysqld_version),
    "redis-server": Probe(("--version",), parse_redis_version),
    "sshd": Probe(("-V",), parse_openssh_version),
    "ssh": Probe(("-V",), parse_openssh_version),
}

# Versioned names such as "python3.12" or "php8.3", which an extra_paths entry may name directly.
_VERSIONED = re.compile(r"(python|php)[\d.]+")


def probe_for(binary_name: str) -> Probe | None:
    """The probe for a file name ("node", "node.exe", "python3.12"), or None if it is not a tracked one."""
    name = binary_name.lower().removesuffix(".exe")
    if name in PROBES:
        return PROBES[name]
    m = _VERSIONED.fullmatch(name)
    return PROBES[m.group(1) if m.group(1) == "php" else "python3"] if m else None


def parse_version_output(binary_name: str, text: str) -> Detected | None:
    """Product and version from the output of the probe for ``binary_name``."""
    probe = probe_for(binary_name)
    return probe.parse(text) if probe else None


# Version managers name each install's directory after its version, which lets the check report a
# runtime it must not run (one owned by another user) without executing it.
_VERSION_DIRS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"/\.pyenv/versions/(\d+\.\d+\.\d+)/bin/python[\d.]*$"), "python"),
    (re.compile(r"/\.nvm/versions/node/v(\d+\.\d+\.\d+)/bin/node$"), "nodejs"),
]


def version_from_path(path: str) -> Detected | None:
    """Product and version from a pyenv or nvm install path, e.g. "/home/a/.nvm/versions/node/v16.20.2/bin/node"."""
    for pattern, product in _VERSION_DIRS:
        m = pattern.search(path)
        if m:
            return Detected(product, m.group(1))
    return None


def runtime_item(detected: Detected, path: str, note: str = "") -> EolItem:
    """``EolItem(kind="runtime", name="nodejs 16.20.2 (/usr/local/bin/node)", lifecycle="upstream", ...)``."""
    reason = f"not installed by the OS package manager ({path})"
    return EolItem(
        kind=KIND_RUNTIME,
        name=f"{detected.product} {detected.version} ({path})",
        product=detected.product,
        version=detected.version,
        source=f"binary:{path}",
        lifecycle=LIFECYCLE_UPSTREAM,
        lifecycle_reason=f"{reason}; {note}" if note else reason,
    )
