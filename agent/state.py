"""What an enrolled agent keeps in its data directory.

    agent.json   agent id, controller address, enrollment time
    agent.key    private key (0600)        agent.pem  its certificate (0600)
    ca.pem       the controller CA         spool.db   the durable spool
    policy.pb    the last policy received, so checks keep running while the controller is away
    <check>/<task>/  private state of one check for one policy task, kept across restarts (fim keeps
                 its local baseline there); 0700. Directories of tasks that left the policy are
                 removed after STATE_KEEP_S, so a policy that drops a task and brings it back soon
                 does not lose the baseline (and with it what changed meanwhile).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from agent import NotEnrolled

log = logging.getLogger(__name__)
STATE_KEEP_S = 7 * 86400
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass
class Identity:
    agent_id: str
    controller: str
    enrolled_at: str

    @staticmethod
    def path(data_dir: Path) -> Path:
        return data_dir / "agent.json"

    def save(self, data_dir: Path) -> None:
        tmp = self.path(data_dir).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, self.path(data_dir))

    @classmethod
    def load(cls, data_dir: Path) -> Identity:
        p = cls.path(data_dir)
        if not p.exists():
            raise NotEnrolled(
                f"{data_dir} holds no enrolled agent: run 'vigil-agent enroll --controller HOST:PORT --token TOKEN "
                f"--data-dir {data_dir}' first"
            )
        try:
            data = json.loads(p.read_text())
            return cls(agent_id=str(data["agent_id"]), controller=str(data["controller"]),
                       enrolled_at=str(data.get("enrolled_at", "")))
        except (ValueError, KeyError) as exc:
            raise NotEnrolled(f"{p}: unreadable agent identity ({exc}); enroll again") from exc


def key_path(data_dir: Path) -> Path:
    return data_dir / "agent.key"


def cert_path(data_dir: Path) -> Path:
    return data_dir / "agent.pem"


def ca_path(data_dir: Path) -> Path:
    return data_dir / "ca.pem"


def policy_path(data_dir: Path) -> Path:
    return data_dir / "policy.pb"


def _task_dirname(task_id: str) -> str:
    # Task ids come from the controller: never let one name a path outside the data directory.
    if _SAFE.fullmatch(task_id) and task_id not in (".", ".."):
        return task_id
    return "t-" + hashlib.sha256(task_id.encode()).hexdigest()[:32]


def check_state_dir(data_dir: Path, check_id: str, task_id: str) -> Path:
    """The private state directory of ``check_id`` for one policy task.

    Not created here: most checks keep no state, and the ones that do create it (0700) when they
    first write. Using it (the check opening its files) keeps its mtime fresh for :func:`prune_state_dirs`.
    """
    return data_dir / _task_dirname(check_id) / _task_dirname(task_id or "adhoc")


def touch_state_dir(path: Path) -> None:
    """Mark a task's state directory as in use (it belongs to the current policy)."""
    if path.is_dir():
        os.utime(path)


def prune_state_dirs(data_dir: Path, check_ids: Iterable[str], keep: Iterable[Path], older_than_s: float = STATE_KEEP_S,
                     now: float | None = None) -> list[Path]:
    """Remove task state directories that are not in ``keep`` and were not used for ``older_than_s``."""
    now = time.time() if now is None else now
    kept = {p.resolve() for p in keep}
    removed: list[Path] = []
    for check_id in check_ids:
        base = data_dir / _task_dirname(check_id)
        if not base.is_dir():
            continue
        for d in base.iterdir():
            try:
                if not d.is_dir() or d.resolve() in kept or now - d.stat().st_mtime < older_than_s:
                    continue
                shutil.rmtree(d)
                removed.append(d)
            except OSError as exc:
                log.warning("cannot remove stale state %s: %s", d, exc)
    return removed
