"""The ``netscan`` check: which TCP ports of each target a sensor can reach from the network.

Public: :class:`Netscan` (the check), :class:`NetscanArgs`, :class:`NetscanResult`.
"""

from __future__ import annotations

from checks.netscan.check import Netscan, NetscanArgs, NetscanResult

__all__ = ["Netscan", "NetscanArgs", "NetscanResult"]
