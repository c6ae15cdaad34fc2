"""Parameters of the ``av`` check, built from a rule's ``params``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from checks.av.errors import AvParamsError
from checks.base import Args

# Where freshclam keeps its databases: Debian/Ubuntu/RHEL packages, a source build's default
# (--prefix=/usr/local), FreeBSD ports, Homebrew on Apple silicon. Searched in this order.
DEFAULT_CLAMAV_DIRS: tuple[str, ...] = (
    "/var/lib/clamav",
    "/usr/local/share/clamav",
    "/var/db/clamav",
    "/opt/homebrew/var/lib/clamav",
)


@dataclass
class AvArgs(Args):
    """``clamav_dirs`` replaces the directories searched for ClamAV databases (first one holding any
    database wins); ``defender_json`` names a file of ``Get-MpComputerStatus | ConvertTo-Json``
    output to read instead of running PowerShell, on any platform (for tests and offline triage).
    """

    clamav_dirs: list[str] = field(default_factory=lambda: list(DEFAULT_CLAMAV_DIRS))
    defender_json: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AvArgs:
        # Unknown keys are ignored so that a newer controller can push parameters of a later check
        # version without breaking this agent; known keys of the wrong type are refused, because
        # silently falling back to the defaults would make the rule check something else.
        dirs = params.get("clamav_dirs")
        if dirs is None:
            clamav_dirs = list(DEFAULT_CLAMAV_DIRS)
        elif isinstance(dirs, list | tuple) and all(isinstance(d, str) and d for d in dirs):
            clamav_dirs = list(dirs)
        else:
            raise AvParamsError(
                f"av params: clamav_dirs must be a list of directory paths, got {dirs!r}; "
                'write e.g. clamav_dirs: ["/var/lib/clamav"]'
            )
        defender_json = params.get("defender_json")
        if defender_json is not None and not (isinstance(defender_json, str) and defender_json):
            raise AvParamsError(f"av params: defender_json must be a file path, got {defender_json!r}")
        return cls(clamav_dirs=clamav_dirs, defender_json=defender_json)
