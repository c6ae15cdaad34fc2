"""Collecting part of the ``av`` check: ask every product probe, gather what they found."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import ClassVar

from checks.av.args import AvArgs
from checks.av.errors import AvError
from checks.av.products import PROBES, Probe
from checks.av.result import AvResult
from checks.base import Args, Check, Context


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Av(Check[AvArgs, AvResult]):
    """Installed antivirus products, their versions, signature age and whether their daemons run.

    Example result::

        AvResult(products=[
            AvProduct(name="clamav", engine_version="1.4.3", signature_version="27451",
                      signature_built_at=datetime(2024, 11, 19, 8, 40, tzinfo=UTC),
                      signature_age_hours=26.33, engine_running=True, updater_running=True,
                      updater_known=True, realtime_protection=False, database_dir="/var/lib/clamav",
                      databases=(
                          AvDatabase(name="bytecode", path="/var/lib/clamav/bytecode.cvd", version="335", ...),
                          AvDatabase(name="daily", path="/var/lib/clamav/daily.cld", version="27451",
                                     signatures=2067891, functionality_level=90, builder="raynman",
                                     built_at=datetime(2024, 11, 19, 8, 40, tzinfo=UTC)),
                          AvDatabase(name="main", path="/var/lib/clamav/main.cvd", version="62", ...),
                      )),
        ])

    A product with no signatures at all (ClamAV installed but its database directory empty, as
    Debian's packages leave it; Defender with its service stopped) has ``signature_built_at=None``
    and ``signature_age_hours=1e6`` (:data:`~checks.av.result.NEVER_UPDATED_HOURS`, "never
    updated"), so a maximum-age rule fails without a special case. Defender reports when its
    signatures were installed, not built, and ``updater_known=False``.

    ``products=[]`` means no product was found, which is a result (a baseline can require one), not
    an error. A product that could not be asked (PowerShell hung) is left out with a warning in
    ``ctx.warnings``, so the report says PARTIAL instead of claiming there is no antivirus.
    """

    id = "av"
    version = 1
    platforms = ("linux", "darwin", "win32")
    args_type: ClassVar[type[Args]] = AvArgs
    report_field = "av"
    default_interval_s = 3600

    def __init__(self, clock: Callable[[], dt.datetime] = _utc_now, probes: tuple[Probe, ...] = PROBES) -> None:
        # Injectable so tests can pin "now" and the signature age; one reading per run, so every
        # product's age is measured against the same instant.
        self._clock = clock
        self._probes = probes

    def collect(self, args: AvArgs, ctx: Context) -> Iterator[AvResult]:
        now = self._clock()
        products = []
        for probe in self._probes:
            if not probe.wanted(args, ctx):
                continue
            try:
                product = probe.detect(args, ctx, now)
            except AvError as exc:
                ctx.warnings.append(f"{probe.name}: {exc}")
                continue
            if product is not None:
                products.append(product)
        yield AvResult(products=products)
