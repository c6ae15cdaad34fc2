"""Errors of the ``fim`` check (the tree is drawn in :mod:`checks.fim`)."""

from __future__ import annotations

from checks.base import CheckError


class FimError(CheckError):
    """Base of every error the ``fim`` check raises on purpose."""


class FimParamsError(FimError, ValueError):
    """A rule's ``params`` for the ``fim`` check are wrong; the message names the key and what to write."""


class FimStateError(FimError, RuntimeError):
    """The local baseline database cannot be used (no state directory, unwritable, damaged)."""
