"""Collecting part of the ``eol`` check: read the OS and package databases, find and run version commands.

Everything is read under ``EolArgs.root`` (normally "/"), so tests and offline inspection can point the
check at an unpacked filesystem. Parsing and lifecycle decisions live in the pure modules
(:mod:`~checks.eol.osrelease`, :mod:`~checks.eol.packages`, :mod:`~checks.eol.runtimes`).
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from checks.base import Args, Check, Context
from checks.eol.model import KIND_OS, LIFECYCLE_OS, EolItem, EolResult
from checks.eol.osrelease import OsRelease, os_item, parse_os_release
from checks.eol.packages import (
    RPM_QUERY_FORMAT,
    InstalledPackage,
    package_items,
    parse_apk_installed,
    parse_dpkg_status,
    parse_rpm_qa,
    parse_rpm_qf,
)
from checks.eol.runtimes import PROBES, Detected, probe_for, runtime_item, version_from_path
from common.errors import UsageError

# Where binaries that bypass the package manager usually live, besides $PATH. Globs are expanded under
# the root; "shims" directories are skipped because a pyenv/rbenv shim runs whatever version the
# caller's environment selects, not a binary of its own (the real ones are under versions/).
_STANDARD_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
_GLOB_DIRS = (
    "/usr/local/*/bin",  # /usr/local/pgsql/bin, /usr/local/mysql/bin
    "/usr/local/*/sbin",  # /usr/local/nginx/sbin
    "/opt/*/bin",  # /opt/jdk-21/bin, /opt/node-v16.20.2-linux-x64/bin
    "/opt/*/sbin",
    "/root/.pyenv/versions/*/bin",
    "/home/*/.pyenv/versions/*/bin",
    "/root/.nvm/versions/node/*/bin",
    "/home/*/.nvm/versions/node/*/bin",
)
_VERSION_TIMEOUT_S = 5.0  # a JVM can take a second to start on a busy host; most answer in milliseconds
_RPM_TIMEOUT_S = 30.0
_MAX_BINARIES = 64  # bounds the work if a directory is full of look-alikes
# Version commands run with a fixed environment: no JAVA_TOOL_OPTIONS or NODE_OPTIONS noise in the output,
# no LD_PRELOAD or PYTHONPATH from whoever started the agent.
_PROBE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


@dataclass
class EolArgs(Args):
    """``root``: filesystem root to inspect ("/" on a live host). ``extra_paths``: more binaries (or
    directories of binaries) to probe, e.g. an application's bundled runtime."""

    root: str = "/"
    extra_paths: list[str] = field(default_factory=list)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> EolArgs:
        # Unknown keys are ignored so a newer controller can push parameters an older agent lacks.
        root = params.get("root", "/")
        if not isinstance(root, str) or not os.path.isabs(root):
            raise UsageError(f'eol: params.root must be an absolute path such as "/", got {root!r}')
        extra = params.get("extra_paths", [])
        if not isinstance(extra, list) or not all(isinstance(p, str) and os.path.isabs(p) for p in extra):
            raise UsageError(f"eol: params.extra_paths must be a list of absolute paths, got {extra!r}")
        return cls(root=root, extra_paths=list(extra))


