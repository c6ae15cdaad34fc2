"""The sensor role's machinery: SSH sessions to devices that cannot run an agent.

Only the sensor role imports this package (it loads paramiko); a host agent never does, and
``tests/test_architecture.py`` holds that. What is collected is parsed by the pure parsers in
``checks/device``.

Public: :func:`ssh.collect` (run commands on one device), :class:`ssh.Target`, :class:`ssh.Timeouts`,
:class:`hostkeys.HostKeyStore` (pinned host keys), :func:`hostkeys.fingerprint`,
:class:`credentials.Credentials` (credentials by name).

Exception tree::

    VigilError
     └── AgentError
          └── SensorError
               ├── HostKeyError (also PermissionError)
               │    ├── UnknownHostKey        no key pinned for the device: refused, says the fingerprint
               │    └── HostKeyChanged        the device shows another key than the pinned one
               ├── CredentialError (also LookupError)   no such credential, or it cannot be used
               ├── AuthFailed (also PermissionError)    the device refused every key
               ├── ConnectFailed (also ConnectionError) TCP or SSH handshake failed
               ├── DeviceTimeout (also TimeoutError)    connect, a command or the whole session ran out of time
               └── SessionError                         the device's CLI did not behave (no prompt, enable refused)
"""

from __future__ import annotations

from agent import AgentError


class SensorError(AgentError):
    # What a device's result says when this kept the sensor from it (SshDeviceResult.error_kind).
    kind = "session"


class HostKeyError(SensorError, PermissionError):
    kind = "host_key"


class UnknownHostKey(HostKeyError):
    kind = "unknown_host_key"


class HostKeyChanged(HostKeyError):
    kind = "host_key_changed"


class CredentialError(SensorError, LookupError):
    kind = "credential"


class AuthFailed(SensorError, PermissionError):
    kind = "auth_failed"


class ConnectFailed(SensorError, ConnectionError):
    kind = "connect_failed"


class DeviceTimeout(SensorError, TimeoutError):
    kind = "timeout"


class SessionError(SensorError):
    kind = "session"
