"""``Eol.collect()`` against a fake filesystem root built from the fixtures, with real executables."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from checks.base import Context
from checks.eol import Eol, EolArgs, EolItem, EolResult
from common.errors import UsageError
from tests.checks.eol import _fixtures

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fake roots use POSIX scripts and symlinks")


def write(root: Path, rel: str, text: str, mode: int = 0o644) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def script(root: Path, rel: str, output: str, mode: int = 0o755) -> Path:
    """An executable that prints ``output`` the way a version command would."""
    return write(root, rel, f"#!/bin/sh\nprintf '%s\\n' '{output}'\n", mode)


def debian_root(root: Path) -> Path:
    write(root, "etc/os-release", _fixtures.text("os-release/debian-12"))
    write(root, "var/lib/dpkg/status", _fixtures.text("dpkg/debian12-host.status"))
    # NodeSource's package owns /usr/bin/node, as on this host.
    write(root, "var/lib/dpkg/info/nodejs.list", "/.\n/usr\n/usr/bin\n/usr/bin/node\n")
    script(root, "usr/bin/node", "v20.20.2")
    return root


def collect(root: Path, extra_paths: list[str] | None = None) -> tuple[EolResult, Context]:
    ctx = Context()
    [result] = Eol().collect(EolArgs(root=str(root), extra_paths=extra_paths or []), ctx)
    return result, ctx


def runtimes(result: EolResult) -> dict[str, EolItem]:
    return {i.name: i for i in result.items if i.kind == "runtime"}


def test_tarball_node_in_usr_local_is_upstream_packaged_one_is_not_repeated(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    script(root, "usr/local/bin/node", "v16.20.2")
    result, ctx = collect(root)
    assert ctx.warnings == []
    by_name = result.by_name()
    assert by_name["debian 12"].kind == "os"
    assert by_name["nodejs 20.20.2 (dpkg:nodejs)"].lifecycle == "upstream"  # the package, from NodeSource
    assert by_name["openssl 3.0.19 (dpkg:openssl)"].lifecycle == "os"
    # /usr/bin/node belongs to the nodejs package, whose item already covers it.
    assert runtimes(result) == {
        "nodejs 16.20.2 (/usr/local/bin/node)": EolItem(
            kind="runtime",
            name="nodejs 16.20.2 (/usr/local/bin/node)",
            product="nodejs",
            version="16.20.2",
            source="binary:/usr/local/bin/node",
            lifecycle="upstream",
            lifecycle_reason="not installed by the OS package manager (/usr/local/bin/node)",
        )
    }
    assert result.items[0].kind == "os"  # the OS first, then packages, then runtimes


def test_absolute_symlink_is_resolved_inside_the_root_and_reported_once(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    script(root, "opt/node-v16.20.2-linux-x64/bin/node", "v16.20.2")
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/node").symlink_to("/opt/node-v16.20.2-linux-x64/bin/node")
    result, ctx = collect(root)
    assert ctx.warnings == []
    # Found twice (usr/local/bin and /opt/*/bin), one file: one item, named where $PATH finds it.
    assert list(runtimes(result)) == ["nodejs 16.20.2 (/usr/local/bin/node)"]


def test_usr_merge_alias_counts_as_owned(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    # Merged /usr: a package that still lists /bin/node owns the /usr/bin/node found on the disk.
    write(root, "var/lib/dpkg/info/nodejs.list", "/.\n/bin\n/bin/node\n")
    (root / "bin").symlink_to("usr/bin")
    result, ctx = collect(root)
    assert ctx.warnings == []
    assert runtimes(result) == {}


def test_pyenv_pythons_and_extra_paths(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    py = script(root, "root/.pyenv/versions/3.7.16/bin/python3.7", "Python 3.7.16")
    (py.parent / "python3").symlink_to("python3.7")
    (py.parent / "python").symlink_to("python3.7")
    script(root, "srv/app/runtime/bin/php", "PHP 7.4.33 (cli) (built: Nov  8 2022 10:00:00) ( NTS )")
    result, ctx = collect(root, extra_paths=["/srv/app/runtime/bin"])
    assert ctx.warnings == []
    assert sorted(runtimes(result)) == [
        "php 7.4.33 (/srv/app/runtime/bin/php)",
        "python 3.7.16 (/root/.pyenv/versions/3.7.16/bin/python3)",
    ]


def test_binary_others_can_write_is_not_run(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    marker = tmp_path / "ran"
    write(root, "usr/local/bin/python3", f"#!/bin/sh\ntouch {marker}\necho Python 3.12.0\n", 0o777)
    (root / "usr/local/bin/python3").chmod(0o777)  # umask may have dropped the group/other write bits
    result, ctx = collect(root)
    assert runtimes(result) == {}
    assert not marker.exists()
    assert ctx.warnings == [
        "did not run /usr/local/bin/python3 to read its version: it is writable by group or others, "
        "so anyone could have replaced it"
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a file owned by another user")
def test_binary_of_another_user_is_not_run(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    marker = tmp_path / "ran"
    for rel in ("home/alice/.nvm/versions/node/v16.20.2/bin/node", "home/alice/bin/node"):
        node = write(root, rel, f"#!/bin/sh\ntouch {marker}\necho v16.20.2\n", 0o755)
        os.chown(node, 1000, 1000)
    result, ctx = collect(root, extra_paths=["/home/alice/bin/node"])
    assert not marker.exists()
    # nvm names the directory after the version, so that one is still reported, without running it.
    [item] = runtimes(result).values()
    assert (item.name, item.lifecycle) == (
        "nodejs 16.20.2 (/home/alice/.nvm/versions/node/v16.20.2/bin/node)",
        "upstream",
    )
    assert item.lifecycle_reason.endswith(
        "; version taken from its install directory, not run because it belongs to uid 1000, "
        "and running it would lend that user the agent's privileges"
    )
    assert ctx.warnings == [
        "did not run /home/alice/bin/node to read its version: it belongs to uid 1000, "
        "and running it would lend that user the agent's privileges"
    ]


def test_unreadable_version_output_is_a_warning(tmp_path: Path) -> None:
    root = debian_root(tmp_path)
    script(root, "usr/local/sbin/nginx", "something unexpected")
    result, ctx = collect(root)
    assert runtimes(result) == {}
    assert ctx.warnings == ["could not read the version of /usr/local/sbin/nginx from its -v output"]


def test_alpine_root_uses_apk_file_lists(tmp_path: Path) -> None:
    write(tmp_path, "etc/os-release", _fixtures.text("os-release/alpine-3.19.1"))
    write(tmp_path, "lib/apk/db/installed", _fixtures.text("apk/alpine-3.19.installed"))
    script(tmp_path, "usr/bin/node", "v20.15.1")  # apk's nodejs owns it
    script(tmp_path, "usr/local/bin/node", "v18.20.4")
    result, ctx = collect(tmp_path)
    assert ctx.warnings == []
    assert result.by_name()["alpine 3.19.1"].product == "alpine-linux"
    assert result.by_name()["nodejs 20.15.1 (apk:nodejs)"].lifecycle == "os"
    assert list(runtimes(result)) == ["nodejs 18.20.4 (/usr/local/bin/node)"]


def test_usr_lib_os_release_is_the_fallback(tmp_path: Path) -> None:
    write(tmp_path, "usr/lib/os-release", _fixtures.text("os-release/rocky-9.3"))
    result, ctx = collect(tmp_path)
    assert ctx.warnings == []
    assert [(i.name, i.product, i.version) for i in result.items] == [("rocky 9.3", "rocky-linux", "9.3")]


def test_missing_os_release_is_a_warning(tmp_path: Path) -> None:
    result, ctx = collect(tmp_path)
    assert result.items == []
    assert ctx.warnings == [
        f"no os-release under {tmp_path} (etc/os-release or usr/lib/os-release): the OS item is missing"
    ]


def test_args_from_params() -> None:
    assert EolArgs.from_params({}) == EolArgs(root="/", extra_paths=[])
    assert EolArgs.from_params({"root": "/mnt/img", "extra_paths": ["/opt/x/bin/java"], "later": 1}) == EolArgs(
        root="/mnt/img", extra_paths=["/opt/x/bin/java"]
    )
    with pytest.raises(UsageError, match=r"params\.root must be an absolute path"):
        EolArgs.from_params({"root": "relative"})
    with pytest.raises(UsageError, match=r"params\.extra_paths must be a list of absolute paths"):
        EolArgs.from_params({"extra_paths": "/usr/local/bin/node"})


def test_check_declaration() -> None:
    assert (Eol.id, Eol.version, Eol.platforms, Eol.report_field, Eol.default_interval_s, Eol.args_type) == (
        "eol",
        1,
        ("linux", "darwin", "win32"),
        "eol",
        86400,
        EolArgs,
    )
    assert "Example result" in (Eol.__doc__ or "")
