"""Collectors: pure observers of the host. A check returns typed facts and never decides pass/fail.

Public: :class:`Check`, :class:`Context`, :class:`CheckError`, :data:`REGISTRY` (in ``checks.registry``).

Exception tree::

    VigilError
     └── CheckError                  a check could not collect; carries a CheckStatus kind
          └── UnsupportedPlatform    the check does not run here
"""

from __future__ import annotations

from checks.base import Check, CheckError, Context, UnsupportedPlatform

__all__ = ["Check", "CheckError", "Context", "UnsupportedPlatform"]
