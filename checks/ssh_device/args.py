"""What a rule asks the sensor for: the devices, the address ranges it may reach, the session limits.

Example ``params``::

    ranges: [10.20.0.0/24]
    devices:
      - {name: core-sw-01, address: 10.20.0.2, platform: cisco_ios, credential: core-routers,
         purpose: core switch}
    command_timeout_s: 60
    workers: 8
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from checks.base import Args, ParamsError, named_addresses, networks_param

# Netmiko's names of the platforms the sensor drives (checks.device parses their output).
PLATFORMS = ("arista_eos", "cisco_asa", "cisco_ios", "cisco_nxos", "cisco_xe", "fortinet", "juniper_junos", "linux",
             "paloalto_panos")


class SshDeviceArgsError(ParamsError):
    pass


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    address: str
    platform: str
    credential: str
    port: int = 22
    purpose: str = ""


@dataclass(frozen=True)
class SshDeviceArgs(Args):
    devices: tuple[DeviceSpec, ...]
    ranges: tuple[str, ...]
    command_timeout_s: float = 60.0
    workers: int = 8

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SshDeviceArgs:
        # Unknown keys are ignored, as every check does: a newer controller may push what this agent lacks.
        networks = networks_param(params, "ssh_device", error=SshDeviceArgsError)
        ranges = params["ranges"]
        named = named_addresses(params, "devices", "ssh_device", networks, SshDeviceArgsError)
        devices = [_device(where, d, address) for where, d, address in named]
        timeout = params.get("command_timeout_s", 60.0)
        workers = params.get("workers", 8)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 1 <= timeout <= 600:
            raise SshDeviceArgsError("ssh_device params: command_timeout_s must be 1 to 600 seconds")
        if not isinstance(workers, int | float) or isinstance(workers, bool) or int(workers) != workers \
                or not 1 <= workers <= 64:
            raise SshDeviceArgsError("ssh_device params: workers must be a whole number from 1 to 64")
        return cls(tuple(devices), tuple(ranges), float(timeout), int(workers))


def _device(where: str, d: Mapping[str, Any], address: str) -> DeviceSpec:
    for key in ("platform", "credential"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise SshDeviceArgsError(f"{where}: {key} is required")
    if d["platform"] not in PLATFORMS:
        raise SshDeviceArgsError(f"{where}: platform {d['platform']!r} is not one of {', '.join(PLATFORMS)}")
    port = d.get("port", 22)
    if not isinstance(port, int | float) or isinstance(port, bool) or int(port) != port or not 1 <= port <= 65535:
        raise SshDeviceArgsError(f"{where}: port must be 1 to 65535")
    purpose = d.get("purpose", "")
    if not isinstance(purpose, str):
        raise SshDeviceArgsError(f"{where}: purpose must be text")
    return DeviceSpec(d["name"], address, d["platform"], d["credential"], int(port), purpose)
