"""One device's facts as the sensor reports them: every command Vigil parses on its platform, run in one
SSH session, parsed and merged into one :class:`checks.device.Facts`.

A session that fails as a whole (unreachable, a refused or changed host key, a refused login, out of
time) gives a snapshot with ``error`` set and no facts: the device could not be judged, which the
controller must report as such, never as passing. A command whose output does not parse is named in
``problems`` and the other commands' facts still count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.sensor import SensorError
from agent.sensor.credentials import Credential
from agent.sensor.hostkeys import HostKeyStore
from agent.sensor.ssh import Collected, Output, Target, Timeouts, collect_many
from checks.device import PLATFORMS, DeviceParseError, Facts, parse


@dataclass(frozen=True)
class Snapshot:
    target: Target
    collected_at: dt.datetime
    facts: Facts | None = None
    problems: dict[str, str] = field(default_factory=dict)
    error: SensorError | None = None
    elapsed_s: float = 0.0
    outputs: tuple[Output, ...] = ()  # as the device printed them (a check may read more from them)

    @property
    def reached(self) -> bool:
        return self.error is None


def commands_for(platform: str) -> list[str]:
    """Every command Vigil parses on ``platform``, in the registry's order."""
    try:
        return list(PLATFORMS[platform])
    except KeyError:
        raise SensorError(f"unknown platform {platform!r} (known: {', '.join(sorted(PLATFORMS))})") from None


def facts_of(platform: str, outputs: Sequence[Output]) -> tuple[Facts | None, dict[str, str]]:
    """The outputs parsed and merged, and the commands whose output did not parse (with why)."""
    merged: Facts | None = None
    problems: dict[str, str] = {}
    for out in outputs:
        try:
            facts = parse(platform, out.command, out.text)
        except DeviceParseError as exc:
            problems[out.command] = str(exc)
            continue
        merged = facts if merged is None else merged.merge(facts)
    return merged, problems


def snapshots(jobs: Sequence[tuple[Target, Credential]], *, hostkeys: HostKeyStore, timeouts: Timeouts = Timeouts(),
              workers: int = 16, commands: Sequence[str] | None = None) -> list[Snapshot]:
    """A snapshot of each device, at most ``workers`` sessions at once; in the order of ``jobs``."""
    started = dt.datetime.now(dt.UTC)
    done = collect_many([(t, list(commands) if commands else commands_for(t.platform), c) for t, c in jobs],
                        hostkeys=hostkeys, timeouts=timeouts, workers=workers)
    return [_snapshot(c, started) for c in done]


def _snapshot(c: Collected, started: dt.datetime) -> Snapshot:
    if c.error is not None:
        return Snapshot(c.target, started, error=c.error, elapsed_s=c.elapsed_s)
    facts, problems = facts_of(c.target.platform, c.outputs)
    return Snapshot(c.target, started, facts, problems, None, c.elapsed_s, tuple(c.outputs))
