"""The ``eol`` check: the OS, installed packages and runtimes, and whose lifecycle applies to each.

Public: :class:`Eol` (the check), :class:`EolArgs`, :class:`EolResult`, :class:`EolItem`, and the pure
parts tested on captured fixtures: :func:`parse_os_release` / :func:`os_item` (``osrelease``),
:func:`parse_dpkg_status`, :func:`parse_rpm_qa`, :func:`parse_apk_installed`, :func:`package_items`
(``packages``), :func:`parse_version_output` and the per-command parsers (``runtimes``). ``check``
holds the part that reads the host.

Design: the agent reports what is installed and whose lifecycle applies (``os`` when the OS vendor
ships and patches it, ``upstream`` otherwise) with the reason; the controller maps each item to a
release cycle and EOL dates with its own dataset.
"""

from __future__ import annotations

from checks.eol.check import Eol, EolArgs
from checks.eol.model import (
    KIND_OS,
    KIND_PACKAGE,
    KIND_RUNTIME,
    LIFECYCLE_OS,
    LIFECYCLE_UPSTREAM,
    EolItem,
    EolResult,
)
from checks.eol.osrelease import OsRelease, os_item, os_product, parse_os_release
from checks.eol.packages import (
    InstalledPackage,
    package_items,
    parse_apk_installed,
    parse_dpkg_status,
    parse_rpm_qa,
    parse_rpm_qf,
    upstream_version,
)
from checks.eol.runtimes import Detected, parse_version_output, runtime_item

__all__ = [
    "KIND_OS",
    "KIND_PACKAGE",
    "KIND_RUNTIME",
    "LIFECYCLE_OS",
    "LIFECYCLE_UPSTREAM",
    "Detected",
    "Eol",
    "EolArgs",
    "EolItem",
    "EolResult",
    "InstalledPackage",
    "OsRelease",
    "os_item",
    "os_product",
    "package_items",
    "parse_apk_installed",
    "parse_dpkg_status",
    "parse_os_release",
    "parse_rpm_qa",
    "parse_rpm_qf",
    "parse_version_output",
    "runtime_item",
    "upstream_version",
]
