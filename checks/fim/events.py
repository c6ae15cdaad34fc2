"""Turning (old record, new record) into events: what kind of change, which fields, which renames."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from checks.fim.hashing import HEAD, HEAD_SIZE, SHA_END, T_FILE, TYPE_NAMES
from checks.fim.model import FileState, FimEvent, Kind

# The order is the order of ``changed_fields``.
_FIELDS = (
    ("type", "type"), ("sha256", "sha256"), ("size", "size"), ("link_target", "link_target"),
    ("mode", "mode"), ("uid", "uid"), ("gid", "gid"),
    ("mtime", "mtime_ns"), ("ctime", "ctime_ns"), ("inode", "inode"),
)
_CONTENT = frozenset({"type", "sha256", "size", "link_target"})
_PERMISSIONS = frozenset({"mode", "uid", "gid"})


def display(path: bytes) -> str:
    """A path as reported: UTF-8, with undecodable bytes written as ``\\xNN`` (protobuf strings must be UTF-8)."""
    return path.decode("utf-8", "backslashreplace")


def decode(blob: bytes) -> FileState:
    code, size, mode, uid, gid, mtime_ns, ctime_ns, inode = HEAD.unpack_from(blob)
    return FileState(
        type=TYPE_NAMES.get(code, "other"),
        sha256=blob[HEAD_SIZE:SHA_END].hex() if code == T_FILE else "",
        size=size,
        mode=mode,
        uid=uid,
        gid=gid,
        mtime_ns=mtime_ns,
        ctime_ns=ctime_ns,
        inode=inode,
        link_target=display(blob[SHA_END:]),
    )


def classify(old: FileState | None, new: FileState | None) -> tuple[Kind | None, tuple[str, ...]]:
    """The kind of change and the fields that differ; kind None for a change not worth an event.

    Content (type, hash, size, symlink target) makes MODIFIED; only mode/owner/group makes
    PERMISSIONS. A change of mtime, ctime or inode alone is recorded silently: a deployment that
    rewrites identical files, or a ``touch``, changes nothing anyone could exploit, and reporting it is
    the noise FIM users complain about most.
    """
    if old is None and new is None:
        return None, ()
    if old is None:
        return Kind.CREATED, ()
    if new is None:
        return Kind.DELETED, ()
    changed = tuple(name for name, attr in _FIELDS if getattr(old, attr) != getattr(new, attr))
    fields = set(changed)
    if fields & _CONTENT:
        return Kind.MODIFIED, changed
    if fields & _PERMISSIONS:
        return Kind.PERMISSIONS, changed
    return None, changed


@dataclass(slots=True)
class Staged:
    """An event-to-be and what must be true for it to be written: the row it was computed against."""

    parent: bytes
    name: bytes
    expected: bytes | None
    new: bytes | None
    copy: int
    copy_data: bytes | None
    event: FimEvent | None
    adds: int  # +1 a new row, -1 a row removed, 0 replaced


def _same_object(gone: FileState, came: FileState) -> bool:
    if gone.type != came.type or gone.inode != came.inode or not gone.inode:
        return False
    if gone.type == "dir":
        return (gone.mode, gone.uid, gone.gid) == (came.mode, came.uid, came.gid)
    # rename() keeps mtime and size; an inode number reused by a new file comes with a new mtime.
    return (gone.size, gone.mtime_ns) == (came.size, came.mtime_ns)


def pair_renames(staged: Iterable[Staged]) -> None:
    """Turn a DELETED and a CREATED of the same inode in one batch into one RENAMED event (in place)."""
    items = list(staged)
    gone: dict[int, list[Staged]] = {}
    for s in items:
        if s.event is not None and s.event.kind is Kind.DELETED and s.event.before is not None:
            gone.setdefault(s.event.before.inode, []).append(s)
    if not gone:
        return
    for s in items:
        ev = s.event
        if ev is None or ev.kind is not Kind.CREATED or ev.after is None:
            continue
        for cand in gone.get(ev.after.inode, ()):
            old = cand.event
            if old is None or old.before is None or not _same_object(old.before, ev.after):
                continue
            _, fields = classify(old.before, ev.after)
            content_changed = "sha256" in fields
            s.event = FimEvent(
                kind=Kind.RENAMED,
                path=ev.path,
                old_path=old.path,
                detected_by=ev.detected_by,
                detected_at=ev.detected_at,
                before=old.before,
                after=ev.after,
                changed_fields=("path", *(f for f in fields if f != "ctime")),
                # The new path's diff was against nothing; against the old content there is no copy any more.
                diff_omitted="first seen" if content_changed else "",
            )
            cand.event = None
            break
