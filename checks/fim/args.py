"""Parameters of the ``fim`` check, built from a rule's ``params`` (the controller validates the same keys)."""

from __future__ import annotations

import math
import ntpath
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from checks.base import Args
from checks.fim.errors import FimParamsError

DEFAULT_MAX_FILES = 200_000
DEFAULT_HASH_RATE_MB_S = 64.0
DEFAULT_DIFF_MAX_KB = 256
DEFAULT_REHASH_DAYS = 7.0
DEFAULT_COALESCE_MS = 100
# Beyond ten seconds "coalescing" turns into "delaying", and the detection-latency promise breaks.
_MAX_COALESCE_MS = 10_000


@dataclass(frozen=True)
class FimArgs(Args):
    """What to watch and how hard the agent may work at it.

    ``paths``: absolute directories or files. ``exclude``: globs of paths not to watch; ``nodiff``:
    globs of paths whose content must never leave the host (no diff, no copy kept). Globs are matched
    against the path relative to its root and against the absolute path (see :mod:`checks.fim.globs`).
    ``max_files``: beyond it new files are not watched and every result says so. ``hash_rate_mb_s``:
    hashing throughput cap, 0 for none. ``diff_max_kb``: text files up to this size get a unified diff
    (0 turns diffs off). ``rehash_days``: the rotating full re-hash covers every file once per period.
    ``realtime``: watch with inotify/FSEvents/ReadDirectoryChangesW. ``coalesce_ms``: how long a burst
    of changes is gathered before it is reported.
    """

    paths: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    nodiff: tuple[str, ...] = ()
    max_files: int = DEFAULT_MAX_FILES
    hash_rate_mb_s: float = DEFAULT_HASH_RATE_MB_S
    diff_max_kb: int = DEFAULT_DIFF_MAX_KB
    rehash_days: float = DEFAULT_REHASH_DAYS
    realtime: bool = True
    coalesce_ms: int = DEFAULT_COALESCE_MS

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FimArgs:
        # Unknown keys are ignored so that a newer controller can push keys of a later check version
        # without breaking this agent; known keys of the wrong type are refused, because silently
        # falling back to a default would make the rule watch something else than it says.
        paths = _paths(params.get("paths"))
        return cls(
            paths=paths,
            exclude=_globs(params, "exclude"),
            nodiff=_globs(params, "nodiff"),
            max_files=_int(params, "max_files", DEFAULT_MAX_FILES, minimum=1),
            hash_rate_mb_s=_number(params, "hash_rate_mb_s", DEFAULT_HASH_RATE_MB_S, minimum=0.0),
            diff_max_kb=_int(params, "diff_max_kb", DEFAULT_DIFF_MAX_KB, minimum=0),
            rehash_days=_positive(params, "rehash_days", DEFAULT_REHASH_DAYS),
            realtime=_bool(params, "realtime", True),
            coalesce_ms=min(_int(params, "coalesce_ms", DEFAULT_COALESCE_MS, minimum=0), _MAX_COALESCE_MS),
        )


def _isabs(path: str) -> bool:
    # A baseline is written once for a fleet of mixed OSes; accept either spelling of "absolute".
    return posixpath.isabs(path) or ntpath.isabs(path)


def _paths(value: Any) -> tuple[str, ...]:
    if value is None:
        raise FimParamsError('fim params: paths is required; write e.g. paths: ["/var/www/html"]')
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise FimParamsError(f"fim params: paths must be a non-empty list of absolute paths, got {value!r}")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item or not _isabs(item):
            raise FimParamsError(
                f"fim params: every entry of paths must be an absolute path, got {item!r}; "
                'write e.g. paths: ["/var/www/html", "/usr/local/bin"]'
            )
        norm = os.path.normpath(item)
        if os.path.dirname(norm) == norm:
            raise FimParamsError(
                f"fim params: paths may not name a filesystem root ({item!r}); name the directories to watch"
            )
        out.append(norm)
    # A root inside another root would be walked, watched and reported twice.
    unique = sorted(set(out))
    kept = [p for p in unique if not any(p != q and _inside(p, q) for q in unique)]
    return tuple(kept)


def _inside(path: str, root: str) -> bool:
    return path.startswith(root.rstrip(os.sep) + os.sep)


def _globs(params: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = params.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(g, str) and g for g in value):
        raise FimParamsError(
            f'fim params: {key} must be a list of glob patterns, got {value!r}; write e.g. {key}: ["*.log"]'
        )
    return tuple(value)


def _int(params: Mapping[str, Any], key: str, default: int, *, minimum: int) -> int:
    value = params.get(key)
    if value is None:
        return default
    # Struct carries every number as a double; a whole double is the integer the baseline wrote.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FimParamsError(f"fim params: {key} must be a whole number of at least {minimum}, got {value!r}")
    return value


def _number(params: Mapping[str, Any], key: str, default: float, *, minimum: float) -> float:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < minimum:
        raise FimParamsError(f"fim params: {key} must be a number of at least {minimum:g}, got {value!r}")
    return float(value)


def _positive(params: Mapping[str, Any], key: str, default: float) -> float:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise FimParamsError(f"fim params: {key} must be a number greater than 0, got {value!r}")
    return float(value)


def _bool(params: Mapping[str, Any], key: str, default: bool) -> bool:
    value = params.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise FimParamsError(f"fim params: {key} must be true or false, got {value!r}")
    return value
