"""Typed results of the ``fim`` check and their conversion to and from ``vigil.v1.Fim*`` messages."""

from __future__ import annotations

import datetime as dt
import enum
import functools
import sys
from dataclasses import dataclass, field

from checks.base import Result
from proto.vigil.v1 import fim_pb2


class Kind(enum.Enum):
    """What happened to a path (the values are the proto enum numbers)."""

    CREATED = 1
    MODIFIED = 2
    DELETED = 3
    RENAMED = 4
    # Mode, owner or group changed; content did not.
    PERMISSIONS = 5


class Detector(enum.Enum):
    """Which of the ways of seeing a change found it (the values are the proto enum numbers)."""

    REALTIME = 1
    VERIFY = 2
    REHASH = 3
    STARTUP = 4
    OVERFLOW_RESCAN = 5


@functools.lru_cache(maxsize=1024)
def _owner(uid: int) -> str:
    if sys.platform == "win32":
        return ""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@functools.lru_cache(maxsize=1024)
def _group(gid: int) -> str:
    if sys.platform == "win32":
        return ""
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


@dataclass(frozen=True, slots=True)
class FileState:
    """What the agent recorded about one path. ``type`` is "file", "dir", "symlink" or "other".

    ``sha256`` is "" for anything but a regular file. Directories carry no size and no times, because
    those change whenever an entry is added and would make every directory look modified.
    """

    type: str
    sha256: str = ""
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    link_target: str = ""

    def to_proto(self) -> fim_pb2.FimFileState:
        return fim_pb2.FimFileState(
            type=self.type,
            sha256=self.sha256,
            size=self.size,
            mode=self.mode,
            uid=self.uid,
            gid=self.gid,
            # Names are looked up when reported, not when recorded: uid 33 is what the kernel checks,
            # "www-data" is what a person reads.
            owner=_owner(self.uid),
            group=_group(self.gid),
            mtime=self.mtime_ns / 1e9,
            ctime=self.ctime_ns / 1e9,
            inode=self.inode,
            link_target=self.link_target,
        )

    @classmethod
    def from_proto(cls, msg: fim_pb2.FimFileState) -> FileState:
        return cls(
            type=msg.type,
            sha256=msg.sha256,
            size=msg.size,
            mode=msg.mode,
            uid=msg.uid,
            gid=msg.gid,
            mtime_ns=round(msg.mtime * 1e9),
            ctime_ns=round(msg.ctime * 1e9),
            inode=msg.inode,
            link_target=msg.link_target,
        )


@dataclass
class FimEvent:
    """One change of one path, with before/after state and, for text files, a unified diff."""

    kind: Kind
    path: str
    detected_by: Detector
    detected_at: dt.datetime
    before: FileState | None = None
    after: FileState | None = None
    old_path: str = ""
    changed_fields: tuple[str, ...] = ()
    diff: str = ""
    diff_truncated: bool = False
    # "nodiff", "binary", "too large", "first seen" or "" (see fim.proto).
    diff_omitted: str = ""
    # The package manager and package that made the change, e.g. "dpkg:nginx-common" (see
    # checks.fim.packages); "" when no package manager accounts for it.
    package: str = ""

    def to_proto(self) -> fim_pb2.FimEvent:
        msg = fim_pb2.FimEvent(
            kind=fim_pb2.FimEvent.Kind.ValueType(self.kind.value),
            path=self.path,
            old_path=self.old_path,
            changed_fields=list(self.changed_fields),
            diff=self.diff,
            diff_truncated=self.diff_truncated,
            diff_omitted=self.diff_omitted,
            detected_by=fim_pb2.FimEvent.Detector.ValueType(self.detected_by.value),
            package=self.package,
        )
        if self.before is not None:
            msg.before.CopyFrom(self.before.to_proto())
        if self.after is not None:
            msg.after.CopyFrom(self.after.to_proto())
        msg.detected_at.FromDatetime(self.detected_at)
        return msg

    @classmethod
    def from_proto(cls, msg: fim_pb2.FimEvent) -> FimEvent:
        return cls(
            kind=Kind(msg.kind),
            path=msg.path,
            detected_by=Detector(msg.detected_by),
            detected_at=msg.detected_at.ToDatetime(tzinfo=dt.UTC),
            before=FileState.from_proto(msg.before) if msg.HasField("before") else None,
            after=FileState.from_proto(msg.after) if msg.HasField("after") else None,
            old_path=msg.old_path,
            changed_fields=tuple(msg.changed_fields),
            diff=msg.diff,
            diff_truncated=msg.diff_truncated,
            diff_omitted=msg.diff_omitted,
            package=msg.package,
        )


@dataclass
class FimResult(Result):
    """One report's worth of changes of the watched paths, and the state of the watch."""

    roots: list[str] = field(default_factory=list)
    events: list[FimEvent] = field(default_factory=list)
    # "startup", "realtime", "verify", "overflow_rescan" (and "rehash" is reserved by the proto).
    scan_kind: str = ""
    files_watched: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    file_cap_reached: bool = False
    file_cap: int = 0
    baseline_created: bool = False
    notices: list[str] = field(default_factory=list)
    duration_ms: float = 0.0

    def to_proto(self) -> fim_pb2.FimResult:
        return fim_pb2.FimResult(
            roots=self.roots,
            events=[e.to_proto() for e in self.events],
            scan_kind=self.scan_kind,
            files_watched=self.files_watched,
            files_hashed=self.files_hashed,
            bytes_hashed=self.bytes_hashed,
            file_cap_reached=self.file_cap_reached,
            file_cap=self.file_cap,
            baseline_created=self.baseline_created,
            notices=self.notices,
            duration_ms=self.duration_ms,
        )

    @classmethod
    def from_proto(cls, msg: fim_pb2.FimResult) -> FimResult:
        return cls(
            roots=list(msg.roots),
            events=[FimEvent.from_proto(m) for m in msg.events],
            scan_kind=msg.scan_kind,
            files_watched=msg.files_watched,
            files_hashed=msg.files_hashed,
            bytes_hashed=msg.bytes_hashed,
            file_cap_reached=msg.file_cap_reached,
            file_cap=msg.file_cap,
            baseline_created=msg.baseline_created,
            notices=list(msg.notices),
            duration_ms=msg.duration_ms,
        )
