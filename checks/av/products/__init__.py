"""One module per antivirus product, and the one explicit list of their probes.

Adding a product is one module (a :class:`Probe` subclass and its pure parsers) plus one line here.
Order is the order products appear in ``AvResult.products``.
"""

from __future__ import annotations

from checks.av.products.base import Probe
from checks.av.products.clamav import ClamAvProbe
from checks.av.products.defender import DefenderProbe

PROBES: tuple[Probe, ...] = (
    ClamAvProbe(),
    DefenderProbe(),
)

__all__ = ["PROBES", "ClamAvProbe", "DefenderProbe", "Probe"]
