"""Evidence for content changes: text detection, unified diffs, and the compressed copies they need.

A diff needs the previous content, which a hash cannot give back, so the agent keeps a zlib-compressed
copy of every *text* file up to ``diff_max_kb`` in its state database (owner-only), except for paths
matching ``nodiff``: their content never leaves the host and is never copied either. Binary files and
larger files are compared by hash and metadata only.
"""

from __future__ import annotations

import zlib

# Bytes that do not occur in text: C0 controls other than tab, LF, FF, CR, backspace and ESC.
_CONTROL = bytes(b for b in range(32) if b not in (8, 9, 10, 12, 13, 27))
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL)
_SAMPLE = 8192


def is_text(data: bytes) -> bool:
    """No NUL byte, and (almost) no other control bytes: UTF-8 or an 8-bit encoding (a latin-1 PHP file).

    Compressed or encrypted data has a control byte in every tenth position, so it never passes.
    """
    if b"\x00" in data:
        return False
    sample = data[:_SAMPLE]
    controls = len(sample.translate(None, _NOT_CONTROL))
    return controls * 100 <= len(sample)


def compress(data: bytes) -> bytes:
    # Level 1: the copies are written on every change and by the background copy pass, where CPU
    # matters more than the last 20 % of disk space.
    return zlib.compress(data, 1)


def decompress(data: bytes) -> bytes:
    return zlib.decompress(data)


def _lines(data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.splitlines()


def unified(old: bytes | None, new: bytes, path: str, limit: int) -> tuple[str, bool]:
    """Unified diff of ``old`` (None: the file is new) to ``new``, cut to ``limit`` characters."""
    before = _lines(old) if old is not None else []
    fromfile = path if old is not None else "/dev/null"
    import difflib  # on first diff: an agent whose files do not change never needs it

    lines = difflib.unified_diff(before, _lines(new), fromfile=fromfile, tofile=path, lineterm="")
    out: list[str] = []
    size = 0
    for line in lines:
        size += len(line) + 1
        if size > limit:
            return "\n".join(out) + "\n", True
        out.append(line)
    return ("\n".join(out) + "\n") if out else "", False
