"""ClamAV: signature databases read from their headers, daemons from the process table.

The databases ``main``, ``daily`` and ``bytecode`` live in freshclam's database directory as ``.cvd``
(signed, as downloaded) or ``.cld`` (rebuilt locally after freshclam applied incremental updates).
Both start with the same 512-byte ASCII header, space-padded, fields split by ``:``::

    ClamAV-VDB:19 Nov 2024 08-40 +0000:27451:2067891:90:<md5>:<signature>:<builder>:1732005600
               build time (hh-mm)       version sigs flevel                        build time, epoch s

A ``.cvd`` continues with a gzipped tar, a ``.cld`` with a plain or gzipped tar; only the header is
read, so neither ``clamscan`` (which loads every signature: seconds and hundreds of MB) nor the
tar is touched. Other files of the directory (``*.sign``, ``*.cdiff``, ``freshclam.dat``) are ignored.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import ClassVar

import psutil

from checks.av.args import AvArgs
from checks.av.errors import CvdHeaderError
from checks.av.products.base import Probe
from checks.av.result import AvDatabase, AvProduct, age_hours
from checks.base import Context

NAME = "clamav"
DATABASE_NAMES = ("bytecode", "daily", "main")
CONTAINERS = (".cvd", ".cld")
HEADER_SIZE = 512
_MAGIC = b"ClamAV-VDB:"
_VERSION_TIMEOUT_S = 5.0
# Daemons, by process name: the scanner, the signature updater (``freshclam -d``), the on-access
# scanner. Without clamonacc, clamd scans only what it is asked to, so it is not real-time protection.
CLAMD, FRESHCLAM, CLAMONACC = "clamd", "freshclam", "clamonacc"
# Searched besides PATH because an agent started with a minimal PATH would miss the daemons.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/opt/homebrew/sbin", "/opt/homebrew/bin")

_MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}
_BUILD_TIME = re.compile(r"(\d{1,2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2})-(\d{2}) ([+-])(\d{2})(\d{2})")


def parse_cvd_header(data: bytes, path: str | os.PathLike[str]) -> AvDatabase:
    """The :class:`AvDatabase` described by the header at the start of ``data`` (a ``.cvd`` or ``.cld``).

    ``data`` is the file's first 512 bytes or more. The database name is the file name without its
    extension. ``built_at`` comes from the last field (epoch seconds); headers written before ClamAV
    0.93 lack it and fall back to the text time of the second field.

    Raises :class:`CvdHeaderError` (a ``ValueError``) when ``data`` is not a ClamAV database.
    """
    where = os.fspath(path)
    if not data.startswith(_MAGIC):
        raise CvdHeaderError(
            f"{where}: not a ClamAV database: it should start with 'ClamAV-VDB:' but starts with "
            f"{data[:16]!r}; delete it and let freshclam download it again"
        )
    if len(data) < HEADER_SIZE:
        raise CvdHeaderError(
            f"{where}: truncated ClamAV database: {len(data)} bytes, less than its {HEADER_SIZE}-byte header; "
            "delete it and let freshclam download it again"
        )
    try:
        text = data[:HEADER_SIZE].decode("ascii")
    except UnicodeDecodeError as exc:
        raise CvdHeaderError(f"{where}: damaged ClamAV database header: byte {exc.start} is not ASCII") from exc
    # Padding is spaces; NULs too in case a writer ever pads like C strings.
    fields = text.rstrip(" \0\n").split(":")
    if len(fields) < 8:
        raise CvdHeaderError(
            f"{where}: damaged ClamAV database header: {len(fields)} ':'-separated fields, expected 9 "
            "(ClamAV-VDB:time:version:signatures:flevel:md5:signature:builder:epoch)"
        )
    time_text, builder = fields[1], fields[7]
    version = _number(fields[2], "version", where)
    signatures = _number(fields[3], "signature count", where)
    flevel = _number(fields[4], "functionality level", where)
    epoch = fields[8].strip() if len(fields) > 8 else ""
    if epoch.isdigit():
        try:
            built_at = dt.datetime.fromtimestamp(int(epoch), dt.UTC)
        except (OverflowError, ValueError, OSError) as exc:
            raise CvdHeaderError(f"{where}: damaged ClamAV database header: build time {epoch} s: {exc}") from exc
    else:
        built_at = _parse_build_time(time_text, where)
    return AvDatabase(
        name=Path(where).stem,
        path=where,
        version=str(version),
        signatures=signatures,
        functionality_level=flevel,
        built_at=built_at,
        builder=builder.strip(),
    )


def _number(value: str, what: str, where: str) -> int:
    if not value.strip().isdigit():
        raise CvdHeaderError(f"{where}: damaged ClamAV database header: {what} {value!r} is not a number")
    return int(value)


def _parse_build_time(text: str, where: str) -> dt.datetime:
    # "19 Nov 2024 08-40 +0000": '-' instead of ':' because ':' separates the fields. Month names are
    # always English (ClamAV's build servers), so no locale-dependent strptime.
    m = _BUILD_TIME.fullmatch(text.strip())
    if m is None or m.group(2) not in _MONTHS:
        raise CvdHeaderError(
            f"{where}: damaged ClamAV database header: build time {text!r} is not like '19 Nov 2024 08-40 +0000'"
        )
    day, month, year, hour, minute, sign, off_h, off_m = m.groups()
    offset = dt.timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
    local = dt.datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), tzinfo=dt.timezone(offset))
    return local.astimezone(dt.UTC)


def _is_cvd(db: AvDatabase) -> bool:
    return db.path.endswith(".cvd")


def select_databases(found: Iterable[AvDatabase]) -> list[AvDatabase]:
    """The databases ClamAV loads from one directory, sorted by name.

    When both ``daily.cvd`` and ``daily.cld`` exist (a fresh full download next to an older locally
    updated copy, or the reverse), libclamav loads the one with the higher version and the ``.cvd``
    on a tie; so does this.
    """
    best: dict[str, AvDatabase] = {}
    for db in found:
        current = best.get(db.name)
        if current is None or (int(db.version), _is_cvd(db)) > (int(current.version), _is_cvd(current)):
            best[db.name] = db
    return [best[name] for name in sorted(best)]


def parse_clamav_version(text: str) -> str:
    """The engine version in ``clamd --version`` output: ``ClamAV 1.4.3/27451/Tue Nov 19 08:40:00 2024`` → 1.4.3.

    The daily version after the first '/' is ignored: it is read from the database itself.
    """
    m = re.search(r"ClamAV\s+([0-9][^/\s]*)", text)
    return m.group(1) if m else ""


def build_product(
    databases: Iterable[AvDatabase],
    database_dir: str,
    engine_version: str,
    processes: Iterable[str],
    platform: str,
    now: dt.datetime,
) -> AvProduct:
    """The ClamAV product from what :class:`ClamAvProbe` gathered; pure.

    ``processes`` are the running process names. With no database at all (Debian's packages ship
    none; freshclam never ran), ``signature_built_at`` is None and ``signature_age_hours`` is
    :data:`~checks.av.result.NEVER_UPDATED_HOURS`, so a maximum-age rule fails.
    """
    dbs = tuple(databases)
    running = set(processes)
    built = [db for db in dbs if db.built_at is not None]
    newest = max(built, key=lambda db: db.built_at or now, default=None)
    daily = next((db for db in dbs if db.name == "daily"), None)
    source = daily or newest
    signature_version = source.version if source else ""
    built_at = newest.built_at if newest else None
    return AvProduct(
        name=NAME,
        engine_version=engine_version,
        signature_version=signature_version,
        signature_built_at=built_at,
        signature_age_hours=age_hours(built_at, now),
        engine_running=CLAMD in running,
        updater_running=FRESHCLAM in running,
        # On Linux the packages run freshclam as a daemon (Debian's clamav-freshclam.service), so its
        # absence from the process table means something. Elsewhere it is usually a periodic job
        # (Homebrew's launchd agent, cron) that is legitimately not running between updates.
        updater_known=platform.startswith("linux"),
        realtime_protection=CLAMD in running and CLAMONACC in running,
        database_dir=database_dir,
        databases=dbs,
    )


class ClamAvProbe(Probe):
    """ClamAV on Linux and macOS: present when it has databases, binaries or running daemons."""

    name: ClassVar[str] = NAME
    platforms: ClassVar[tuple[str, ...]] = ("linux", "darwin")

    def detect(self, args: AvArgs, ctx: Context, now: dt.datetime) -> AvProduct | None:
        database_dir, databases = _find_databases(args.clamav_dirs, ctx)
        binaries = {name: _find_binary(name) for name in (CLAMD, FRESHCLAM, "clamscan")}
        processes = _process_names()
        if not databases and not any(binaries.values()) and not processes & {CLAMD, FRESHCLAM, CLAMONACC}:
            return None
        return build_product(
            databases=databases,
            database_dir=database_dir,
            engine_version=_engine_version(binaries, ctx),
            processes=processes,
            platform=ctx.platform,
            now=now,
        )


def _find_databases(dirs: Iterable[str], ctx: Context) -> tuple[str, list[AvDatabase]]:
    """The first directory of ``dirs`` holding a readable database, and the databases ClamAV loads from it."""
    chosen, selected = "", []
    for directory in dirs:
        found = _read_databases(Path(directory), ctx)
        if not found:
            continue
        if chosen:
            # Leftovers of another install (a source build next to the package) would otherwise
            # silently decide nothing; say which copy was reported.
            ctx.warnings.append(
                f"clamav: databases also found in {directory}, ignored; reported those in {chosen} "
                "(set the av rule's clamav_dirs to choose)"
            )
            continue
        chosen, selected = directory, select_databases(found)
    return chosen, selected


def _read_databases(directory: Path, ctx: Context) -> list[AvDatabase]:
    found = []
    for name in DATABASE_NAMES:
        for container in CONTAINERS:
            path = directory / f"{name}{container}"
            try:
                with path.open("rb") as f:
                    head = f.read(HEADER_SIZE)
            except FileNotFoundError:
                continue
            except OSError as exc:
                ctx.warnings.append(f"clamav: cannot read {path}: {exc.strerror or exc}")
                continue
            try:
                found.append(parse_cvd_header(head, path))
            except CvdHeaderError as exc:
                # One damaged file must not hide the others, but it is worth a look.
                ctx.warnings.append(f"clamav: {exc}")
    return found


def _find_binary(name: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_BIN_DIRS])
    return shutil.which(name, path=search)


def _process_names() -> set[str]:
    names = set()
    for proc in psutil.process_iter(["name"]):
        name = proc.info.get("name")
        if name:
            names.add(name.lower().removesuffix(".exe"))
    return names


def _engine_version(binaries: Mapping[str, str | None], ctx: Context) -> str:
    # `clamd --version` and `freshclam --version` print the engine version at once, without loading
    # signatures (`clamscan --version` would do too, but clamscan is what this check must not start).
    for name in (CLAMD, FRESHCLAM):
        exe = binaries.get(name)
        if not exe:
            continue
        try:
            out = subprocess.run(
                [exe, "--version"], capture_output=True, text=True, errors="replace", timeout=_VERSION_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            ctx.warnings.append(f"clamav: {exe} --version failed: {exc}")
            continue
        version = parse_clamav_version(out.stdout)
        if version:
            return version
    return ""
