"""The Vigil agent: runs checks on the controller's schedule and delivers every result exactly once.

Exception tree::

    VigilError
     └── AgentError
          ├── NotEnrolled (FileNotFoundError)   run before enroll
          └── EnrollFailed (PermissionError)    the controller refused the token
"""

from __future__ import annotations

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


__all__ = ["AgentError", "EnrollFailed", "NotEnrolled"]
