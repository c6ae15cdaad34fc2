"""Exclude/nodiff globs: by name at any depth, relative to the root, absolute, and whole subtrees."""

from __future__ import annotations

import pytest

from checks.fim.globs import PathMatcher

ROOT = b"/var/www/html"


def _m(*patterns: str) -> PathMatcher:
    return PathMatcher(patterns)


@pytest.mark.parametrize(
    ("pattern", "rel", "expected"),
    [
        ("*.log", b"access.log", True),
        ("*.log", b"a/b/error.log", True),  # a name pattern matches at any depth
        ("*.log", b"a/log", False),
        ("cache/**", b"cache/x/y.php", True),
        ("cache/**", b"cache", False),  # the directory itself is still watched
        ("cache/**", b"a/cache/x", False),  # relative to the root, not any "cache"
        ("**/cache/**", b"a/cache/x", True),
        ("**/node_modules", b"node_modules", True),
        ("**/node_modules", b"x/y/node_modules", True),
        ("uploads/*.tmp", b"uploads/a.tmp", True),
        ("uploads/*.tmp", b"uploads/sub/a.tmp", False),  # * stays within one component
        ("?.txt", b"a.txt", True),
        ("[!a]*.txt", b"b.txt", True),
        ("[!a]*.txt", b"a.txt", False),
        ("/var/www/html/secret/*", b"secret/key.pem", True),  # absolute
        ("/var/www/other/*", b"secret/key.pem", False),
    ],
)
def test_matches(pattern: str, rel: bytes, expected: bool) -> None:
    assert _m(pattern).matches(rel, ROOT + b"/" + rel) is expected


def test_root_itself_is_never_excluded() -> None:
    assert not _m("**").matches(b"", ROOT)


def test_prunes_subtrees() -> None:
    m = _m("cache/**", "*.bak", "/var/www/html/tmp")
    assert m.prunes(b"cache", ROOT + b"/cache")
    assert not m.matches(b"cache", ROOT + b"/cache")
    assert m.prunes(b"tmp", ROOT + b"/tmp")
    assert not m.prunes(b"app", ROOT + b"/app")


def test_covers_checks_every_directory_above() -> None:
    m = _m("cache", "build/**")
    assert m.covers(ROOT, ROOT + b"/cache/a/b.php")  # "cache" excludes the directory and all below
    assert m.covers(ROOT, ROOT + b"/build/x.js")
    assert not m.covers(ROOT, ROOT + b"/build")
    assert not m.covers(ROOT, ROOT + b"/app/cache.php")
    assert not m.covers(ROOT, ROOT)


def test_non_utf8_names_match() -> None:
    assert _m("*.log").matches(b"\xff\xfe.log", ROOT + b"/\xff\xfe.log")


def test_empty_matcher_is_falsy() -> None:
    assert not _m()
    assert not _m().covers(ROOT, ROOT + b"/x")
