"""Version-command parsers on captured output (see fixtures/README.md for which runs were real)."""

from __future__ import annotations

import pytest

from checks.eol import Detected, EolItem, parse_version_output, runtime_item
from checks.eol.runtimes import PROBES, probe_for, version_from_path
from tests.checks.eol import _fixtures

# fixture -> (binary the output came from, expected product and version)
EXPECTED: dict[str, tuple[str, Detected]] = {
    "apache2-v_debian12.txt": ("apache2", Detected("apache-http-server", "2.4.71")),
    "httpd-v_tarball.txt": ("httpd", Detected("apache-http-server", "2.4.58")),
    "java-version_debian12.txt": ("java", Detected("openjdk", "17.0.15")),
    "java-version_temurin17.txt": ("java", Detected("eclipse-temurin", "17.0.10")),
    "java-version_corretto21.txt": ("java", Detected("amazon-corretto", "21.0.2")),
    "java-version_oracle8.txt": ("java", Detected("oracle-jdk", "1.8.0_401")),
    "java-version_jdk.java.net21.txt": ("java", Detected("openjdk-builds-from-oracle", "21.0.2")),
    "mariadbd-version_debian12.txt": ("mariadbd", Detected("mariadb", "10.11.19")),
    "mariadbd-version_tarball11.2.txt": ("mariadbd", Detected("mariadb", "11.2.2")),
    "mysqld-version_mysql8.0.txt": ("mysqld", Detected("mysql", "8.0.36")),
    "nginx-v_debian12.txt": ("nginx", Detected("nginx", "1.22.1")),
    "nginx-v_tarball.txt": ("nginx", Detected("nginx", "1.25.4")),
    "node-version_nodesource20.txt": ("node", Detected("nodejs", "20.20.2")),
    "node-version_tarball16.txt": ("node", Detected("nodejs", "16.20.2")),
    "openssl-version_debian12.txt": ("openssl", Detected("openssl", "3.0.19")),
    "openssl-version_rhel8.txt": ("openssl", Detected("openssl", "1.1.1k")),
    "openssl-version_macos.txt": ("openssl", Detected("libressl", "3.3.6")),
    "php-v_debian12.txt": ("php", Detected("php", "8.2.35")),
    "php-v_ubuntu22.04.txt": ("php", Detected("php", "8.1.2")),
    "postgres-version_debian12.txt": ("postgres", Detected("postgresql", "15.18")),
    "postgres-version_source16.txt": ("postgres", Detected("postgresql", "16.2")),
    "python3-version_debian12.txt": ("python3", Detected("python", "3.11.2")),
    "python3-version_pyenv3.11.7.txt": ("python3", Detected("python", "3.11.7")),
    "python-version_pyenv2.7.18.txt": ("python", Detected("python", "2.7.18")),
    "redis-server-version_debian12.txt": ("redis-server", Detected("redis", "7.0.15")),
    "redis-server-version_valkey8.txt": ("redis-server", Detected("valkey", "8.0.1")),
    "ssh-V_debian12.txt": ("ssh", Detected("openssh", "9.2p1")),
    "ssh-V_windows.txt": ("ssh.exe", Detected("openssh", "9.5p1")),
    # Debian 12's sshd -V leaves out the portable "p1"; older sshd reject -V but print the version.
    "sshd-V_debian12.txt": ("sshd", Detected("openssh", "9.2")),
    "sshd-V_ubuntu22.04.txt": ("sshd", Detected("openssh", "8.9p1")),
}


def test_every_version_fixture_has_an_expectation() -> None:
    assert sorted(EXPECTED) == _fixtures.names("versions")


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_version_output(fixture: str) -> None:
    binary, expected = EXPECTED[fixture]
    assert parse_version_output(binary, _fixtures.text(f"versions/{fixture}")) == expected


@pytest.mark.parametrize("binary", sorted(PROBES))
def test_unrelated_output_is_not_a_version(binary: str) -> None:
    assert parse_version_output(binary, "sh: 1: thing: not found\n") is None


def test_probe_names() -> None:
    assert probe_for("python3.12") is PROBES["python3"]
    assert probe_for("php8.3") is PROBES["php"]
    assert probe_for("NODE.EXE") is PROBES["node"]
    assert probe_for("bash") is None
    assert parse_version_output("bash", "GNU bash, version 5.2.15") is None


def test_runtime_item() -> None:
    item = runtime_item(Detected("nodejs", "16.20.2"), "/usr/local/bin/node")
    assert item == EolItem(
        kind="runtime",
        name="nodejs 16.20.2 (/usr/local/bin/node)",
        product="nodejs",
        version="16.20.2",
        source="binary:/usr/local/bin/node",
        lifecycle="upstream",
        lifecycle_reason="not installed by the OS package manager (/usr/local/bin/node)",
    )
    noted = runtime_item(Detected("python", "3.11.7"), "/opt/py/bin/python3", "the agent's own interpreter")
    assert noted.lifecycle_reason.endswith("(/opt/py/bin/python3); the agent's own interpreter")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/root/.pyenv/versions/3.7.16/bin/python3", Detected("python", "3.7.16")),
        ("/home/a/.pyenv/versions/2.7.18/bin/python", Detected("python", "2.7.18")),
        ("/home/a/.nvm/versions/node/v16.20.2/bin/node", Detected("nodejs", "16.20.2")),
        ("/home/a/.pyenv/versions/miniconda3-latest/bin/python3", None),
        ("/usr/local/bin/node", None),
    ],
)
def test_version_from_install_directory(path: str, expected: Detected | None) -> None:
    assert version_from_path(path) == expected
