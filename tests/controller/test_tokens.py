"""Enrollment token text: ``vgt1.<id>.<secret>.<CA fingerprint>`` round-trips and bad text is refused."""

from __future__ import annotations

import hashlib

import pytest

from common.errors import UsageError
from common.tokens import EnrollmentToken, hash_secret, parse_token, random_urlsafe

FP = hashlib.sha256(b"a CA certificate").hexdigest()


def test_encode_parse_round_trip() -> None:
    token = EnrollmentToken(random_urlsafe(9), random_urlsafe(24), FP)
    text = token.encode()
    assert text == f"vgt1.{token.token_id}.{token.secret}.{FP}"
    assert parse_token(text) == token
    # Pasted tokens often carry a newline or spaces around them.
    assert parse_token(f"  {text}\n") == token


@pytest.mark.parametrize("nbytes", [1, 8, 9, 24, 32])
def test_random_part_is_urlsafe_without_padding(nbytes: int) -> None:
    part = random_urlsafe(nbytes)
    assert "=" not in part
    assert set(part) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_random_parts_fit_the_token_format() -> None:
    for _ in range(50):
        token = EnrollmentToken(random_urlsafe(9), random_urlsafe(24), FP)
        assert parse_token(token.encode()) == token


def test_only_a_hash_of_the_secret_is_kept() -> None:
    token = EnrollmentToken("abcdefgh", "s" * 32, FP)
    assert token.secret_hash == hash_secret("s" * 32) == hashlib.sha256(b"s" * 32).hexdigest()
    assert hash_secret("s" * 32) != hash_secret("s" * 31)


GOOD_ID, GOOD_SECRET = "abcdefgh", "0123456789abcdef"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "vgt1",
        f"vgt2.{GOOD_ID}.{GOOD_SECRET}.{FP}",  # unknown version
        f"VGT1.{GOOD_ID}.{GOOD_SECRET}.{FP}",
        f"vgt1.abcdefg.{GOOD_SECRET}.{FP}",  # id too short
        f"vgt1.{GOOD_ID}.0123456789abcde.{FP}",  # secret too short
        f"vgt1.{GOOD_ID}.{GOOD_SECRET}.{FP[:-1]}",  # fingerprint too short
        f"vgt1.{GOOD_ID}.{GOOD_SECRET}.{FP.upper()}",  # fingerprints are lowercase hex
        f"vgt1.{GOOD_ID}.{GOOD_SECRET}.{FP}.extra",
        f"vgt1.{GOOD_ID}.{GOOD_SECRET}",
        f"vgt1.abc/efgh.{GOOD_SECRET}.{FP}",  # not URL-safe
        f"vgt1.{GOOD_ID} .{GOOD_SECRET}.{FP}",
    ],
)
def test_malformed_tokens_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="malformed enrollment token"):
        parse_token(text)


def test_minimum_lengths_are_accepted() -> None:
    token = parse_token(f"vgt1.{GOOD_ID}.{GOOD_SECRET}.{FP}")
    assert (token.token_id, token.secret, token.ca_fingerprint) == (GOOD_ID, GOOD_SECRET, FP)
