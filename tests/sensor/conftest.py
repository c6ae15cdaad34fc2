"""Shared fixtures of the sensor's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.netns import NetnsHost, require_netns


@pytest.fixture
def host() -> Iterator[NetnsHost]:
    """One host in a network namespace of its own (iptables available for dropping packets)."""
    require_netns(iptables=True)
    h = NetnsHost()
    try:
        yield h
    finally:
        h.close()
