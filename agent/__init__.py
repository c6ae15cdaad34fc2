"""The Vigil agent: runs checks on the controller's schedule and delivers every result exactly once.

Exception tree::

    VigilError
     └── AgentError
          ├── NotEnrolled (FileNotFoundError)   run before enroll
          └── EnrollFailed (PermissionError)    the controller refused the token
"""

from __future__ import annotations

from common.errors import VigilError


class AgentError(VigilError):
    pass


class NotEnrolled(AgentError, FileNotFoundError):
    pass


class EnrollFailed(AgentError, PermissionError):
    pass


__all__ = ["AgentError", "EnrollFailed", "NotEnrolled"]
