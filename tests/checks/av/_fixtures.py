"""Paths of the ``av`` fixtures (see fixtures/README.md for how each was made) and helpers to stage them."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
CLAMAV = FIXTURES / "clamav"
UTC = dt.UTC


def defender(name: str) -> Path:
    return FIXTURES / f"defender_{name}.documented.json"


def stage(directory: Path, **files: str) -> Path:
    """Copy fixture databases into ``directory``: ``stage(d, daily_cld="daily.cld")`` puts it at d/daily.cld."""
    directory.mkdir(parents=True, exist_ok=True)
    for target, source in files.items():
        shutil.copyfile(CLAMAV / source, directory / target.replace("_", "."))
    return directory
