"""Wire and trust (SPEC section 7) end to end: real controller processes, real mutual TLS on loopback.

Where a test must craft what goes on the wire, a fake agent speaks the real AgentChannel/Connect protocol
with an enrolled agent's own key, certificate and CA (``harness.AgentStream``).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.pki import new_key_and_csr
from common.tokens import parse_token, random_urlsafe
from proto.vigil.v1 import agent_pb2
from proto.vigil.v1 import agent_service_pb2 as pb
from proto.vigil.v1 import agent_service_pb2_grpc as pbg
from tests.e2e.harness import (
    ROOT,
    AgentProc,
    AgentStream,
    Controller,
    cli,
    metric,
    ports_report,
    read_only_db,
    wait_for,
)

IDENTITY_FILES = ("agent.json", "agent.key", "agent.pem", "ca.pem")


@pytest.fixture(scope="module")
def controllers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Controller, Controller]]:
    """Controller A, where agents enroll, and an unrelated controller B with its own CA."""
    base = tmp_path_factory.mktemp("trust")
    a, b = Controller(base / "ctl-a"), Controller(base / "ctl-b")
    try:
        with ThreadPoolExecutor(2) as pool:  # independent processes: start them side by side
            list(pool.map(Controller.start, (a, b)))
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture(scope="module")
def agent_x(controllers: tuple[Controller, Controller]) -> tuple[AgentProc, str]:
    a, _ = controllers
    x = AgentProc(a.data_dir.parent / "agent-x")
    return x, x.enroll(a)


def agent_ids(ctl: Controller) -> set[str]:
    """The agents the controller has stored (read from its database, read-only)."""
    with read_only_db(ctl.data_dir / "controller.db") as db:
        return {str(r[0]) for r in db.execute("SELECT id FROM agents")}


def enroll_cmd(ctl: Controller, token: str, data_dir: Path) -> list[str]:
    return ["vigil-agent", "enroll", "--controller", ctl.address, "--token", token, "--data-dir", str(data_dir),
            "--enroll-port", str(ctl.enroll_port)]


def assert_refused(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """One clear stderr line naming the reason, no traceback, the given exit code."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("vigil-agent: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def assert_no_identity(data_dir: Path) -> None:
    left = [n for n in IDENTITY_FILES if (data_dir / n).exists()]
    assert left == [], f"a refused enrollment left {left} in {data_dir}"


# --- replay ---------------------------------------------------------------------------------------------

def snapshot(ctl: Controller, agent_id: str) -> dict[str, Any]:
    """What is stored about an agent: its results (raw bytes), tickets and findings."""
    with read_only_db(ctl.data_dir / "controller.db") as db:
        results = db.execute("SELECT sequence, check_id, status, facts, raw FROM results WHERE agent_id = ? "
                             "ORDER BY sequence", (agent_id,)).fetchall()
    agent = ctl.api("GET", f"/agents/{agent_id}")
    return {
        "results": results,
        "tickets": [t for t in ctl.api("GET", "/tickets") if t["asset"] == agent_id],
        "findings": agent["findings"],
        "stored": metric(ctl, "vigil_results_stored"),
    }


