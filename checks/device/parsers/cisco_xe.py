"""Cisco IOS-XE (``cisco_xe``): the same commands and output as :mod:`cisco_ios`, which reads both."""

from __future__ import annotations

from collections.abc import Callable

from checks.device.model import Facts
from checks.device.parsers import cisco_ios

PLATFORM = "cisco_xe"

COMMANDS: dict[str, Callable[[str], Facts]] = dict(cisco_ios.COMMANDS)
