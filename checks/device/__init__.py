"""Pure parsers of network devices' command output, for the sensor and ``vigil-agent device parse``.

Public: :func:`parse`, :func:`parser_for`, :data:`PLATFORMS` (platform -> command -> parser),
:data:`CONFIG_COMMANDS`, the model (:class:`Facts` and its parts), :func:`clean`, the configuration
helpers :func:`normalise` and :func:`config_diff`, and the errors. Standard library only (plus the
``ntp`` and ``eol`` checks' own pure parsers for ``linux``); nothing here opens a connection.

Errors::

    VigilError
     └── DeviceError
          ├── DeviceParseError (also ValueError)
          └── UnknownDeviceCommand (also LookupError)
"""

from __future__ import annotations

from checks.device.clean import clean
from checks.device.config import config_diff, normalise, redact_text
from checks.device.errors import DeviceError, DeviceParseError, UnknownDeviceCommand
from checks.device.model import ConfigFacts, Facts, InventoryItem, NtpPeer, NtpState, SignatureDb
from checks.device.registry import CONFIG_COMMANDS, PLATFORMS, parse, parser_for

__all__ = [
    "CONFIG_COMMANDS",
    "PLATFORMS",
    "ConfigFacts",
    "DeviceError",
    "DeviceParseError",
    "Facts",
    "InventoryItem",
    "NtpPeer",
    "NtpState",
    "SignatureDb",
    "UnknownDeviceCommand",
    "clean",
    "config_diff",
    "normalise",
    "parse",
    "parser_for",
    "redact_text",
]