def test_replayed_report_is_refused_and_nothing_stored_changes(controllers, tmp_path: Path) -> None:
    a, _ = controllers
    agent = AgentProc(tmp_path / "agent-p")
    agent_id = agent.enroll(a)
    stored_before = metric(a, "vigil_results_stored")

    captured = ports_report(1, port=2222).SerializeToString()  # what a wiretap would keep
    with AgentStream.of(a.address, agent.data_dir) as stream:
        stream.hello()
        assert stream.next("policy").tasks, "the controller pushes a policy after Hello"
        stream.send(pb.AgentMessage.FromString(captured))
        ack = stream.next("ack")
        assert (ack.sequence, ack.outcome) == (1, pb.Ack.STORED)
        first = snapshot(a, agent_id)
        assert first["stored"] == stored_before + 1
        assert [r[0] for r in first["results"]] == [1] and first["results"][0][4] == pb.AgentMessage.FromString(
            captured).report.SerializeToString()
        assert [t["occurrences"] for t in first["tickets"] if t["subject"].endswith(":2222")] == [1]

        # The byte-identical report again, on the same stream.
        replay = pb.AgentMessage.FromString(captured)
        assert replay.SerializeToString() == captured
        stream.send(replay)
        ack = stream.next("ack")
        assert (ack.sequence, ack.outcome) == (1, pb.Ack.DUPLICATE) and "already stored" in ack.message

        # A report whose result does not match its check: refused for good, not stored.
        bad = ports_report(2)
        bad.report.agent.CopyFrom(agent_pb2.AgentResult())  # the oneof now holds `agent` under check "ports"
        assert bad.report.WhichOneof("result") == "agent"
        stream.send(bad)
        ack = stream.next("ack")
        assert (ack.sequence, ack.outcome) == (2, pb.Ack.REJECTED) and "'agent'" in ack.message

    # And on a new stream (a new connection, as a replaying attacker or a reconnecting agent would).
    with AgentStream.of(a.address, agent.data_dir) as stream:
        stream.hello()
        stream.send(pb.AgentMessage.FromString(captured))
        ack = stream.next("ack")
        assert (ack.sequence, ack.outcome) == (1, pb.Ack.DUPLICATE)
        # A sequence of zero is never valid.
        stream.send(ports_report(0))
        ack = stream.next("ack")
        assert (ack.sequence, ack.outcome) == (0, pb.Ack.REJECTED)

    after = snapshot(a, agent_id)
    # The two refused reports were kept and ticketed (one ticket); nothing else changed.
    kept = [t for t in after["tickets"] if t["subject"] == "quarantined-reports"]
    assert [t["occurrences"] for t in kept] == [2]
    # What a replay could change: the results, and the findings and tickets of the replayed report's check.
    # (The liveness round may meanwhile mark the rules of checks this scripted agent never runs unknown.)
    for snap in (first, after):
        snap["tickets"] = [t for t in snap["tickets"] if t["check"] == "ports"]
        snap["findings"] = [f for f in snap["findings"] if f["check"] == "ports"]
    assert first["tickets"] and first["findings"], "the replayed report's own ticket and findings are compared"
    assert after == first


# --- enrollment tokens -----------------------------------------------------------------------------------

