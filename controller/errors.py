"""Controller exceptions.

Exception tree::

    VigilError
     └── ControllerError
          ├── EnrollmentError (PermissionError)   bad, used, expired or forged token
          ├── NotFound (LookupError)              no such agent, ticket, baseline, user
          ├── Conflict (ValueError)               illegal transition, stale version, duplicate
          └── Forbidden (PermissionError)         the caller's role does not allow it
"""

from __future__ import annotations

from common.errors import VigilError


class ControllerError(VigilError):
    pass


class EnrollmentError(ControllerError, PermissionError):
    pass


class NotFound(ControllerError, LookupError):
    pass


class Conflict(ControllerError, ValueError):
    pass


class Forbidden(ControllerError, PermissionError):
    pass
