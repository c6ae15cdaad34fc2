"""Microsoft Defender Antivirus, from ``Get-MpComputerStatus | ConvertTo-Json``.

The JSON differs between the two PowerShells that may run it:

* Windows PowerShell 5.1 (``powershell.exe``, on every Windows) writes dates as
  ``"\\/Date(1717488387000)\\/"`` (milliseconds since 1970, UTC) and pads ``":  "``;
* PowerShell 7 (``pwsh``) writes ISO 8601 with the host's offset, ``"2024-06-04T08:06:27-07:00"``.

Both add the CIM plumbing (``CimClass``, ``CimInstanceProperties``, ``CimSystemProperties``), which is
ignored. Fields used (MSFT_MpComputerStatus): ``AMEngineVersion``, ``AntivirusSignatureVersion``,
``AntivirusSignatureLastUpdated``, ``AntivirusSignatureAge`` (days), ``AMServiceEnabled``,
``AntivirusEnabled``, ``RealTimeProtectionEnabled``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from checks.av.args import AvArgs
from checks.av.errors import MpStatusError, ProbeError
from checks.av.products.base import Probe
from checks.av.result import NEVER_UPDATED_HOURS, AvProduct, age_hours
from checks.base import Context

NAME = "windows-defender"
COMMAND = ("powershell", "-NoProfile", "-NonInteractive", "-Command", "Get-MpComputerStatus | ConvertTo-Json")
# PowerShell alone takes a second or two to start; Get-MpComputerStatus waits on the Defender service.
_TIMEOUT_S = 60.0
# Defender's "never" for a uint32 age in days (4294967295), e.g. while its service is stopped.
_NEVER_DAYS = 2**32 - 1
# A Windows FILETIME of 0 (1601-01-01 UTC) is how Defender writes an unset date.
_FILETIME_ZERO = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)
# The error Get-MpComputerStatus ends with when the WinDefend service is not running (stopped, or
# disabled because another antivirus took over): Defender is there but does not protect.
_SERVICE_NOT_RUNNING = "0x800106ba"
_MS_DATE = re.compile(r"/Date\((-?\d+)(?:[+-]\d{4})?\)/")
# Keys every Get-MpComputerStatus object has; a JSON object without them is some other command's.
_REQUIRED = ("AMServiceEnabled", "AntivirusEnabled")


def parse_mpcomputerstatus(json_text: str, now: dt.datetime) -> AvProduct | None:
    """The Defender product in ``Get-MpComputerStatus | ConvertTo-Json`` output; None for empty output.

    ``engine_running`` is ``AMServiceEnabled and AntivirusEnabled``; ``realtime_protection`` is
    ``RealTimeProtectionEnabled``. Defender does not publish its signatures' build time, so
    ``signature_built_at`` is when they were installed (``AntivirusSignatureLastUpdated``), and the
    age is measured from it against ``now``; without it, from ``AntivirusSignatureAge`` (whole days).
    When Defender knows of no signatures the age is :data:`~checks.av.result.NEVER_UPDATED_HOURS`.
    Defender updates from inside its own service, so ``updater_known`` is False.

    Raises :class:`MpStatusError` (a ``ValueError``) when the text is not such output.
    """
    status = _load(json_text)
    if status is None:
        return None
    built_at = _ps_datetime(status.get("AntivirusSignatureLastUpdated"), "AntivirusSignatureLastUpdated")
    if built_at is not None:
        age = age_hours(built_at, now)
    else:
        days = status.get("AntivirusSignatureAge")
        if isinstance(days, int) and not isinstance(days, bool) and 0 <= days < _NEVER_DAYS:
            age = float(days * 24)
        else:
            age = NEVER_UPDATED_HOURS
    return AvProduct(
        name=NAME,
        engine_version=_version(status.get("AMEngineVersion")),
        signature_version=_version(status.get("AntivirusSignatureVersion")),
        signature_built_at=built_at,
        signature_age_hours=age,
        engine_running=status.get("AMServiceEnabled") is True and status.get("AntivirusEnabled") is True,
        updater_running=False,
        updater_known=False,
        realtime_protection=status.get("RealTimeProtectionEnabled") is True,
    )


def product_from_powershell(returncode: int, stdout: str, stderr: str, now: dt.datetime) -> AvProduct | None:
    """Interpret one run of :data:`COMMAND`: its exit code and output.

    A missing cmdlet means no Defender (Windows Server without the feature): None. A stopped
    Defender service is reported as the product with ``engine_running`` False and no signature facts:
    turning Defender off is exactly what a baseline should see. Any other failure raises
    :class:`ProbeError`.
    """
    if returncode == 0:
        return parse_mpcomputerstatus(stdout, now)
    if _SERVICE_NOT_RUNNING in stderr.lower():
        return AvProduct(name=NAME)
    if "Get-MpComputerStatus" in stderr and "CommandNotFoundException" in stderr:
        return None
    first = next((line.strip() for line in stderr.splitlines() if line.strip()), "no error output")
    raise ProbeError(f"Get-MpComputerStatus failed (exit {returncode}): {first}")


def _load(json_text: str) -> dict[str, Any] | None:
    text = json_text.lstrip("\ufeff").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MpStatusError(f"Get-MpComputerStatus output is not JSON: {exc}") from exc
    if isinstance(data, list):
        # One status object per computer; a list only when several were piped in together.
        data = data[0] if data else None
    if data is None:
        return None
    if not isinstance(data, dict) or not all(key in data for key in _REQUIRED):
        raise MpStatusError(f"not Get-MpComputerStatus output: expected a JSON object with {' and '.join(_REQUIRED)}")
    return data


def _version(value: Any) -> str:
    # "0.0.0.0" is Defender's way of saying "no engine / no signatures loaded".
    if not isinstance(value, str) or value in ("", "0.0.0.0"):
        return ""
    return value


def _ps_datetime(value: Any, key: str) -> dt.datetime | None:
    """A date as ConvertTo-Json writes it (5.1: ``/Date(ms)/``; 7: ISO 8601), as aware UTC; None if unset."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MpStatusError(f"{key}: expected a date string, got {value!r}")
    m = _MS_DATE.fullmatch(value)
    if m:
        # The milliseconds are UTC even when an offset follows (it only says where it was written).
        when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=int(m.group(1)))
    else:
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise MpStatusError(f"{key}: {value!r} is neither /Date(ms)/ nor an ISO 8601 date") from exc
        # A date without offset is the local time of the host that wrote it, which is this host
        # whenever the agent ran the command itself.
        when = when.astimezone(dt.UTC)
    return None if when == _FILETIME_ZERO else when


