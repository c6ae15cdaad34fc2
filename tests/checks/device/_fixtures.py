"""The fixture layout (``fixtures/<platform>/<command-slug>/<name>.txt`` + ``<name>.json``) and its commands."""

from __future__ import annotations

import re
from pathlib import Path

from checks.device import PLATFORMS

FIXTURES = Path(__file__).parent / "fixtures"


def slug(command: str) -> str:
    """The folder name of a command: "show configuration | display set" -> "show_configuration_display_set"."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", command).strip("_")


def command_of(platform: str, command_slug: str) -> str:
    by_slug = {slug(c): c for c in PLATFORMS[platform]}
    return by_slug[command_slug]


def cases() -> list[Path]:
    return sorted(FIXTURES.glob("*/*/*.txt"))


def read(path: Path) -> str:
    # newline="" keeps CRLF and lone CR as captured: the cleaner is under test too.
    with path.open(encoding="utf-8", newline="") as f:
        return f.read()
