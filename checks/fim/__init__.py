"""The ``fim`` check: file integrity of web roots and program directories.

Public: :class:`Fim` (the check) and its :class:`FimSession` (continuous watching), :class:`FimArgs`,
the results :class:`FimResult`, :class:`FimEvent`, :class:`FileState` with :class:`Kind` and
:class:`Detector`, and the errors::

    CheckError (checks.base)
    └── FimError
        ├── FimParamsError(ValueError)    a rule's params are wrong
        └── FimStateError(RuntimeError)   the local baseline database cannot be used

The engine (:class:`checks.fim.scan.FimEngine`: baseline, verification, real-time reconciliation)
is imported on first use, not here, and :mod:`checks.fim.watch` (watchdog) only when a task watches
in real time: an agent without a ``fim`` task loads neither.

Modules: ``args`` (params), ``model`` (results), ``globs`` (exclude/nodiff), ``hashing`` (records and
the work of the hashing processes), ``baseline`` (the walk shared out among them, and its
coordinator process), ``state`` (the SQLite baseline), ``events`` (classification, renames), ``diff``
(text detection, diffs, copies), ``packages`` (which dpkg package made a change), ``scan`` (the
engine), ``watch`` (watchdog), ``check`` (the check).
"""

from __future__ import annotations

from checks.fim.args import FimArgs
from checks.fim.check import Fim, FimSession
from checks.fim.errors import FimError, FimParamsError, FimStateError
from checks.fim.model import Detector, FileState, FimEvent, FimResult, Kind

__all__ = [
    "Detector",
    "FileState",
    "Fim",
    "FimArgs",
    "FimError",
    "FimEvent",
    "FimParamsError",
    "FimResult",
    "FimSession",
    "FimStateError",
    "Kind",
]