def read_captured(path: str) -> str:
    """Text of a file of captured ConvertTo-Json output.

    ``> file`` in Windows PowerShell 5.1 writes UTF-16 with a byte-order mark; PowerShell 7 and
    ``Out-File -Encoding utf8`` write UTF-8 (5.1 with a BOM).
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ProbeError(f"cannot read defender_json file {path}: {exc.strerror or exc}") from exc
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    return raw.decode("utf-8-sig", errors="replace")


class DefenderProbe(Probe):
    """Microsoft Defender Antivirus on Windows, or anywhere from a captured ``defender_json`` file."""

    name: ClassVar[str] = NAME
    platforms: ClassVar[tuple[str, ...]] = ("win32",)

    def wanted(self, args: AvArgs, ctx: Context) -> bool:
        return args.defender_json is not None or super().wanted(args, ctx)

    def detect(self, args: AvArgs, ctx: Context, now: dt.datetime) -> AvProduct | None:
        if args.defender_json is not None:
            return parse_mpcomputerstatus(read_captured(args.defender_json), now)
        try:
            run = subprocess.run(list(COMMAND), capture_output=True, timeout=_TIMEOUT_S)
        except FileNotFoundError as exc:
            raise ProbeError("powershell.exe not found on PATH, so Defender could not be asked") from exc
        except subprocess.TimeoutExpired as exc:
            raise ProbeError(f"Get-MpComputerStatus did not answer within {_TIMEOUT_S:.0f}s") from exc
        # Console output comes in the OEM code page; the fields read here are ASCII either way.
        stdout = run.stdout.decode("utf-8", errors="replace")
        stderr = run.stderr.decode("utf-8", errors="replace")
        return product_from_powershell(run.returncode, stdout, stderr, now)
