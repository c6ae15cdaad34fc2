"""Port lists as a rule writes them ("22,80,8000-8010"), checked with a message naming the bad part."""

from __future__ import annotations

from checks.base import CheckError


class PortsError(CheckError, ValueError):
    pass


def parse_ports(spec: str) -> list[int]:
    """``"22,80,8000-8010"`` -> sorted unique ports; a clear error naming the bad part."""
    ports: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise PortsError(f"ports {spec!r}: {part!r} is not a port or a range a-b") from None
        if not (1 <= a <= b <= 65535):
            raise PortsError(f"ports {spec!r}: {part!r} is outside 1-65535 or reversed")
        ports.update(range(a, b + 1))
    if not ports:
        raise PortsError(f"ports {spec!r}: no port given")
    return sorted(ports)
