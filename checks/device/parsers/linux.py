"""Linux hosts that cannot run an agent (``linux``): the same files and tools the host checks read.

``cat /etc/os-release`` goes through :func:`checks.eol.osrelease.parse_os_release` and
``chronyc -c tracking`` through :func:`checks.ntp.parse.parse_chronyc_tracking_csv`, so an agentless
host and an agent report the same facts. ``version`` is os-release's ``VERSION_ID`` ("12", "9.3").
"""

from __future__ import annotations

import re
from collections.abc import Callable

from checks.device.clean import clean_lines
from checks.device.errors import DeviceParseError
from checks.device.model import Facts, NtpState

PLATFORM = "linux"


def parse_os_release(text: str) -> Facts:
    from checks.eol.osrelease import parse_os_release as parse

    lines = clean_lines(text, "cat /etc/os-release")
    osr = parse("\n".join(lines))
    if not osr.id and not osr.name:
        raise DeviceParseError(PLATFORM, "cat /etc/os-release", "os-release(5) lines such as ID=debian and "
                               "VERSION_ID=\"12\"; found neither ID= nor NAME=")
    return Facts(platform=PLATFORM, command="cat /etc/os-release", vendor=osr.vendor if osr.id else None,
                 os_name=osr.name or osr.id, version=osr.version_id or None)


_UNAME = re.compile(r"^(?P<kernel>Linux)\s+(?P<host>\S+)\s+(?P<release>\S+)\s+(?P<rest>.*)$")


def parse_uname_a(text: str) -> Facts:
    """``uname -a``: kernel name, host name, kernel release, version, machine ... ("Linux h 6.1.0-13-amd64 #1 ...")."""
    lines = clean_lines(text, "uname -a")
    m = next((m for line in lines if (m := _UNAME.match(line.strip()))), None)
    if m is None:
        raise DeviceParseError(PLATFORM, "uname -a", "a line 'Linux <hostname> <release> ...'; found none")
    return Facts(platform=PLATFORM, command="uname -a", hostname=m["host"], kernel=m["release"])


def parse_chronyc_tracking(text: str) -> Facts:
    from checks.ntp.parse import NtpParseError, parse_chronyc_tracking_csv

    lines = [line for line in clean_lines(text, "chronyc -c tracking") if line.strip()]
    csv = next((line for line in lines if line.count(",") >= 13), None)
    if csv is None:
        raise DeviceParseError(PLATFORM, "chronyc -c tracking", "one line of 14 comma-separated fields; found none")
    try:
        status = parse_chronyc_tracking_csv(csv)
    except NtpParseError as exc:
        raise DeviceParseError(PLATFORM, "chronyc -c tracking", str(exc)) from None
    return Facts(platform=PLATFORM, command="chronyc -c tracking", ntp=NtpState(
        synchronized=status.synchronized, offset_ms=status.offset_ms,
        stratum=status.stratum if status.stratum else None, reference=status.reference or None))


COMMANDS: dict[str, Callable[[str], Facts]] = {
    "cat /etc/os-release": parse_os_release,
    "uname -a": parse_uname_a,
    "chronyc -c tracking": parse_chronyc_tracking,
}
