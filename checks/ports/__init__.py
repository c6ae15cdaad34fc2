"""The ``ports`` check: every listening socket of a host and the process that owns it.

Public: :class:`Ports` (the check), :class:`PortsArgs`, :class:`PortsResult`, :class:`Listener`, and the
pure parser :func:`parse_connections` with its input rows :class:`ConnRow` and :class:`ProcInfo`.
``parse`` holds the pure part, ``check`` the part that asks psutil.
"""

from __future__ import annotations

from checks.ports.check import Ports, PortsArgs
from checks.ports.parse import ConnRow, Listener, PortsResult, ProcInfo, parse_connections

__all__ = ["ConnRow", "Listener", "Ports", "PortsArgs", "PortsResult", "ProcInfo", "parse_connections"]
