"""``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address, read one way by the agent and the controller."""

from __future__ import annotations

__all__ = ["split_host_port"]


def split_host_port(spec: str, default_port: int) -> tuple[str, int]:
    """(host, port) of ``spec``; ``default_port`` when it names none.

    Raises ValueError when the port is not a number from 1 to 65535. The host may come back empty
    (``":123"``): the caller says whether that is allowed.
    """
    spec = spec.strip()
    host, port = spec, str(default_port)
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif spec.count(":") == 1:
        host, _, port = spec.partition(":")
    number = int(port)
    if not 0 < number < 2**16:
        raise ValueError(f"port {number} is out of range")
    return host, number
