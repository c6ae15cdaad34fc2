"""Enrollment: single-use expiring tokens bound to this controller's CA, and certificate identities."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.pki import cert_common_name, new_key_and_csr, verify_issued_by
from common.tokens import EnrollmentToken, parse_token
from controller.domain import audit
from controller.domain.ca import AGENT_CERT_DAYS, CertificateAuthority
from controller.domain.enrollment import (
    ENROLL_BURST,
    EnrollmentLimiter,
    create_token,
    enroll,
    find_agent_for_cert,
    peer_address,
    revoke,
)
from controller.errors import EnrollmentError, NotFound
from controller.storage.models import Agent, AuditEntry, EnrollmentTokenRow
from tests.controller._db import migrated_sessions


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("ca") / "pki")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("other-ca") / "pki")


@pytest.fixture(scope="module")
def csr() -> bytes:
    return new_key_and_csr("whatever-the-agent-asks-for")[1]


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(url=db_url) as factory:
        yield factory


def new_token(
    sessions: sessionmaker[Session],
    ca: CertificateAuthority,
    ttl: dt.timedelta = dt.timedelta(hours=1),
    tags: list[str] | None = None,
) -> str:
    with sessions.begin() as s:
        return create_token(s, ca, ttl, tags or [], "cli:admin")


def do_enroll(
    sessions: sessionmaker[Session], ca: CertificateAuthority, token: str, csr_pem: bytes, os_name: str = "linux"
) -> tuple[Agent, bytes]:
    with sessions.begin() as s:
        return enroll(s, ca, token, csr_pem, "web-01", "0.1.0", os_name)


def count(sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def refused(sessions: sessionmaker[Session], ca: CertificateAuthority, token: str, csr_pem: bytes) -> EnrollmentError:
    """Enroll, expect a refusal, and check that nothing was stored even if the caller commits anyway."""
    agents, entries = count(sessions, Agent), count(sessions, AuditEntry)
    with sessions() as s, pytest.raises(EnrollmentError) as info:
        try:
            enroll(s, ca, token, csr_pem, "web-01", "0.1.0", "linux")
        finally:
            s.commit()
    assert count(sessions, Agent) == agents
    assert count(sessions, AuditEntry) == entries
    return info.value


# -- tokens -------------------------------------------------------------------------------------------


def test_token_carries_the_ca_fingerprint_and_only_a_hash_is_stored(
    sessions: sessionmaker[Session], ca: CertificateAuthority
) -> None:
    text = new_token(sessions, ca, tags=["web"])
    token = parse_token(text)
    assert token.ca_fingerprint == ca.ca_fingerprint()
    with sessions() as s:
        row = s.get(EnrollmentTokenRow, token.token_id)
        assert row is not None
        assert row.secret_hash == token.secret_hash != token.secret
        assert row.used_at is None
        assert row.tags == ["web"]
        assert row.expires_at - row.created_at == dt.timedelta(hours=1)
        assert [e.action for e in s.execute(select(AuditEntry)).scalars()] == ["token.create"]


def test_tokens_are_unique(sessions: sessionmaker[Session], ca: CertificateAuthority) -> None:
    assert len({new_token(sessions, ca) for _ in range(5)}) == 5


# -- enrollment ---------------------------------------------------------------------------------------


def test_enroll_signs_the_csr_with_the_agent_id_as_common_name(
    sessions: sessionmaker[Session], ca: CertificateAuthority, csr: bytes
) -> None:
    token = new_token(sessions, ca, tags=["web", "prod"])
    agent, cert_pem = do_enroll(sessions, ca, token, csr)

    assert agent.id.startswith("agt-")
    assert verify_issued_by(cert_pem, ca.ca_pem())
    assert cert_common_name(cert_pem) == agent.id
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert format(cert.serial_number, "x") == agent.cert_serial
    assert cert.not_valid_after_utc == agent.cert_not_after
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= dt.timedelta(days=AGENT_CERT_DAYS)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False

    with sessions() as s:
        stored = s.get(Agent, agent.id)
        assert stored is not None
        assert (stored.hostname, stored.version, stored.os) == ("web-01", "0.1.0", "linux")
        assert stored.tags == ["linux", "prod", "web"]
        assert stored.revoked_at is None
        assert stored.max_sequence == 0
        row = s.get(EnrollmentTokenRow, parse_token(token).token_id)
        assert row is not None
        assert row.used_by == agent.id
        assert row.used_at is not None
        assert [e.action for e in s.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars()] == [
            "token.create",
            "agent.enroll",
        ]
        assert audit.verify(s).ok


def test_certificate_is_not_issued_by_another_ca(
    sessions: sessionmaker[Session], ca: CertificateAuthority, other_ca: CertificateAuthority, csr: bytes
) -> None:
    _, cert_pem = do_enroll(sessions, ca, new_token(sessions, ca), csr)
    assert not verify_issued_by(cert_pem, other_ca.ca_pem())


def test_each_enrollment_gets_its_own_identity(
    sessions: sessionmaker[Session], ca: CertificateAuthority, csr: bytes
) -> None:
    a, _ = do_enroll(sessions, ca, new_token(sessions, ca), csr)
    b, _ = do_enroll(sessions, ca, new_token(sessions, ca), csr, os_name="windows 11")
    assert a.id != b.id
    assert a.cert_serial != b.cert_serial
    assert b.tags == ["windows"]


def test_token_works_only_once(sessions: sessionmaker[Session], ca: CertificateAuthority, csr: bytes) -> None:
    token = new_token(sessions, ca)
    do_enroll(sessions, ca, token, csr)
    err = refused(sessions, ca, token, csr)
    assert "already used" in str(err)
    assert count(sessions, Agent) == 1


def test_expired_token_by_ttl(sessions: sessionmaker[Session], ca: CertificateAuthority, csr: bytes) -> None:
    token = new_token(sessions, ca, ttl=dt.timedelta(seconds=-1))
    assert "expired" in str(refused(sessions, ca, token, csr))


def test_expired_token_by_date(sessions: sessionmaker[Session], ca: CertificateAuthority, csr: bytes) -> None:
    token = new_token(sessions, ca)
    with sessions.begin() as s:
        row = s.get(EnrollmentTokenRow, parse_token(token).token_id)
        assert row is not None
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    err = refused(sessions, ca, token, csr)
    assert "expired" in str(err)
    with sessions() as s:
        row = s.get(EnrollmentTokenRow, parse_token(token).token_id)
        assert row is not None
        assert row.used_at is None


@pytest.mark.parametrize(
    "text", ["", "not-a-token", "vgt1.abc.def.ghi", "vgt2.abcdefgh.abcdefghijklmnopqrstuv." + "a" * 64]
)
def test_malformed_token(sessions: sessionmaker[Session], ca: CertificateAuthority, csr: bytes, text: str) -> None:
    assert "malformed" in str(refused(sessions, ca, text, csr))


def test_wrong_secret_is_forged(sessions: sessionmaker[Session], ca: CertificateAuthority, csr: bytes) -> None:
    real = parse_token(new_token(sessions, ca))
    wrong_secret = "A" * len(real.secret) if real.secret != "A" * len(real.secret) else "B" * len(real.secret)
    forged = EnrollmentToken(real.token_id, wrong_secret, real.ca_fingerprint).encode()
    assert "forged" in str(refused(sessions, ca, forged, csr))
    # The real token is still good afterwards.
    do_enroll(sessions, ca, real.encode(), csr)


def test_unknown_token_id_is_forged(sessions: sessionmaker[Session], ca: CertificateAuthority, csr: bytes) -> None:
    real = parse_token(new_token(sessions, ca))
    unknown = EnrollmentToken("zzzzzzzzzzzz", real.secret, real.ca_fingerprint).encode()
    assert "forged" in str(refused(sessions, ca, unknown, csr))


def test_token_of_another_controller(
    sessions: sessionmaker[Session], ca: CertificateAuthority, other_ca: CertificateAuthority, csr: bytes
) -> None:
    # Valid here in every respect but the CA it names.
    real = parse_token(new_token(sessions, ca))
    elsewhere = EnrollmentToken(real.token_id, real.secret, other_ca.ca_fingerprint()).encode()
    assert "different controller" in str(refused(sessions, ca, elsewhere, csr))
    # And a token created by the other controller's CA is refused the same way.
    assert "different controller" in str(refused(sessions, ca, new_token(sessions, other_ca), csr))


def _rsa_csr() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    req = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa")]))
        .sign(key, hashes.SHA256())
    )
    return req.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "rsa"])
def test_bad_csr_is_refused_and_the_token_stays_unused(
    sessions: sessionmaker[Session], ca: CertificateAuthority, csr: bytes, kind: str
) -> None:
    if kind == "rsa":
        bad = _rsa_csr()
    else:
        bad = {"garbage": b"this is not a certificate request", "empty": b"", "truncated": csr[: len(csr) // 2]}[kind]
    token = new_token(sessions, ca)
    err = refused(sessions, ca, token, bad)
    assert "certificate request" in str(err)
    with sessions() as s:
        row = s.get(EnrollmentTokenRow, parse_token(token).token_id)
        assert row is not None
        assert row.used_at is None
    # Nothing was consumed: the token still enrolls with a good CSR.
    do_enroll(sessions, ca, token, csr)


# -- identity after enrollment --------------------------------------------------------------------------


def test_find_agent_for_cert_and_revoke(sessions: sessionmaker[Session], ca: CertificateAuthority, csr: bytes) -> None:
    agent, _ = do_enroll(sessions, ca, new_token(sessions, ca), csr)
    with sessions() as s:
        found = find_agent_for_cert(s, agent.id, agent.cert_serial)
        assert found is not None
        assert found.id == agent.id
        assert find_agent_for_cert(s, agent.id, format(int(agent.cert_serial, 16) + 1, "x")) is None
        assert find_agent_for_cert(s, "agt-doesnotexist", agent.cert_serial) is None

    with sessions.begin() as s:
        revoked = revoke(s, agent.id, "cli:admin", "laptop stolen")
        assert revoked.status == "revoked"
        assert revoked.revoked_at is not None
    with sessions() as s:
        assert find_agent_for_cert(s, agent.id, agent.cert_serial) is None
        entries = s.execute(select(AuditEntry).where(AuditEntry.action == "agent.revoke")).scalars().all()
        assert [(e.actor, e.object_id, e.details["reason"]) for e in entries] == [
            ("cli:admin", agent.id, "laptop stolen")
        ]

    # Revoking twice is harmless and not recorded again.
    with sessions.begin() as s:
        revoke(s, agent.id, "cli:admin", "again")
    assert count(sessions, AuditEntry) == 3  # token.create, agent.enroll, agent.revoke, and nothing more
    with sessions() as s:
        assert audit.verify(s).ok


def test_revoke_unknown_agent(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, pytest.raises(NotFound):
        revoke(s, "agt-nobody", "cli:admin", "")


# -- the limit on attempts, over real gRPC --------------------------------------------------------------


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_allows_a_burst_then_the_rate_and_says_when_to_retry() -> None:
    clock = FakeClock()
    limiter = EnrollmentLimiter(burst=3, per_minute=6, window=60, clock=clock)
    assert [limiter.attempt("10.0.0.1") for _ in range(3)] == [None] * 3
    first = limiter.attempt("10.0.0.1", "web-01")
    assert first is not None and first.retry_after_s == 10 and first.audit_refused == 1
    again = limiter.attempt("10.0.0.1", "web-01")
    assert again is not None and again.audit_refused is None  # counted, reported later
    assert limiter.attempt("10.0.0.2") is None  # another source has its own bucket
    clock.now += 10
    assert limiter.attempt("10.0.0.1") is None
    assert limiter.pending() == []  # the window has not passed
    clock.now += 60
    assert limiter.pending() == [("10.0.0.1", "web-01", 1)]
    assert limiter.pending() == []


def test_the_limiter_forgets_idle_sources_and_holds_at_most_its_maximum() -> None:
    clock = FakeClock()
    limiter = EnrollmentLimiter(burst=2, per_minute=60, max_sources=100, clock=clock)
    for i in range(250):
        limiter.attempt(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    clock.now += 2  # every bucket has refilled: nothing worth remembering
    limiter.attempt("10.9.9.9")
    assert len(limiter) == 1


@pytest.mark.parametrize("peer, address", [("ipv4:10.0.0.5:51234", "10.0.0.5"), ("ipv6:[::1]:51234", "::1"),
                                           ("unix:/run/x.sock", "unix:/run/x.sock"), ("", "-")])
def test_peer_address_drops_the_port(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_enrollment_floods_are_limited_per_source_and_audited_over_grpc(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Real TLS gRPC on loopback: 20 wrong tokens are refused and audited one by one, then the source is
    limited (RESOURCE_EXHAUSTED, one audit entry for the lot), and ``vigil-agent enroll`` says when to retry."""
    from agent import cli as agent_cli
    from agent.enroll import SERVER_NAME
    from controller.core import Controller, ControllerConfig
    from controller.rpc.service import EnrollmentService, server_credentials
    from proto.vigil.v1 import agent_service_pb2 as pb
    from proto.vigil.v1 import agent_service_pb2_grpc as pbg

    ctl = Controller.open(ControllerConfig(data_dir=tmp_path / "ctl", db_url=db_url))
    clock = FakeClock()
    with ctl.sessions.begin() as s:
        genuine = create_token(s, ctl.ca, dt.timedelta(hours=1), [], "cli:admin")
    t = parse_token(genuine)
    forged = f"vgt1.{t.token_id}.{'A' * 32}.{t.ca_fingerprint}"

    async def scenario() -> tuple[list[grpc.StatusCode], str, int]:
        server = grpc.aio.server()
        pbg.add_EnrollmentServicer_to_server(EnrollmentService(ctl, EnrollmentLimiter(clock=clock)), server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials(ctl, mutual=False))
        await server.start()
        try:
            creds = grpc.ssl_channel_credentials(root_certificates=ctl.ca.ca_pem())
            codes, last = [], ""
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds,
                                               [("grpc.ssl_target_name_override", SERVER_NAME)]) as channel:
                stub = pbg.EnrollmentStub(channel)
                for _ in range(ENROLL_BURST + 10):
                    try:
                        await stub.Enroll(pb.EnrollRequest(token=forged, csr_pem=b"", hostname="flood-host"))
                    except grpc.aio.AioRpcError as exc:
                        codes.append(exc.code())
                        last = str(exc.details())
            rc = await asyncio.to_thread(agent_cli.main, [
                "enroll", "--controller", f"127.0.0.1:{port - 1}", "--enroll-port", str(port), "--token", genuine,
                "--data-dir", str(tmp_path / "agent")])
            return codes, last, rc
        finally:
            await server.stop(None)

    try:
        codes, last, rc = asyncio.run(scenario())
        assert codes == [grpc.StatusCode.PERMISSION_DENIED] * ENROLL_BURST + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 10
        assert last == "too many enrollment attempts from 127.0.0.1; retry in 6 s"
        assert rc == 1
        assert capsys.readouterr().err.strip() == \
            "vigil-agent: error: too many enrollment attempts from 127.0.0.1; retry in 6 s"
        assert not (tmp_path / "agent" / "agent.json").exists()
        with ctl.sessions() as s:
            entries = list(s.execute(select(AuditEntry).where(AuditEntry.action == "agent.enroll_failed")
                                     .order_by(AuditEntry.seq)).scalars())
            assert audit.verify(s).ok
        bad = [e for e in entries if e.details["reason"] != "rate limited"]
        assert len(bad) == ENROLL_BURST
        assert all(e.details["source"] == "127.0.0.1" and e.details["hostname"] == "flood-host"
                   and "not known to this controller" in str(e.details["reason"]) and e.object_id == t.token_id
                   for e in bad)
        limited = [e for e in entries if e.details["reason"] == "rate limited"]
        assert [(e.actor, e.details.get("refused", 1)) for e in limited] == [("enroll:127.0.0.1", 1)]
    finally:
        ctl.writer.shutdown()
        ctl.sessions.kw["bind"].dispose()
