"""``vigil-agent device parse``: the Contract's exit codes, one JSON document, one line on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.checks.device._fixtures import FIXTURES

ROOT = Path(__file__).resolve().parents[3]
VERSION = FIXTURES / "cisco_nxos" / "show_version" / "n9k_c9396px_7.0-3-I4-3.txt"


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "device", "parse", *args], cwd=ROOT,
                          input=stdin.decode() if stdin is not None else None, capture_output=True, text=True,
                          check=False)


def test_json_is_one_document_with_the_version_as_printed() -> None:
    out = _run("--platform", "cisco_nxos", "--command", "show version", str(VERSION), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["version"] == "7.0(3)I4(3)" and doc["platform"] == "cisco_nxos" and doc["serial"] == "SAL1234ABCD"


def test_standard_input_and_text_output() -> None:
    text = (FIXTURES / "fortinet" / "get_system_status" / "fgt60e_7.0.13.txt").read_bytes()
    out = _run("--platform", "fortinet", "--command", "get  system status", "-", stdin=text)
    assert out.returncode == 0, out.stderr
    assert "version: 7.0.13" in out.stdout.splitlines()
    assert "signatures[0].released_at: 2023-10-23T20:53:00Z" in out.stdout.splitlines()


def test_config_json_carries_the_digest_and_never_a_secret() -> None:
    path = FIXTURES / "cisco_ios" / "show_running-config" / "sw_acc_01_base.txt"
    out = _run("--platform", "cisco_ios", "--command", "show running-config", str(path), "--json", "--config-text")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc["config"]["digest"]) == 64 and "<redacted>" in doc["config"]["text"]
    assert "R4diusS3cret" not in out.stdout


@pytest.mark.parametrize(("args", "listed"), [
    (["--platform", "cisco_ios9", "--command", "show version"], "known: arista_eos, cisco_asa, cisco_ios"),
    (["--platform", "fortinet", "--command", "show version"], "known commands: 'get system status'"),
])
def test_unknown_platform_or_command_is_a_usage_error_listing_the_known_ones(args: list[str], listed: str) -> None:
    out = _run(*args, str(VERSION))
    assert out.returncode == 2
    assert listed in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert out.stdout == ""


def test_an_abbreviated_command_is_read_as_the_device_reads_it() -> None:
    out = _run("--platform", "cisco_nxos", "--command", "sh ver", str(VERSION), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["command"] == "show version"
    ambiguous = _run("--platform", "cisco_ios", "--command", "sh ntp", str(VERSION))
    assert ambiguous.returncode == 2 and "no parser for 'sh ntp' on cisco_ios" in ambiguous.stderr


def test_unparseable_output_is_one_line_naming_platform_and_command(tmp_path: Path) -> None:
    bad = tmp_path / "capture.txt"
    bad.write_text("% Invalid input detected at '^' marker.\n")
    out = _run("--platform", "juniper_junos", "--command", "show version", str(bad), "--json")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "vigil-agent: error: juniper_junos 'show version': expected a line 'Junos: X' or 'JUNOS Software Release [X]'; "
        "found none"]


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    out = _run("--platform", "linux", "--command", "uname -a", str(tmp_path / "nope.txt"))
    assert out.returncode == 1
    assert out.stderr.strip() == f"vigil-agent: error: cannot read {tmp_path / 'nope.txt'}: No such file or directory"


def test_the_agent_command_line_does_not_load_the_device_parsers_until_asked() -> None:
    code = ("import sys, agent.cli\n"
            "agent.cli.build_parser().parse_args(['run', '--data-dir', '/d'])\n"
            "print(any(m.startswith('checks.device') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_device_package_imports_only_the_standard_library_and_pure_vigil_parsers() -> None:
    import ast

    allowed_vigil = ("checks.device", "checks.ntp.parse", "checks.eol.osrelease", "common.errors")
    found: dict[str, set[str]] = {}
    for path in (ROOT / "checks" / "device").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or name.startswith(allowed_vigil):
                    continue
                found.setdefault(str(path.relative_to(ROOT)), set()).add(name)
    assert found == {}
