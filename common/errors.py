"""The root of every Vigil exception."""

from __future__ import annotations


class VigilError(Exception):
    """Base of all errors Vigil raises on purpose; its message is meant for the user."""


class UsageError(VigilError, ValueError):
    """Bad input a user can fix (a flag, a token, a value)."""


class ConfigError(VigilError, ValueError):
    """A configuration or data file is wrong; the message names the file, line and field."""
