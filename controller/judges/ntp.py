"""The ``ntp`` judge: clock synchronisation and the measured offset, in the generic fact form."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from common.hostport import split_host_port
from controller.baselines import StrictModel, WholeNumber, fail
from controller.judges.base import InvalidFacts, Judge

_NTP_PORT = 123


def _check_server(v: str) -> str:
    # The agent's reading of "host", "host:port", "[v6]:port" or a bare IPv6 address, shared through common/.
    try:
        host, _ = split_host_port(v, _NTP_PORT)
    except ValueError:
        raise fail(f"{v!r} needs a port from 1 to 65535 after the colon") from None
    if not host.strip():
        raise fail(f'{v!r} names no host; write "host" or "host:port" (ntp.example.com, 10.0.0.1:123, [::1]:123)')
    return v


class NtpParams(StrictModel):
    """``servers`` to measure by SNTP (none: trust the daemon), per-request ``timeout_s``, ``samples`` per server."""

    servers: list[Annotated[str, AfterValidator(_check_server)]] = Field(default_factory=list)
    timeout_s: float = Field(default=2.0, gt=0, le=10)
    samples: WholeNumber = Field(default=3, ge=1, le=8)


class Ntp(Judge):
    id = "ntp"
    default_interval_s = 300
    params_model = NtpParams

    def validate(self, facts: dict[str, Any]) -> None:
        for key in ("offset_ms", "daemon_offset_ms", "root_delay_ms", "root_dispersion_ms", "seconds_since_sync"):
            value = facts.get(key, 0)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidFacts(f"ntp {key} {value!r} is not a finite number")
        if facts.get("offset_source", "") not in ("", "sntp", "daemon"):
            raise InvalidFacts(f"ntp offset_source {facts.get('offset_source')!r} is not sntp, daemon or empty")


JUDGE = Ntp()
