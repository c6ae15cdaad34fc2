"""Creating the files SQLite databases live in, owner-only, without disturbing a database in use."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def create_owner_only(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists, before SQLite opens it.

    SQLite then gives its -wal and -shm files the same mode, so a database holding hashes or file
    contents is never readable by others, not even briefly. An existing file is never opened here:
    closing *any* descriptor of a file drops every POSIX lock this process holds on it, SQLite's
    included. Another process closing its connection would then take itself for the last one and
    delete the WAL a connection here still writes to: commits lost, then "disk I/O error".
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
