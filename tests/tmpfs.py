"""A real, small file system for tests that fill one: a tmpfs mounted for the test and unmounted after it."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(mnt: Path, size_mb: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_mb`` MiB (owner-only) at ``mnt`` (created); skip, saying why, where one cannot
    be mounted (it needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill a real file system needs root")
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
