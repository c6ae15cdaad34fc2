"""Controller exceptions.

Exception tree::

    VigilError
     └── ControllerError
          ├── EnrollmentError (PermissionError)   bad, used, expired or forged token
          ├── NotFound (LookupError)              no such agent, ticket, baseline, user
          ├── Conflict (ValueError)               illegal transition, stale version, duplicate
          ├── Forbidden (PermissionError)         the caller's role does not allow it
          └── Unavailable (RuntimeError)          a part this needs is not running (the agent channel)
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


class Unavailable(ControllerError, RuntimeError):
    pass


def http_status(exc: Exception) -> int:
    """The HTTP status the REST API and the web UI answer a refused request with."""
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, Unavailable):
        return 503
    return 422  # UsageError, BaselineError: the input is wrong
