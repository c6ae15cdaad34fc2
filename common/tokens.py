"""Enrollment tokens: ``vgt1.<token id>.<secret>.<CA fingerprint>``.

The token carries the SHA-256 fingerprint of the controller's CA certificate so that an agent can check
whom it enrolls with without any other file. The controller stores only a hash of the secret.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from common.errors import UsageError

PREFIX = "vgt1"
_RE = re.compile(r"^vgt1\.([A-Za-z0-9_-]{8,64})\.([A-Za-z0-9_-]{16,128})\.([0-9a-f]{64})$")


@dataclass(frozen=True)
class EnrollmentToken:
    token_id: str
    secret: str
    ca_fingerprint: str

    def encode(self) -> str:
        return f"{PREFIX}.{self.token_id}.{self.secret}.{self.ca_fingerprint}"

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(text: str) -> EnrollmentToken:
    """Parse a token string, raising UsageError that says what is wrong with it."""
    m = _RE.match(text.strip())
    if not m:
        raise UsageError(
            "malformed enrollment token: expected 'vgt1.<id>.<secret>.<fingerprint>' as printed by "
            "'vigil-controller token create'"
        )
    return EnrollmentToken(m.group(1), m.group(2), m.group(3))


def random_urlsafe(nbytes: int) -> str:
    import secrets

    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).decode().rstrip("=")
