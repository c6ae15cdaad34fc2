"""TLS policy for gRPC on both sides (SFA-ETG Art.34): TLS >= 1.2, ECDHE only.

gRPC's minimum is already TLS 1.2 and TLS 1.3 suites always use (EC)DHE; TLS 1.2 peers are limited to
ECDHE-ECDSA with AES-GCM or ChaCha20. gRPC reads the list once, when its core starts, so call
``apply_policy()`` before the first channel or server is created.
"""

from __future__ import annotations

import os

ECDHE_SUITES = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"


def apply_policy() -> None:
    os.environ.setdefault("GRPC_SSL_CIPHER_SUITES", ECDHE_SUITES)
