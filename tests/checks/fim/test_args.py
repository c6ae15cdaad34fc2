"""Rule params → FimArgs: defaults, Struct doubles, and refusals that say what to write."""

from __future__ import annotations

import pytest

from checks.fim import FimArgs, FimParamsError


def test_defaults_and_only_paths_required() -> None:
    a = FimArgs.from_params({"paths": ["/var/www/html"]})
    assert a.paths == ("/var/www/html",)
    assert (a.max_files, a.hash_rate_mb_s, a.diff_max_kb, a.rehash_days, a.realtime, a.coalesce_ms) == (
        200_000, 64.0, 256, 7.0, True, 100)
    assert a.exclude == () and a.nodiff == ()


def test_struct_doubles_and_unknown_keys() -> None:
    a = FimArgs.from_params({"paths": ["/srv/a"], "max_files": 1000.0, "diff_max_kb": 0.0, "coalesce_ms": 50.0,
                             "hash_rate_mb_s": 0, "rehash_days": 0.5, "some_future_key": 1})
    assert a.max_files == 1000 and isinstance(a.max_files, int)
    assert a.diff_max_kb == 0 and a.coalesce_ms == 50 and a.hash_rate_mb_s == 0.0 and a.rehash_days == 0.5


def test_paths_are_normalised_and_nested_roots_dropped() -> None:
    a = FimArgs.from_params({"paths": ["/var/www/html/", "/var/www/html/uploads", "/usr/local/bin"]})
    assert a.paths == ("/usr/local/bin", "/var/www/html")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "paths is required"),
        ({"paths": []}, "non-empty list"),
        ({"paths": ["relative/dir"]}, "absolute path"),
        ({"paths": ["/"]}, "filesystem root"),
        ({"paths": ["/a"], "exclude": "*.log"}, None),
        ({"paths": ["/a"], "exclude": [1]}, "exclude must be a list"),
        ({"paths": ["/a"], "max_files": 0}, "max_files"),
        ({"paths": ["/a"], "max_files": 1.5}, "max_files"),
        ({"paths": ["/a"], "hash_rate_mb_s": -1}, "hash_rate_mb_s"),
        ({"paths": ["/a"], "rehash_days": 0}, "rehash_days"),
        ({"paths": ["/a"], "realtime": "yes"}, "realtime"),
        ({"paths": ["/a"], "coalesce_ms": True}, "coalesce_ms"),
    ],
)
def test_refusals_name_the_key(params: dict[str, object], fragment: str | None) -> None:
    if fragment is None:
        assert FimArgs.from_params(params).exclude == ("*.log",)
        return
    with pytest.raises(FimParamsError, match=fragment):
        FimArgs.from_params(params)


def test_coalesce_is_capped() -> None:
    assert FimArgs.from_params({"paths": ["/a"], "coalesce_ms": 600_000}).coalesce_ms == 10_000
