"""The shape every check follows (after GRR client actions and osquery tables).

A check has an ``id`` (also its proto message prefix, its baseline ``check:`` value and its test
folder), a ``version`` bumped when its result changes shape, the platforms it runs on, an ``Args``
type built from the rule ``params`` the controller pushes, and ``collect()``, which only gathers raw
input and hands it to pure ``parse_*`` functions that are tested on captured fixtures.

A check that watches continuously (``fim``) also overrides ``start()``: the agent calls it when a
policy task for the check appears and stops what it returned when the task goes away or changes;
in between the check reports through ``Context.emit``.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from google.protobuf.message import Message

from common.errors import VigilError


class CheckError(VigilError):
    """A check could not collect. ``kind`` is a CheckStatus.Kind name (ERROR, PARTIAL, ...)."""

    kind: str = "ERROR"


class ParamsError(CheckError, ValueError):
    """A rule's ``params`` the check cannot run with."""


def networks_param(params: Mapping[str, Any], check_id: str, key: str = "ranges",
                   error: type[ParamsError] = ParamsError) -> list[Any]:
    """``params[key]``: a non-empty list of networks ("10.20.0.0/24", "2001:db8::/64", "10.0.0.5"), parsed."""
    import ipaddress

    ranges = params.get(key)
    if not isinstance(ranges, list) or not ranges or not all(isinstance(r, str) for r in ranges):
        raise error(f"{check_id} params: {key} must be a non-empty list of networks")
    out: list[Any] = []
    for r in ranges:
        try:
            out.append(ipaddress.ip_network(r, strict=False))
        except ValueError:
            raise error(f"{check_id} params: {key}: {r!r} is not a network") from None
    return out


def named_addresses(params: Mapping[str, Any], key: str, check_id: str, networks: list[Any],
                    error: type[ParamsError] = ParamsError) -> list[tuple[str, Mapping[str, Any], str]]:
    """``params[key]``: a non-empty list of mappings, each with a ``name`` and an IP ``address`` inside
    ``networks``, no name twice. One (where, the mapping, the address as ipaddress writes it) per entry."""
    import ipaddress

    raw = params.get(key)
    if not isinstance(raw, list) or not raw:
        raise error(f"{check_id} params: {key} must be a non-empty list")
    out: list[tuple[str, Mapping[str, Any], str]] = []
    for i, entry in enumerate(raw):
        where = f"{check_id} params: {key}[{i}]"
        if not isinstance(entry, Mapping):
            raise error(f"{where} must be a mapping")
        for field_name in ("name", "address"):
            if not isinstance(entry.get(field_name), str) or not entry[field_name]:
                raise error(f"{where}: {field_name} is required")
        try:
            address = ipaddress.ip_address(entry["address"])
        except ValueError:
            raise error(f"{where}: address {entry['address']!r} is not an IP address") from None
        if not any(address in n for n in networks):
            raise error(f"{where}: {entry['name']} ({address}) is outside the ranges")
        out.append((where, entry, str(address)))
    names = [entry["name"] for _, entry, _ in out]
    if len(set(names)) != len(names):
        raise error(f"{check_id} params: the names in {key} must be unique")
    return out


class UnsupportedPlatform(CheckError):
    kind = "UNSUPPORTED"


class Undelivered(VigilError):
    """``Context.emit`` could not queue the result (the agent's spool is full): it is NOT on its way.

    The agent has counted the drop and marked the task dirty. A check that keeps local state must not
    record what it reported in this result as known (so that it finds it again), and may say through
    ``Context.recovery`` that it will collect it again itself.
    """


@dataclass
class Context:
    """What a check may know about where it runs."""

    platform: str = sys.platform
    # Raised by the check when it saw only part of what it looks at (e.g. other users' sockets).
    warnings: list[str] = field(default_factory=list)
    # Set by the agent runner for the ``agent`` check: spool depth, bytes and dropped count.
    spool_stats: Callable[[], Mapping[str, int | str]] | None = None
    # A directory private to this check and policy task, kept across runs and restarts (a local
    # baseline lives there); None when the caller gives none.
    state_dir: Path | None = None
    # The agent's data directory (a sensor's pinned host keys, credentials and vault live there);
    # None when the caller gives none.
    data_dir: Path | None = None
    # Report a result now, outside the schedule (a real-time change); the agent spools it at once.
    # It returns when the result is durably queued, and raises Undelivered when it could not be.
    # None when nobody listens.
    emit: Callable[[Result], None] | None = None
    # A check that collects dropped results again on its own (fim re-scans the roots whose events were
    # not queued) says here whether its task is still dirty (True) or has recovered (False); the agent
    # then leaves the task's recovery to it. None when nobody listens.
    recovery: Callable[[bool], None] | None = None


class Args:
    """Base of check arguments: built from the rule ``params`` pushed by the controller."""

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Args:
        return cls()


class Result(ABC):
    """A typed result; ``to_proto`` converts it at the edge into the check's proto message."""

    @abstractmethod
    def to_proto(self) -> Message: ...


class Stoppable(Protocol):
    """What ``Check.start`` returns: something running that the agent stops when the task goes away."""

    def stop(self) -> None: ...


ArgsT = TypeVar("ArgsT", bound=Args)
ResultT = TypeVar("ResultT", bound=Result)


class Check(ABC, Generic[ArgsT, ResultT]):
    id: ClassVar[str]
    version: ClassVar[int]
    platforms: ClassVar[tuple[str, ...]]
    args_type: ClassVar[type[Args]] = Args
    # Name of this check's field in the Report ``result`` oneof.
    report_field: ClassVar[str]
    default_interval_s: ClassVar[int] = 300
    # Longest a run may take; None means the agent's ``check_timeout_s``.
    timeout_s: ClassVar[float | None] = None

    @abstractmethod
    def collect(self, args: ArgsT, ctx: Context) -> Iterator[ResultT]:
        """Gather raw input, parse it, yield typed results (normally exactly one)."""

    def start(self, args: ArgsT, ctx: Context) -> Stoppable | None:
        """Start continuous work for a policy task (e.g. watching files); None for checks that only collect.

        Must return quickly (start a thread); later results go through ``ctx.emit``.
        """
        return None

    def runs_here(self, platform: str = sys.platform) -> bool:
        return any(platform.startswith(p) for p in self.platforms)
