"""TCP port lists as a rule writes them ("22,80,8000-8010"), read alike by the sensor and the controller."""

from __future__ import annotations

__all__ = ["PortListError", "parse_ports"]


class PortListError(ValueError):
    pass


def parse_ports(spec: str) -> list[int]:
    """``"22,80,8000-8010"`` -> sorted unique ports; PortListError naming the bad part."""
    ports: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise PortListError(f"ports {spec!r}: {part!r} is not a port or a range a-b") from None
        if not (1 <= a <= b <= 65535):
            raise PortListError(f"ports {spec!r}: {part!r} is outside 1-65535 or reversed")
        ports.update(range(a, b + 1))
    if not ports:
        raise PortListError(f"ports {spec!r}: no port given")
    return sorted(ports)
