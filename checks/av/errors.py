"""Errors of the ``av`` check (the tree is drawn in :mod:`checks.av`)."""

from __future__ import annotations

from checks.base import CheckError


class AvError(CheckError):
    """Base of every error the ``av`` check raises on purpose."""


class AvParamsError(AvError, ValueError):
    """A rule's ``params`` for the ``av`` check are wrong; the message names the key."""


class CvdHeaderError(AvError, ValueError):
    """A file is not a ClamAV database (no ``ClamAV-VDB:`` header) or its header is damaged."""


class MpStatusError(AvError, ValueError):
    """``Get-MpComputerStatus | ConvertTo-Json`` output could not be read."""


class ProbeError(AvError, RuntimeError):
    """A probe could not ask the host (a command failed or hung, a file could not be read)."""