class Eol(Check[EolArgs, EolResult]):
    """The OS, installed packages and runtimes, each with whose lifecycle applies and why.

    The agent reports what is installed; the controller maps every item onto release cycles and EOL
    dates from its own dataset. Example result (Debian 12 with NodeSource's nodejs and a pyenv Python)::

        EolResult(items=[
            EolItem(kind="os", name="debian 12", product="debian", version="12", source="os-release",
                    lifecycle="os", lifecycle_reason="the operating system itself"),
            EolItem(kind="package", name="openssl 3.0.19 (dpkg:openssl)", product="openssl",
                    version="3.0.19", source="dpkg:openssl", lifecycle="os",
                    lifecycle_reason="shipped and patched by Debian, which backports fixes into openssl "
                                     "3.0.19-1~deb12u2: follows Debian 12's lifecycle, not upstream openssl's"),
            EolItem(kind="package", name="nodejs 20.20.2 (dpkg:nodejs)", product="nodejs",
                    version="20.20.2", source="dpkg:nodejs", lifecycle="upstream",
                    lifecycle_reason="from NodeSource (deb.nodesource.com), not Debian: nodejs "
                                     "20.20.2-1nodesource1+repack1 gets no fixes from the OS vendor, so "
                                     "upstream nodejs's lifecycle applies"),
            EolItem(kind="runtime", name="python 3.7.16 (/root/.pyenv/versions/3.7.16/bin/python3)",
                    product="python", version="3.7.16",
                    source="binary:/root/.pyenv/versions/3.7.16/bin/python3", lifecycle="upstream",
                    lifecycle_reason="not installed by the OS package manager "
                                     "(/root/.pyenv/versions/3.7.16/bin/python3)"),
        ])

    ``cycle`` and the dates stay empty: they are the controller's. A binary that a package owns is not
    reported again (the package item covers it). One the agent may not safely run (owned by another
    user, or writable by others: running it as root would hand that user the agent's privileges) is
    reported from its pyenv/nvm directory name when it has one, and otherwise skipped with a warning.
    """

    id = "eol"
    version = 1
    platforms = ("linux", "darwin", "win32")
    args_type: ClassVar[type[Args]] = EolArgs
    report_field = "eol"
    default_interval_s = 86400

    def collect(self, args: EolArgs, ctx: Context) -> Iterator[EolResult]:
        root = Path(args.root)
        live = os.path.realpath(args.root) == os.path.realpath(os.sep)
        osr = _read_os_release(root, ctx)
        items: list[EolItem] = []
        if osr is not None:
            items.append(os_item(osr))
        elif live and ctx.platform.startswith(("darwin", "win32")):
            items.append(_platform_os_item(ctx.platform))
        else:
            ctx.warnings.append(
                f"no os-release under {args.root} (etc/os-release or usr/lib/os-release): the OS item is missing"
            )
        packages = _read_packages(root, ctx)
        items.extend(package_items(packages, osr or OsRelease()))
        items.extend(_runtime_items(root, live, args.extra_paths, packages, ctx))
        yield EolResult(items=_unique_names(items))


# ---------------------------------------------------------------------------------------------------
# The OS


