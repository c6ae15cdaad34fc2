"""Exclusion and ``nodiff`` globs.

Semantics (the same for ``exclude`` and ``nodiff``; separators are always written ``/``):

* ``*`` and ``?`` match within one path component, ``[...]`` is a character class as in fnmatch,
  ``**`` matches across components and ``**/`` matches zero or more directories.
* A pattern starting with ``/`` (or a drive, ``C:/``) is matched against the absolute path.
* Any other pattern containing ``/`` is matched against the path relative to its watched root:
  ``cache/**`` is everything below ``<root>/cache``.
* A pattern without ``/`` is matched against the file name at any depth: ``*.log``.
* A directory that matches is left out together with everything below it; a pattern ending in
  ``/**`` leaves out everything below the directory it names (the directory itself is still watched).

Matching works on ``bytes`` because the engine walks the tree with bytes paths: a file name that is not
valid UTF-8 must still be watched, not crash the walk.
"""

from __future__ import annotations

import ntpath
import os
import re
from collections.abc import Sequence

from common.globs import glob_to_regex

_SLASH = b"/"


def _compile(patterns: list[str]) -> re.Pattern[bytes] | None:
    if not patterns:
        return None
    joined = "|".join(f"(?:{glob_to_regex(p)})" for p in patterns)
    return re.compile(os.fsencode(joined), re.DOTALL)


def _is_absolute(pattern: str) -> bool:
    return pattern.startswith("/") or bool(ntpath.splitdrive(pattern)[0])


class PathMatcher:
    """A set of globs, compiled once into at most three regular expressions (name, relative, absolute)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        by_name: list[str] = []
        by_rel: list[str] = []
        by_abs: list[str] = []
        sub_rel: list[str] = []
        sub_abs: list[str] = []
        for raw in self.patterns:
            pat = raw.replace("\\", "/") if os.sep == "\\" else raw
            if len(pat) > 1:
                pat = pat.rstrip("/") or pat
            absolute = _is_absolute(pat)
            (by_abs if absolute else by_rel if "/" in pat else by_name).append(pat)
            if pat.endswith("/**") and len(pat) > 3:
                # "cache/**" leaves out everything below <root>/cache: the walk need not even list it.
                (sub_abs if absolute else sub_rel).append(pat[:-3])
        self._name = _compile(by_name)
        self._rel = _compile(by_rel)
        self._abs = _compile(by_abs)
        self._sub_rel = _compile(sub_rel)
        self._sub_abs = _compile(sub_abs)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, rel: bytes, abs_path: bytes) -> bool:
        """Whether the path itself matches (``rel`` uses ``/``, is relative to its root, b"" for the root)."""
        if not rel:
            return False  # a watched root is never excluded by its own rule
        if self._name is not None and self._name.fullmatch(rel.rpartition(_SLASH)[2]):
            return True
        if self._rel is not None and self._rel.fullmatch(rel):
            return True
        return self._abs is not None and self._abs.fullmatch(_slashes(abs_path)) is not None

    def prunes(self, rel: bytes, abs_path: bytes) -> bool:
        """Whether nothing below the directory at ``rel`` is wanted (it matches, or ``<it>/**`` does)."""
        if self.matches(rel, abs_path):
            return True
        if self._sub_rel is not None and rel and self._sub_rel.fullmatch(rel):
            return True
        return self._sub_abs is not None and self._sub_abs.fullmatch(_slashes(abs_path)) is not None

    def covers(self, root: bytes, path: bytes) -> bool:
        """Whether ``path`` (below ``root``) is left out by the path itself or by any directory above it.

        The walk never descends into a pruned directory, but a real-time watch cannot be told to skip
        one, so events from below it are filtered here with the same rules.
        """
        if not self.patterns:
            return False
        rel = _relative(root, path)
        if not rel:
            return False
        parts = rel.split(_SLASH)
        sep = os.fsencode(os.sep)
        for i in range(1, len(parts)):
            sub = _SLASH.join(parts[:i])
            if self.prunes(sub, root + sep + sub.replace(_SLASH, sep)):
                return True
        return self.matches(rel, path)


def _slashes(path: bytes) -> bytes:
    return path.replace(b"\\", _SLASH) if os.sep == "\\" else path


def _relative(root: bytes, path: bytes) -> bytes:
    """``path`` relative to ``root`` with ``/`` separators; b"" for the root itself."""
    if path == root:
        return b""
    rel = path[len(root) + 1 :] if root else path
    return _slashes(rel)


def relative(root: bytes, path: bytes) -> bytes:
    """Public form of the relative path the globs are matched against."""
    return _relative(root, path)