def test_one_token_enrolls_exactly_one_agent(controllers, tmp_path: Path) -> None:
    a, _ = controllers
    before = agent_ids(a)
    listed = len(a.api("GET", "/agents"))
    token = a.token()
    dirs = [tmp_path / "twin-1", tmp_path / "twin-2"]
    # Two agents racing with one token: exactly one wins.
    procs = [subprocess.Popen([sys.executable, "-m", "agent.cli", *enroll_cmd(a, token, d)[1:]], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for d in dirs]
    outs = [(p, *p.communicate(timeout=60)) for p in procs]
    done = [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, out, err in outs]
    winners = [d for d, proc in zip(dirs, done, strict=True) if proc.returncode == 0]
    assert len(winners) == 1, [(x.returncode, x.stderr) for x in done]
    loser_dir = next(d for d in dirs if d not in winners)
    assert_refused(next(x for x in done if x.returncode != 0), 1, "already used")
    assert_no_identity(loser_dir)
    assert all((winners[0] / n).exists() for n in IDENTITY_FILES)

    # And once more, later, from a third directory.
    third = tmp_path / "twin-3"
    line = assert_refused(cli(*enroll_cmd(a, token, third), check=False), 1, "already used")
    assert "token create" in line  # says what to do about it
    assert_no_identity(third)
    assert len(agent_ids(a) - before) == 1 and len(a.api("GET", "/agents")) == listed + 1


def test_expired_forged_and_malformed_tokens_are_refused(controllers, tmp_path: Path) -> None:
    a, _ = controllers
    before = agent_ids(a)

    expiring = a.token("--ttl", "1s")
    issued = time.time()  # the token's expiry is at most one second after this
    genuine = a.token()  # (takes about as long as the expiring token has to live)
    wait_for("the token to expire", lambda: time.time() >= issued + 1.0, timeout=10)
    d = tmp_path / "expired"
    assert_refused(cli(*enroll_cmd(a, expiring, d), check=False), 1, "expired")
    assert_no_identity(d)

    t = parse_token(genuine)
    forged = f"vgt1.{t.token_id}.{random_urlsafe(24)}.{t.ca_fingerprint}"  # right id and CA, guessed secret
    d = tmp_path / "forged"
    assert_refused(cli(*enroll_cmd(a, forged, d), check=False), 1, "not known to this controller")
    assert_no_identity(d)
    invented = f"vgt1.{random_urlsafe(9)}.{random_urlsafe(24)}.{t.ca_fingerprint}"
    assert_refused(cli(*enroll_cmd(a, invented, tmp_path / "invented"), check=False), 1, "forged")

    for bad in ("not-a-token", genuine.rsplit(".", 1)[0], genuine + "x"):
        d = tmp_path / "malformed"
        assert_refused(cli(*enroll_cmd(a, bad, d), check=False), 2, "malformed enrollment token")
        assert_no_identity(d)

    assert agent_ids(a) == before
    # The forgery attempt did not burn the genuine token.
    assert AgentProc(tmp_path / "genuine").enroll(a, genuine) in agent_ids(a)


def test_token_of_another_controller_is_refused_before_any_certificate(controllers, tmp_path: Path) -> None:
    a, b = controllers
    before_a, before_b = agent_ids(a), agent_ids(b)
    token_a = a.token()

    # The agent sees B present a CA other than the one the token names and stops before sending anything.
    d = tmp_path / "lost"
    line = assert_refused(cli(*enroll_cmd(b, token_a, d), check=False), 1, "fingerprint mismatch")
    assert "does not present the CA this token was issued for" in line
    assert_no_identity(d)

    # A client that skips that check is refused by B itself, before any certificate is signed.
    _key, csr = new_key_and_csr("sneaky")
    creds = grpc.ssl_channel_credentials(root_certificates=(b.data_dir / "pki" / "ca.pem").read_bytes())
    options = [("grpc.ssl_target_name_override", "vigil-controller")]
    with grpc.secure_channel(f"127.0.0.1:{b.enroll_port}", creds, options) as channel, \
            pytest.raises(grpc.RpcError) as err:
        pbg.EnrollmentStub(channel).Enroll(pb.EnrollRequest(token=token_a, csr_pem=csr, hostname="sneaky"), timeout=15)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "different controller" in err.value.details() and "CA fingerprint" in err.value.details()

    assert agent_ids(b) == before_b and agent_ids(a) == before_a
    # Nothing was consumed: the token still enrolls an agent at the controller that issued it.
    assert AgentProc(tmp_path / "home").enroll(a, token_a) in agent_ids(a)


# --- certificates on the agent channel -------------------------------------------------------------------

def forged_cert(common_name: str, ca_dir: Path) -> tuple[bytes, bytes]:
    """A client certificate for ``common_name`` signed by the CA in ``ca_dir`` (another controller's)."""
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def test_certificates_not_issued_to_the_caller_are_refused(controllers, agent_x, tmp_path: Path) -> None:
    a, b = controllers
    x, x_id = agent_x
    ca_a = (x.data_dir / "ca.pem").read_bytes()
    y = AgentProc(tmp_path / "agent-y")
    y.enroll(a)
    z = AgentProc(tmp_path / "agent-z")  # enrolled at B: a genuine certificate, from the wrong CA
    z.enroll(b)
    streams_before = metric(a, "vigil_agent_streams")

    attempts = {
        "another controller's agent": ((z.data_dir / "agent.key").read_bytes(),
                                       (z.data_dir / "agent.pem").read_bytes()),
        "X's name, signed by another CA": forged_cert(x_id, b.data_dir / "pki"),
        "X's certificate with Y's key": ((y.data_dir / "agent.key").read_bytes(),
                                         (x.data_dir / "agent.pem").read_bytes()),
        "no certificate": (None, None),
    }
    for what, (key, cert) in attempts.items():
        with AgentStream(a.address, ca_a, key, cert) as stream:
            stream.hello()
            err = stream.refused()
            assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED), (what, err)
    assert metric(a, "vigil_agent_streams") == streams_before

    # The control: X with its own key is served.
    with AgentStream.of(a.address, x.data_dir) as stream:
        stream.hello()
        assert stream.next("policy").policy_id


