"""Plain data types and helpers shared by the agent and the controller (besides `proto/`).

Exception tree::

    VigilError
     ├── UsageError (ValueError)      bad input a user can fix
     └── ConfigError (ValueError)     a configuration or data file is wrong
"""

from __future__ import annotations

from common.errors import ConfigError, UsageError, VigilError

__version__ = "0.1.0"

__all__ = ["ConfigError", "UsageError", "VigilError", "__version__"]
