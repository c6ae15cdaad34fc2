"""Durations as written in baselines and flags."""

from __future__ import annotations

import pytest

from common.durations import parse_duration
from common.errors import UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("2d", 172800),
        ("90m", 5400),
        (" 10 s ", 10),
        ("007s", 7),
    ],
)
def test_good_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "s", "5", "30", "5x", "1w", "1H", "-5s", "+5s", "1.5h", "5 m m", "1h30m", "five minutes", "0s", "0d"],
)
def test_bad_durations_name_the_value(text: str) -> None:
    with pytest.raises(UsageError, match="invalid duration") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


def test_zero_says_it_must_be_positive() -> None:
    with pytest.raises(UsageError, match="greater than zero"):
        parse_duration("0m")


def test_the_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_duration("soon")