def test_revoked_agent_is_refused_and_its_running_agent_exits(controllers, tmp_path: Path) -> None:
    a, _ = controllers
    r = AgentProc(tmp_path / "agent-r")
    r_id = r.enroll(a)
    s = AgentProc(tmp_path / "agent-s")
    s_id = s.enroll(a)
    r.start()
    try:
        wait_for("agent R online", lambda: a.api("GET", f"/agents/{r_id}")["status"] == "online")
        out = cli("vigil-controller", "agent", "revoke", "--data-dir", str(a.data_dir), r_id, "--reason", "test")
        assert f"revoked {r_id}" in out.stdout
        proc = r.proc
        assert proc is not None
        wait_for("the revoked agent to exit", lambda: proc.poll() is not None, timeout=30)
        assert proc.returncode != 0
    finally:
        r.stop()
    log = r.log.read_text()
    assert "Traceback" not in log
    lines = [ln for ln in log.splitlines() if "revoked" in ln and "error" in ln]
    assert lines and lines[-1].startswith("vigil-agent: error: the controller refused this agent"), log[-2000:]
    with AgentStream.of(a.address, r.data_dir) as stream:
        stream.hello()
        err = stream.refused()
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "revoked" in err.details()

    # Revoked through the API while its stream is open: the stream is closed, and the next one refused.
    with AgentStream.of(a.address, s.data_dir) as stream:
        stream.hello()
        stream.next("policy")
        revoked = a.api("POST", f"/agents/{s_id}/revoke", {"reason": "test"})
        assert revoked["revoked"] is True and revoked["status"] == "revoked"
        stream.ended()
    with AgentStream.of(a.address, s.data_dir) as stream:
        stream.hello()
        assert stream.refused().code() == grpc.StatusCode.PERMISSION_DENIED
    assert {ag["id"]: ag["status"] for ag in a.api("GET", "/agents") if ag["id"] in (r_id, s_id)} == {
        r_id: "revoked", s_id: "revoked"}
    assert a.api("GET", "/audit/verify")["ok"] is True  # both revocations are in the audit chain


# --- key material and TLS policy -------------------------------------------------------------------------

def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_material_is_readable_by_its_owner_only(controllers, agent_x) -> None:
    a, _ = controllers
    x, _ = agent_x
    for name in ("agent.key", "agent.pem", "ca.pem", "agent.json"):
        assert mode(x.data_dir / name) == 0o600, name
    assert mode(x.data_dir) & 0o077 == 0
    pki = a.data_dir / "pki"
    for name in ("ca.key", "server.key"):
        assert mode(pki / name) == 0o600, name
    assert mode(pki) & 0o077 == 0


