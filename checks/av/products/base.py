"""The shape of one antivirus product's probe: the plug-in point of the ``av`` check."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from typing import ClassVar

from checks.av.args import AvArgs
from checks.av.result import AvProduct
from checks.base import Context


class Probe(ABC):
    """Finds one product on the host and reports it as an :class:`AvProduct`.

    A probe keeps to the check's split: :meth:`detect` only gathers raw input (reads a header, runs a
    command, lists processes) and hands it to pure ``parse_*``/``build_*`` functions in the same
    module, which tests feed from fixtures. To add a product, write one module with a ``Probe``
    subclass and add one line to ``PROBES`` in :mod:`checks.av.products`.
    """

    # The product id, also the finding subject and ``AvProduct.name``.
    name: ClassVar[str]
    # Where the probe looks at the host itself (sys.platform prefixes).
    platforms: ClassVar[tuple[str, ...]]

    def wanted(self, args: AvArgs, ctx: Context) -> bool:
        """Whether :meth:`detect` should run; a probe given captured input may run anywhere."""
        return ctx.platform.startswith(self.platforms)

    @abstractmethod
    def detect(self, args: AvArgs, ctx: Context, now: dt.datetime) -> AvProduct | None:
        """The product as found now, or None when it is not installed.

        ``now`` (aware UTC) is the one instant every product's signature age is measured against.
        Raise :class:`checks.av.errors.AvError` when the host could not be asked; the check then
        records a warning and still reports the other products. A trouble that leaves the product
        visible (one unreadable database) goes to ``ctx.warnings`` instead.
        """
