"""The one place where judges are registered: one per check id, the same ids as the agent's registry.

Ingest, tickets and the transports never compare check ids; they ask the judge of a result.
``tests/test_architecture.py`` holds these ids equal to ``checks.registry``'s.
"""

from __future__ import annotations

from controller.baselines import CheckSpec
from controller.judges import agent, av, eol, fim, netscan, ntp, ports, ssh_device
from controller.judges.base import InvalidFacts, Judge

JUDGES: dict[str, Judge] = {j.id: j for j in (ports.JUDGE, agent.JUDGE, av.JUDGE, eol.JUDGE, ntp.JUDGE, fim.JUDGE,
                                              ssh_device.JUDGE, netscan.JUDGE)}
# What the baseline language is told about the checks: pass it to ``controller.baselines.load_baseline``.
CHECK_SPECS: dict[str, CheckSpec] = {check_id: judge.spec() for check_id, judge in JUDGES.items()}


def judge_for(check_id: str, check_version: int | None = None) -> Judge:
    """The judge of ``check_id`` results of ``check_version`` (None: any); InvalidFacts when there is none."""
    judge = JUDGES.get(check_id)
    if judge is None:
        raise InvalidFacts(f"unknown check {check_id!r}")
    # Version 0 is proto3's unset: agents before versioned reports sent none, and their results were version 1.
    if check_version is not None and (check_version or 1) not in judge.versions:
        known = ", ".join(str(v) for v in sorted(judge.versions))
        raise InvalidFacts(f"check {check_id!r} version {check_version} is not one this controller reads ({known})")
    return judge


def default_interval_s(check_id: str) -> int:
    judge = JUDGES.get(check_id)
    return judge.default_interval_s if judge is not None else 300
