"""The controller's own certificate authority.

On first start the controller creates an ECDSA P-256 CA (ECC-256 meets SFA-ETG Art.34), a server
certificate for its gRPC listener, and from then on signs one client certificate per enrolled agent.
Agents always address the controller by the fixed TLS name ``vigil-controller`` (gRPC's target-name
override), so the server certificate stays valid behind any address or load balancer; trust comes from
the CA, whose fingerprint every enrollment token carries.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import UsageError
from common.pki import fingerprint, key_pem, write_private

SERVER_NAME = "vigil-controller"
_CA_YEARS = 10
_SERVER_DAYS = 825
AGENT_CERT_DAYS = 365


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class CertificateAuthority:
    """Files under ``<data-dir>/pki``: ca.pem, ca.key, server.pem, server.key."""

    directory: Path

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key_path(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert_path(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key_path(self) -> Path:
        return self.directory / "server.key"

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        ca = cls(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not ca.ca_cert_path.exists():
            ca._create_ca()
        if not ca.server_cert_path.exists():
            ca._create_server_cert()
        return ca

    def ca_pem(self) -> bytes:
        return self.ca_cert_path.read_bytes()

    def ca_fingerprint(self) -> str:
        return fingerprint(self.ca_pem())

    def _ca_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def _ca_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_pem())

    def _create_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vigil"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Vigil CA {socket.gethostname()}"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * _CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.ca_key_path, key_pem(key))
        self.ca_cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        common_name: str,
        days: int,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        ca_cert = self._ca_cert()
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self._ca_key(), hashes.SHA256())

    def _create_server_cert(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [
            x509.DNSName(SERVER_NAME),
            x509.DNSName("localhost"),
            x509.DNSName(socket.gethostname()),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        cert = self._issue(key.public_key(), SERVER_NAME, _SERVER_DAYS, ExtendedKeyUsageOID.SERVER_AUTH, sans)
        write_private(self.server_key_path, key_pem(key))
        self.server_cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def server_chain_pem(self) -> bytes:
        """The server certificate followed by the CA, so a new agent can see the CA in the handshake."""
        return self.server_cert_path.read_bytes() + self.ca_pem()

    def sign_agent_csr(self, csr_pem: bytes, agent_id: str) -> tuple[bytes, int, dt.datetime]:
        """Sign an agent's CSR with CN=agent_id; return (PEM, serial, not_after).

        The CSR's own subject is ignored: the controller decides the identity.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise UsageError(f"certificate request is not a valid PEM CSR: {exc}") from exc
        if not csr.is_signature_valid:
            raise UsageError("certificate request signature does not verify")
        pub = csr.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.key_size < 256:
            raise UsageError("certificate request must use an ECDSA key of at least 256 bits")
        cert = self._issue(pub, agent_id, AGENT_CERT_DAYS, ExtendedKeyUsageOID.CLIENT_AUTH)
        return cert.public_bytes(serialization.Encoding.PEM), cert.serial_number, cert.not_valid_after_utc
