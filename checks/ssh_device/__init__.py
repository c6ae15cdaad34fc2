"""The ``ssh_device`` check: a sensor collects from network devices (and Linux hosts that cannot run an
agent) over SSH, one result per device the rule names.

Public: :class:`SshDevice` (the check), :class:`SshDeviceArgs`, :class:`SshDeviceResult`.
"""

from __future__ import annotations

from checks.ssh_device.args import DeviceSpec, SshDeviceArgs
from checks.ssh_device.check import SshDevice
from checks.ssh_device.result import SshDeviceResult

__all__ = ["DeviceSpec", "SshDevice", "SshDeviceArgs", "SshDeviceResult"]
