"""Fixtures every test package may use: a PostgreSQL server for the tests that run on it (tests/pg.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests import pg
from tests.netns import NetnsHost, require_netns


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg.PgServer | pg.PgUnavailable]:
    """Started on first use and stopped at the end of the session; the reason it is unavailable, if so."""
    with contextlib.ExitStack() as stack:
        try:
            found: pg.PgServer | pg.PgUnavailable = stack.enter_context(pg.server())
        except pg.PgUnavailable as exc:
            found = exc
        yield found


@pytest.fixture
def pg_url(pg_server: pg.PgServer | pg.PgUnavailable) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database for this test (psycopg 3 driver). Skipped, saying why,
    when no server can be started; failed when VIGIL_TEST_PG_URL names one that cannot be used."""
    if isinstance(pg_server, pg.PgUnavailable):
        if pg_server.configured:
            pytest.fail(str(pg_server), pytrace=False)
        pytest.skip(f"PostgreSQL unavailable: {pg_server}")
    with pg_server.database() as url:
        yield url


@pytest.fixture
def host() -> Iterator[NetnsHost]:
    """One host in a network namespace of its own, iptables available (skips, saying why, without root)."""
    require_netns(iptables=True)
    h = NetnsHost()
    try:
        yield h
    finally:
        h.close()
