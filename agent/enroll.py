"""Enrollment: trust the controller by the CA fingerprint in the token, then trade a CSR for a certificate.

The agent has no CA file yet, so it first opens a plain TLS connection to the enrollment listener,
reads the certificate chain the controller presents without trusting it, and accepts the CA only if its
SHA-256 fingerprint equals the one in the token and it signed the server certificate. From then on the
channel is verified against that CA like any other.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
from pathlib import Path

import grpc

from agent import EnrollFailed, os_description
from agent.state import Identity, ca_path, cert_path, key_path
from common import __version__
from common.errors import UsageError
from common.pki import fingerprint_der, new_key_and_csr, verify_issued_by, write_private
from common.tokens import parse_token
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import agent_service_pb2_grpc as pbg

SERVER_NAME = "vigil-controller"


def split_address(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"controller address {addr!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def fetch_ca(host: str, port: int, want_fingerprint: str, timeout: float = 10.0) -> bytes:
    """The controller's CA certificate (PEM), checked against ``want_fingerprint``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # verified below against the token's fingerprint
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
            chain = _unverified_chain(tls)
    except OSError as exc:
        raise EnrollFailed(f"cannot reach the controller's enrollment listener at {host}:{port}: {exc}") from exc
    ders = [c for c in chain]
    for der in ders[1:] + ders[:1]:
        if fingerprint_der(der) == want_fingerprint:
            ca_pem = ssl.DER_cert_to_PEM_cert(der).encode()
            leaf_pem = ssl.DER_cert_to_PEM_cert(ders[0]).encode()
            if not verify_issued_by(leaf_pem, ca_pem):
                raise EnrollFailed("the controller's certificate is not signed by the CA the token names")
            return ca_pem
    raise EnrollFailed(
        f"the controller at {host}:{port} does not present the CA this token was issued for "
        "(fingerprint mismatch): wrong address, or someone in the middle"
    )


def _unverified_chain(tls: ssl.SSLSocket) -> list[bytes]:
    getter = getattr(tls, "get_unverified_chain", None)  # public from Python 3.13
    if getter is None:
        getter = tls._sslobj.get_unverified_chain  # type: ignore[attr-defined]
    certs = getter() or []
    out = []
    for c in certs:
        out.append(c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
    return out


def enroll(controller: str, token_text: str, data_dir: Path, enroll_port: int | None = None,
           timeout: float = 15.0) -> Identity:
    token = parse_token(token_text)
    host, port = split_address(controller)
    eport = enroll_port or port + 1
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if Identity.path(data_dir).exists():
        raise UsageError(f"{data_dir} already holds an enrolled agent ({Identity.load(data_dir).agent_id}); "
                         "use another --data-dir or remove it to enroll again")
    ca_pem = fetch_ca(host, eport, token.ca_fingerprint, timeout)
    hostname = socket.gethostname()
    key, csr = new_key_and_csr(hostname)
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    with grpc.secure_channel(f"{host}:{eport}", creds, options) as channel:
        try:
            resp = pbg.EnrollmentStub(channel).Enroll(
                pb.EnrollRequest(token=token.encode(), csr_pem=csr, hostname=hostname, agent_version=__version__,
                                 os=os_description()),
                timeout=timeout,
            )
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.PERMISSION_DENIED:
                raise EnrollFailed(f"enrollment refused: {exc.details()}") from exc
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # the controller's limit says when to retry
                raise EnrollFailed(str(exc.details())) from exc
            raise EnrollFailed(f"enrollment failed ({code.name}): {exc.details()}") from exc
    write_private(key_path(data_dir), key)
    write_private(cert_path(data_dir), resp.certificate_pem)
    write_private(ca_path(data_dir), ca_pem)
    ident = Identity(agent_id=resp.agent_id, controller=f"{host}:{port}",
                     enrolled_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    ident.save(data_dir)
    os.chmod(Identity.path(data_dir), 0o600)
    return ident
