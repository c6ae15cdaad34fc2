"""Errors of the device parsers.

Errors::

    VigilError
     └── DeviceError
          ├── DeviceParseError (also ValueError): a captured output this parser cannot read
          └── UnknownDeviceCommand (also LookupError): a platform or command no parser exists for
"""

from __future__ import annotations

from common.errors import VigilError


class DeviceError(VigilError):
    """Base of the device package's errors; the message is meant for the operator."""


class DeviceParseError(DeviceError, ValueError):
    """The output of ``command`` on ``platform`` does not have the shape its parser expects."""

    def __init__(self, platform: str, command: str, expected: str) -> None:
        self.platform = platform
        self.command = command
        self.expected = expected
        super().__init__(f"{platform} {command!r}: expected {expected}")


class UnknownDeviceCommand(DeviceError, LookupError):
    """No parser for this platform, or none for this command on it; the message lists the known ones."""
