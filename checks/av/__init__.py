"""The ``av`` check: installed antivirus products and how fresh their signatures are.

Public: :class:`Av` (the check), :class:`AvArgs`, the results :class:`AvResult`, :class:`AvProduct`,
:class:`AvDatabase`, the pure parsers :func:`parse_cvd_header` (ClamAV database headers) and
:func:`parse_mpcomputerstatus` (Defender's ``Get-MpComputerStatus | ConvertTo-Json``), the plug-in
base :class:`Probe` with the explicit list :data:`PROBES`, and the errors::

    CheckError (checks.base)
    └── AvError
        ├── AvParamsError(ValueError)    a rule's params are wrong
        ├── CvdHeaderError(ValueError)   a file is not a ClamAV database
        ├── MpStatusError(ValueError)    Get-MpComputerStatus output is unusable
        └── ProbeError(RuntimeError)     a product could not be asked (command failed or hung)

Each product is one module of :mod:`checks.av.products`; ``check`` holds the part that runs them.
"""

from __future__ import annotations

from checks.av.args import DEFAULT_CLAMAV_DIRS, AvArgs
from checks.av.check import Av
from checks.av.errors import AvError, AvParamsError, CvdHeaderError, MpStatusError, ProbeError
from checks.av.products import PROBES, Probe
from checks.av.products.clamav import parse_cvd_header
from checks.av.products.defender import parse_mpcomputerstatus
from checks.av.result import NEVER_UPDATED_HOURS, AvDatabase, AvProduct, AvResult

__all__ = [
    "DEFAULT_CLAMAV_DIRS",
    "NEVER_UPDATED_HOURS",
    "PROBES",
    "Av",
    "AvArgs",
    "AvDatabase",
    "AvError",
    "AvParamsError",
    "AvProduct",
    "AvResult",
    "CvdHeaderError",
    "MpStatusError",
    "Probe",
    "ProbeError",
    "parse_cvd_header",
    "parse_mpcomputerstatus",
]
