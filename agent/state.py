"""What an enrolled agent keeps in its data directory.

    agent.json   agent id, controller address, enrollment time
    agent.key    private key (0600)        agent.pem  its certificate (0600)
    ca.pem       the controller CA         spool.db   the durable spool
    policy.pb    the last policy received, so checks keep running while the controller is away
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from agent import NotEnrolled


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
