"""The Vigil agent: runs checks on the controller's schedule and delivers every result exactly once.

Exception tree::

    VigilError
     └── AgentError
          ├── NotEnrolled (FileNotFoundError)   run before enroll
          └── EnrollFailed (PermissionError)    the controller refused the token
"""

from __future__ import annotations

import os

from common import tls
from common.errors import VigilError

# Every agent module that opens a gRPC channel is inside this package, so the TLS policy is in place
# before grpc starts.
tls.apply_policy()


class AgentError(VigilError):
    pass


class NotEnrolled(AgentError, FileNotFoundError):
    pass


class EnrollFailed(AgentError, PermissionError):
    pass


def os_description() -> str:
    """"linux 6.1.0-18-amd64": what Hello and enrollment tell the controller about this host's OS."""
    if hasattr(os, "uname"):
        u = os.uname()
        return f"{u.sysname.lower()} {u.release}"
    import platform  # Windows; on POSIX os.uname says the same without loading platform

    return f"{platform.system().lower()} {platform.release()}"


__all__ = ["AgentError", "EnrollFailed", "NotEnrolled", "os_description"]
