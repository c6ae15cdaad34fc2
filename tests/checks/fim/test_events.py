"""What kind of change, which fields, and renames."""

from __future__ import annotations

import datetime as dt

from checks.fim.events import Staged, classify, pair_renames
from checks.fim.model import Detector, FileState, FimEvent, Kind

F = FileState(type="file", sha256="aa", size=3, mode=0o100644, uid=0, gid=0, mtime_ns=10, ctime_ns=10, inode=7)
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _with(**kw: object) -> FileState:
    return FileState(**{**{f: getattr(F, f) for f in F.__slots__}, **kw})


def test_classify() -> None:
    assert classify(None, F) == (Kind.CREATED, ())
    assert classify(F, None) == (Kind.DELETED, ())
    assert classify(F, F) == (None, ())
    kind, fields = classify(F, _with(sha256="bb", mtime_ns=11, ctime_ns=11))
    assert kind is Kind.MODIFIED and fields == ("sha256", "mtime", "ctime")
    assert classify(F, _with(mode=0o100600, ctime_ns=11)) == (Kind.PERMISSIONS, ("mode", "ctime"))
    assert classify(F, _with(uid=33)) == (Kind.PERMISSIONS, ("uid",))
    # Only timestamps or the inode: a deploy rewriting identical files, a touch. Recorded, not reported.
    assert classify(F, _with(mtime_ns=99, ctime_ns=99, inode=8))[0] is None
    assert classify(F, _with(type="symlink", sha256="", link_target="/x"))[0] is Kind.MODIFIED
    # touch -r after changing content: same size, same mtime, ctime moved, hash differs.
    assert classify(F, _with(sha256="cc", ctime_ns=12)) == (Kind.MODIFIED, ("sha256", "ctime"))


def _staged(kind: Kind, path: str, before: FileState | None, after: FileState | None) -> Staged:
    ev = FimEvent(kind=kind, path=path, detected_by=Detector.REALTIME, detected_at=NOW, before=before, after=after)
    return Staged(b"/w", path.encode(), None, None, 0, None, ev, 0)


def test_rename_is_paired_by_inode_size_and_mtime() -> None:
    gone = _staged(Kind.DELETED, "/w/a", F, None)
    came = _staged(Kind.CREATED, "/w/b", None, _with(ctime_ns=20))
    other = _staged(Kind.CREATED, "/w/c", None, _with(inode=99))
    pair_renames([gone, came, other])
    assert gone.event is None
    assert came.event is not None and came.event.kind is Kind.RENAMED
    assert (came.event.path, came.event.old_path, came.event.changed_fields) == ("/w/b", "/w/a", ("path",))
    assert other.event is not None and other.event.kind is Kind.CREATED


def test_reused_inode_is_not_a_rename() -> None:
    gone = _staged(Kind.DELETED, "/w/a", F, None)
    came = _staged(Kind.CREATED, "/w/b", None, _with(mtime_ns=999, sha256="zz"))  # a new file, same inode number
    pair_renames([gone, came])
    assert gone.event is not None and gone.event.kind is Kind.DELETED
    assert came.event is not None and came.event.kind is Kind.CREATED


def test_event_proto_round_trip() -> None:
    ev = FimEvent(kind=Kind.MODIFIED, path="/w/a", detected_by=Detector.REHASH, detected_at=NOW, before=F,
                  after=_with(sha256="bb"), changed_fields=("sha256",), diff="-a\n+b\n", diff_omitted="")
    back = FimEvent.from_proto(ev.to_proto())
    assert back == ev
    msg = ev.to_proto()
    assert msg.before.owner == "root" and msg.detected_by == 3 and msg.kind == 2
