"""``Eol.collect()`` on the machine running the tests (a Debian 12 host in the reference setup).

Assertions are derived from what the host really has (its os-release, its dpkg database), and a test
whose subject is absent skips saying so.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from checks.base import Context
from checks.eol import Eol, EolArgs, EolResult, parse_dpkg_status, parse_os_release

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads a Linux host")

OS_RELEASE = next((p for p in (Path("/etc/os-release"), Path("/usr/lib/os-release")) if p.exists()), None)
DPKG_STATUS = Path("/var/lib/dpkg/status")


def _collect(extra_paths: list[str] | None = None) -> tuple[EolResult, Context]:
    ctx = Context()
    [result] = Eol().collect(EolArgs(extra_paths=extra_paths or []), ctx)
    return result, ctx


def _dpkg() -> dict[str, tuple[str, str]]:
    if not DPKG_STATUS.exists():
        pytest.skip("no dpkg database on this host")
    return {p.name: (p.version, p.maintainer) for p in parse_dpkg_status(DPKG_STATUS.read_text(errors="replace"))}


def test_os_item_is_this_debian_release() -> None:
    if OS_RELEASE is None:
        pytest.skip("this host has no os-release")
    osr = parse_os_release(OS_RELEASE.read_text())
    if osr.id != "debian":
        pytest.skip(f"the expectations are Debian's; this host is {osr.id!r}")
    result, _ = _collect()
    [os_item] = [i for i in result.items if i.kind == "os"]
    assert (os_item.name, os_item.product, os_item.version, os_item.lifecycle, os_item.source) == (
        f"debian {osr.version_id}",
        "debian",
        osr.version_id,
        "os",
        "os-release",
    )
    assert os_item.cycle == ""  # cycle and dates are the controller's


def test_vendor_patched_openssl_is_not_misreported() -> None:
    installed = _dpkg()
    if "openssl" not in installed or "debian" not in installed["openssl"][1]:
        pytest.skip("openssl is not installed from Debian here")
    result, _ = _collect()
    [item] = [i for i in result.items if i.source == "dpkg:openssl"]
    assert item.lifecycle == "os"
    assert item.lifecycle_reason.startswith("shipped and patched by Debian")


def test_nodesource_nodejs_follows_upstream() -> None:
    installed = _dpkg()
    if "nodesource" not in installed.get("nodejs", ("", ""))[0]:
        pytest.skip("NodeSource's nodejs is not installed here")
    result, _ = _collect()
    [item] = [i for i in result.items if i.source == "dpkg:nodejs"]
    assert (item.product, item.lifecycle) == ("nodejs", "upstream")
    assert "NodeSource" in item.lifecycle_reason


def test_tarball_runtime_past_upstream_eol_is_found(tmp_path: Path) -> None:
    # Node 16 reached its upstream end of life in 2023; a tarball copy is nobody's to patch.
    node = tmp_path / "node-v16.20.2-linux-x64" / "bin" / "node"
    node.parent.mkdir(parents=True)
    node.write_text("#!/bin/sh\necho v16.20.2\n")
    node.chmod(0o755)
    result, _ = _collect(extra_paths=[str(node)])
    [item] = [i for i in result.items if i.source == f"binary:{node}"]
    assert (item.kind, item.product, item.version, item.lifecycle) == ("runtime", "nodejs", "16.20.2", "upstream")
    assert item.lifecycle_reason == f"not installed by the OS package manager ({node})"


def test_agent_interpreter_is_reported_unless_a_package_owns_it() -> None:
    result, _ = _collect()
    own = [i for i in result.items if i.lifecycle_reason.endswith("the agent's own interpreter")]
    if not own:
        pytest.skip(f"{sys.executable} belongs to an OS package, whose item covers it")
    [item] = own
    assert (item.kind, item.product, item.lifecycle) == ("runtime", "python", "upstream")
    assert item.version == ".".join(map(str, sys.version_info[:3]))


def test_names_are_unique_and_collect_is_fast() -> None:
    started = time.perf_counter()
    result, _ = _collect()
    elapsed = time.perf_counter() - started
    names = [i.name for i in result.items]
    assert len(names) == len(set(names))
    assert elapsed < 5, f"collect took {elapsed:.1f}s"