def _read_os_release(root: Path, ctx: Context) -> OsRelease | None:
    # os-release(5): /etc/os-release takes precedence, /usr/lib/os-release is the fallback.
    for rel in ("etc/os-release", "usr/lib/os-release"):
        path = root / rel
        try:
            return parse_os_release(path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            continue
        except OSError as exc:
            ctx.warnings.append(f"cannot read {path}: {exc.strerror or exc}")
    return None


def _platform_os_item(plat: str) -> EolItem:
    if plat.startswith("darwin"):
        version = platform.mac_ver()[0]
        return EolItem(
            kind=KIND_OS,
            name=f"macos {version}".strip(),
            product="macos",
            version=version,
            source="platform.mac_ver",
            lifecycle=LIFECYCLE_OS,
            lifecycle_reason="the operating system itself",
        )
    edition = getattr(platform, "win32_edition", lambda: "")() or ""
    product = "windows-server" if "server" in edition.lower() else "windows"
    return EolItem(
        kind=KIND_OS,
        name=f"{product} {platform.release()}".strip(),
        product=product,
        version=platform.version(),
        source="platform.win32_ver",
        lifecycle=LIFECYCLE_OS,
        lifecycle_reason="the operating system itself",
    )


# ---------------------------------------------------------------------------------------------------
# Packages


def _read_packages(root: Path, ctx: Context) -> list[InstalledPackage]:
    packages: list[InstalledPackage] = []
    status = root / "var/lib/dpkg/status"
    text = _read_text(status, ctx)
    if text is not None:
        packages.extend(parse_dpkg_status(text))
    apk_db = root / "lib/apk/db/installed"
    text = _read_text(apk_db, ctx)
    if text is not None:
        packages.extend(parse_apk_installed(text))
    if _has_rpm_db(root):
        packages.extend(_rpm_packages(root, ctx))
    return packages


def _read_text(path: Path, ctx: Context) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        ctx.warnings.append(f"cannot read {path}: {exc.strerror or exc}; its packages are missing")
        return None


def _has_rpm_db(root: Path) -> bool:
    # Debian hosts may carry an rpm binary with an empty database: look for a database, not the tool.
    for rel in ("var/lib/rpm", "usr/lib/sysimage/rpm"):
        db = root / rel
        if db.is_dir() and any(db.iterdir()):
            return True
    return False


def _rpm_packages(root: Path, ctx: Context) -> list[InstalledPackage]:
    rpm = shutil.which("rpm")
    if rpm is None:
        ctx.warnings.append(f"{root} has an rpm database but no rpm command is installed to read it")
        return []
    try:
        done = subprocess.run(
            [rpm, "--root", str(root), "-qa", "--qf", RPM_QUERY_FORMAT],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_RPM_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        ctx.warnings.append(f"rpm -qa failed ({exc}); rpm packages are missing")
        return []
    if done.returncode != 0:
        ctx.warnings.append(f"rpm -qa exited {done.returncode}: {done.stderr.strip()[:200]}")
    return parse_rpm_qa(done.stdout)


# ---------------------------------------------------------------------------------------------------
# Runtimes


@dataclass(frozen=True)
class _Binary:
    path: str  # where it was found, inside the root ("/usr/local/bin/node")
    resolved: str  # symlinks resolved, inside the root
    note: str = ""


def _runtime_items(
    root: Path, live: bool, extra_paths: Iterable[str], packages: list[InstalledPackage], ctx: Context
) -> list[EolItem]:
    binaries = _find_binaries(root, live, extra_paths, ctx)
    owned = _owned_paths(root, binaries, packages)
    items: list[EolItem] = []
    to_run: list[_Binary] = []
    for binary in binaries:
        if any(alias in owned for p in (binary.path, binary.resolved) for alias in _aliases(p)):
            continue  # the package's own item covers it, with the right lifecycle
        problem = _unsafe_to_run(_host(root, binary.resolved))
        if not problem:
            to_run.append(binary)
            continue
        from_path = version_from_path(binary.path)
        if from_path is None:
            ctx.warnings.append(f"did not run {binary.path} to read its version: {problem}")
        else:
            note = f"version taken from its install directory, not run because {problem}"
            items.append(runtime_item(from_path, binary.path, note))
    if to_run:
        with ThreadPoolExecutor(max_workers=min(8, len(to_run)), thread_name_prefix="eol-probe") as pool:
            found = list(pool.map(lambda b: _probe(root, live, b, ctx), to_run))
        items += [runtime_item(d, b.path, b.note) for b, d in zip(to_run, found, strict=True) if d is not None]
    return sorted(items, key=lambda i: i.name)


def _find_binaries(root: Path, live: bool, extra_paths: Iterable[str], ctx: Context) -> list[_Binary]:
    dirs: list[str] = list(_STANDARD_DIRS)
    if live:
        dirs += [d for d in os.environ.get("PATH", "").split(os.pathsep) if os.path.isabs(d)]
    for pattern in _GLOB_DIRS:
        dirs += sorted(_in_root(root, p) for p in glob.glob(str(_host(root, pattern))))
    candidates: list[tuple[str, str]] = []
    for d in dict.fromkeys(os.path.normpath(d) for d in dirs):
        if "shims" in Path(d).parts:
            continue
        candidates += [(f"{d.rstrip('/')}/{name}", "") for name in _names_in(_host(root, d))]
    for extra in extra_paths:
        host = _host(root, extra)
        if host.is_dir():
            candidates += [(f"{extra.rstrip('/')}/{name}", "") for name in _names_in(host)]
        else:
            candidates.append((extra, ""))
    if live and sys.executable:
        candidates.append((sys.executable, "the agent's own interpreter"))
    binaries: dict[str, _Binary] = {}
    for path, note in candidates:
        resolved = _resolve(root, path)
        if resolved is None or probe_for(Path(path).name) is None or not _is_executable(_host(root, resolved)):
            continue
        if resolved in binaries:
            if note:  # the same file found earlier under another name: keep that name, add the note
                binaries[resolved] = _Binary(binaries[resolved].path, resolved, note)
            continue
        binaries[resolved] = _Binary(path, resolved, note)
    if len(binaries) > _MAX_BINARIES:
        ctx.warnings.append(f"{len(binaries)} runtime binaries found; only the first {_MAX_BINARIES} were probed")
    return list(binaries.values())[:_MAX_BINARIES]


def _names_in(directory: Path) -> list[str]:
    suffix = ".exe" if sys.platform == "win32" else ""
    # lexists: under a fake root an absolute symlink dangles on the host yet resolves inside the root.
    return [name for name in (n + suffix for n in PROBES) if os.path.lexists(directory / name)]


def _is_executable(host_path: Path) -> bool:
    return host_path.is_file() and os.access(host_path, os.X_OK)


def _probe(root: Path, live: bool, binary: _Binary, ctx: Context) -> Detected | None:
    probe = probe_for(Path(binary.path).name)
    if probe is None:
        return None
    # On the live host run the name it was found under: multi-call binaries answer by argv[0]
    # (Debian's redis-server is a symlink to redis-check-rdb). Under another root an absolute symlink
    # would point out of it, so run the resolved file there.
    exe = binary.path if live else str(_host(root, binary.resolved))
    try:
        done = subprocess.run(
            [exe, *probe.args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_VERSION_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            env=None if sys.platform == "win32" else _PROBE_ENV,  # Windows programs need SYSTEMROOT & co.
            cwd=os.sep,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        ctx.warnings.append(f"could not read the version of {binary.path}: {exc}")
        return None
    detected = probe.parse(done.stdout + done.stderr)
    if detected is None:
        ctx.warnings.append(f"could not read the version of {binary.path} from its {' '.join(probe.args)} output")
    return detected


def _unsafe_to_run(host_path: Path) -> str:
    """Why running this file as the agent would be unsafe, or "" when it is fine."""
    if sys.platform == "win32":
        return ""
    try:
        st = host_path.stat()
    except OSError as exc:
        return f"cannot stat it ({exc.strerror or exc})"
    if st.st_uid not in (0, os.geteuid()):
        return f"it belongs to uid {st.st_uid}, and running it would lend that user the agent's privileges"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "it is writable by group or others, so anyone could have replaced it"
    return ""


# ---------------------------------------------------------------------------------------------------
# Which binaries a package owns


def _owned_paths(root: Path, binaries: list[_Binary], packages: list[InstalledPackage]) -> set[str]:
    """The subset of the binaries' paths (with /usr-merge aliases) that some installed package owns."""
    wanted = {alias for b in binaries for p in (b.path, b.resolved) for alias in _aliases(p)}
    if not wanted:
        return set()
    owned = {f for pkg in packages if pkg.manager == "apk" for f in pkg.files} & wanted
    info = root / "var/lib/dpkg/info"
    if info.is_dir():
        for listing in info.glob("*.list"):
            try:
                owned |= wanted.intersection(listing.read_text(encoding="utf-8", errors="replace").splitlines())
            except OSError:
                continue
    if any(pkg.manager == "rpm" for pkg in packages):
        owned |= _rpm_owned(root, sorted(wanted - owned))
    return owned


def _rpm_owned(root: Path, paths: list[str]) -> set[str]:
    rpm = shutil.which("rpm")
    if rpm is None:
        return set()
    owned: set[str] = set()
    for path in paths:
        if not _host(root, path).exists():
            continue
        try:
            done = subprocess.run(
                [rpm, "--root", str(root), "-qf", "--qf", "%{NAME}\\n", path],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=_RPM_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if parse_rpm_qf(done.stdout + done.stderr) is not None:
            owned.add(path)
    return owned


def _aliases(path: str) -> tuple[str, ...]:
    """A path and its /usr-merge twin: dpkg may list /bin/x while the file is found as /usr/bin/x."""
    for short in ("/bin/", "/sbin/", "/lib/", "/lib64/"):
        if path.startswith(short):
            return (path, "/usr" + path)
        if path.startswith("/usr" + short):
            return (path, path[4:])
    return (path,)


# ---------------------------------------------------------------------------------------------------
# Paths under the root


def _host(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _in_root(root: Path, host_path: str) -> str:
    rel = os.path.relpath(host_path, root)
    return "/" + rel if rel != "." else "/"


def _resolve(root: Path, path: str, max_links: int = 40) -> str | None:
    """``path`` with every symlink resolved, staying inside ``root`` (absolute targets restart at root).

    None for a symlink loop. A missing file resolves to itself; the caller checks existence.
    """
    if root == Path(os.sep):
        return os.path.realpath(path)
    pending = [p for p in path.split("/") if p]
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        host = root.joinpath(*done, part)
        if host.is_symlink():
            links += 1
            if links > max_links:
                return None
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            pending = [p for p in target.split("/") if p] + pending
        else:
            done.append(part)
    return "/" + "/".join(done)


def _unique_names(items: list[EolItem]) -> list[EolItem]:
    # The name is the finding subject, so a collision would merge two findings on the controller.
    seen: dict[str, int] = {}
    unique: list[EolItem] = []
    for item in items:
        count = seen.get(item.name, 0) + 1
        seen[item.name] = count
        if count > 1:
            item = EolItem(**{**item.__dict__, "name": f"{item.name} #{count}"})
        unique.append(item)
    return unique
