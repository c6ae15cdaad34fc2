"""``vigil-agent run`` read without argparse: the same arguments as argparse reads, or none at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import RunArgs, build_parser, quick_run_args

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    ["run", "--data-dir", "/var/lib/vigil"],
    ["run", "--data-dir", "/var/lib/vigil", "--debug"],
    ["run", "--debug", "--data-dir", "/var/lib/vigil"],
    ["run", "--data-dir", "/var/lib/vigil", "--config", "/etc/vigil/agent.yaml"],
    ["run", "--config", "/etc/vigil/agent.yaml", "--debug", "--data-dir", "relative/dir"],
    ["run", "--data-dir", "", "--config", ""],
    ["run", "--data-dir", "dir with spaces"],
])
def test_what_it_reads_argparse_reads_the_same(argv: list[str]) -> None:
    ns = build_parser().parse_args(argv)
    assert quick_run_args(argv) == RunArgs(ns.data_dir, ns.config, ns.debug)


@pytest.mark.parametrize("argv", [
    [],
    ["enroll", "--controller", "c:1", "--token", "t", "--data-dir", "/d"],
    ["--debug", "run", "--data-dir", "/d"],
    ["run"],
    ["run", "--help"],
    ["run", "-h"],
    ["run", "--data-dir"],
    ["run", "--data-dir=/d"],
    ["run", "--data", "/d"],
    ["run", "--data-dir", "/d", "--data-dir", "/e"],
    ["run", "--data-dir", "/d", "--debug", "--debug"],
    ["run", "--data-dir", "--debug"],
    ["run", "--data-dir", "-"],
    ["run", "--data-dir", "/d", "--config"],
    ["run", "--data-dir", "/d", "extra"],
    ["run", "--data-dir", "/d", "--unknown"],
])
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert quick_run_args(argv) is None


def test_run_reports_errors_like_the_other_commands_without_loading_argparse(tmp_path: Path) -> None:
    code = ("import sys, agent.cli\n"
            "rc = agent.cli.main(['run', '--data-dir', sys.argv[1]])\n"
            "print(rc, 'argparse' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    assert out.stdout.split() == ["1", "False"]
    assert out.stderr.startswith(f"vigil-agent: error: {tmp_path} holds no enrolled agent")