def s_client(ctl: Controller, agent_dir: Path, *extra: str) -> tuple[int, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot probe the TLS policy from outside")
    proc = subprocess.run(
        [openssl, "s_client", "-connect", ctl.address, "-servername", "vigil-controller", "-alpn", "h2",
         "-cert", str(agent_dir / "agent.pem"), "-key", str(agent_dir / "agent.key"),
         "-CAfile", str(agent_dir / "ca.pem"), "-verify_return_error", *extra],
        input="", capture_output=True, text=True, errors="replace", timeout=30,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_agent_port_speaks_only_tls12_ecdhe_or_tls13(controllers, agent_x) -> None:
    a, _ = controllers
    x, _ = agent_x
    # The client carries a valid agent certificate, so a failure below is the server's protocol policy.
    code, out = s_client(a, x.data_dir, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert code == 0 and "Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" in out, out
    assert "Verify return code: 0 (ok)" in out
    code, out = s_client(a, x.data_dir, "-tls1_3")
    assert code == 0 and "New, TLSv1.3" in out, out

    refused = {
        "TLS 1.1": ("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"),  # the client could; the server must not
        "TLS 1.2 without ECDHE": ("-tls1_2", "-cipher", "AES128-GCM-SHA256"),
        "TLS 1.2 ECDHE with CBC": ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"),
    }
    for what, extra in refused.items():
        code, out = s_client(a, x.data_dir, *extra)
        assert code != 0 and "Cipher is (NONE)" in out, (what, out)
        assert "no protocols available" not in out and "no cipher match" not in out, (what, out)  # not client-side


# --- enrollment floods ------------------------------------------------------------------------------------

def test_a_flood_of_wrong_tokens_is_limited_per_source_and_audited(tmp_path: Path) -> None:
    """1,000 forged tokens from one address at a real controller: the first burst is refused and audited one
    by one, the rest are refused for the limit without being looked at and audited as one entry; a genuine
    enrollment from that address is told when to retry."""
    from controller.domain.enrollment import ENROLL_BURST, ENROLL_PER_MINUTE

    ctl = Controller(tmp_path / "flooded")
    ctl.start()
    try:
        genuine = ctl.token()
        t = parse_token(genuine)
        creds = grpc.ssl_channel_credentials(root_certificates=(ctl.data_dir / "pki" / "ca.pem").read_bytes())
        options = [("grpc.ssl_target_name_override", "vigil-controller")]
        codes: list[grpc.StatusCode] = []
        started = time.monotonic()
        with grpc.secure_channel(f"127.0.0.1:{ctl.enroll_port}", creds, options) as channel:
            stub = pbg.EnrollmentStub(channel)
            for _ in range(1000):
                forged = f"vgt1.{random_urlsafe(9)}.{random_urlsafe(24)}.{t.ca_fingerprint}"
                try:
                    stub.Enroll(pb.EnrollRequest(token=forged, csr_pem=b"", hostname="flood"), timeout=15)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
        elapsed = time.monotonic() - started
        denied = codes.count(grpc.StatusCode.PERMISSION_DENIED)
        # The bucket refills at ENROLL_PER_MINUTE while the flood runs.
        assert ENROLL_BURST <= denied <= ENROLL_BURST + 1 + int(elapsed * ENROLL_PER_MINUTE / 60), (denied, elapsed)
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 1000 - denied

        d = tmp_path / "genuine"
        line = assert_refused(cli(*enroll_cmd(ctl, genuine, d), check=False), 1,
                              "too many enrollment attempts from 127.0.0.1; retry in")
        assert line.rstrip().endswith(" s")
        assert_no_identity(d)

        with read_only_db(ctl.data_dir / "controller.db") as db:
            rows = db.execute("SELECT details FROM audit_log WHERE action = 'agent.enroll_failed'").fetchall()
            used = db.execute("SELECT used_at FROM enrollment_tokens WHERE id = ?", (t.token_id,)).fetchone()
        details = [json.loads(r[0]) for r in rows]
        refused_tokens = [x for x in details if x["reason"] != "rate limited"]
        assert len(refused_tokens) == denied
        assert all(x["source"] == "127.0.0.1" and x["hostname"] == "flood" for x in refused_tokens)
        assert len([x for x in details if x["reason"] == "rate limited"]) == 1  # not one per attempt
        assert used == (None,)  # the genuine token was not consumed
        assert "verified" in cli("vigil-controller", "audit", "verify", "--data-dir", str(ctl.data_dir)).stdout
    finally:
        ctl.stop()
