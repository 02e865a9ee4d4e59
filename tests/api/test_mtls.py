"""Certificate-bound access tokens (RFC 8705 §3) against real ``herald serve`` processes.

A node of this module requests client certificates (``HERALD_TLS_CLIENT_CA_FILE`` = its own
local CA) and its app gets two certificates from ``herald app cert issue``; a trustme CA
provides a foreign one. The expected ``x5t#S256`` is computed here with ``cryptography``.
The verifier's refusal of tampered ``cnf`` claims is tested on ``TokenService`` directly
with hand-signed tokens (a tampered token cannot be re-signed through HTTP).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.api.conftest import HERALD, base_env, free_port, run_cli
from tests.api.test_tokens_refused import (
    ISSUER,
    SCOPES,
    WWW_AUTHENTICATE,
    Clock,
    access_claims,
    assert_problem,
    make_key,
    sign,
)

from herald.client import AsyncPublisher, Publisher
from herald.crypto.signing import LoadedSigningKey
from herald.crypto.tokens import TokenService
from herald.errors import InvalidToken

if TYPE_CHECKING:
    from tests.api.conftest import Node, NodeFactory, Server

CertFiles = tuple[Path, Path]


def x5t_s256(cert_file: Path) -> str:
    """RFC 8705 §3.1, independently: base64url of cryptography's SHA-256 fingerprint."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    digest = cert.fingerprint(hashes.SHA256())
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def payload(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT: what the server put in it."""
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def publish(node: Node, token: str, cert: CertFiles | None) -> httpx.Response:
    body = {"topic": f"mtls.{secrets.token_hex(4)}", "title": "bound?"}
    with node.client(cert=cert) as client:
        return client.post("/v1/messages", json=body, headers=bearer(token))


@dataclass
class Mtls:
    """The module's node and its certificates."""

    node: Node
    cert: CertFiles  # issued to the demo app by `herald app cert issue`
    second: CertFiles  # another one for the same app (same CA, other key)
    foreign: CertFiles  # from a CA the node does not trust
    issued: dict[str, Any]  # what `herald app cert issue --json` printed for ``cert``


@pytest.fixture(scope="module")
def mtls(
    module_node_factory: NodeFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mtls]:
    node = module_node_factory(name="mtls", start=False)
    # The local CA of `herald init` works out of the box as the client CA.
    node.env["HERALD_TLS_CLIENT_CA_FILE"] = str(node.ca)
    client_id = node.demo.client_id
    certs = tmp_path_factory.mktemp("client-certs")
    issued = node.cli("app", "cert", "issue", client_id, "--out", str(certs / "one"))
    second = node.cli("app", "cert", "issue", client_id, "--out", str(certs / "two"), "--days", "1")
    foreign_ca = trustme.CA()
    leaf = foreign_ca.issue_cert("foreign-client.test")  # any name: its CA is the point
    foreign = (certs / "foreign.pem", certs / "foreign.key")
    leaf.cert_chain_pems[0].write_to_path(str(foreign[0]))
    leaf.private_key_pem.write_to_path(str(foreign[1]))
    node.start()
    yield Mtls(
        node,
        (Path(issued["cert_file"]), Path(issued["key_file"])),
        (Path(second["cert_file"]), Path(second["key_file"])),
        foreign,
        issued,
    )
    node.stop()


def bound_token(mtls: Mtls) -> str:
    response = mtls.node.token_response(cert=mtls.cert)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


# -- herald app cert issue ----------------------------------------------------------------------
def test_cert_issue_writes_a_client_certificate_of_the_local_ca(mtls: Mtls) -> None:
    cert_file, key_file = mtls.cert
    assert mtls.issued["client_id"] == mtls.node.demo.client_id
    assert mtls.issued["x5t#S256"] == x5t_s256(cert_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(mtls.node.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == mtls.node.demo.client_id
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert mtls.issued["not_after"] == cert.not_valid_after_utc.isoformat()
    issued = [d for _, action, d in mtls.node.audit_actions() if action == "app.certificate.issued"]
    assert issued[0]["cnf_x5t_s256"] == x5t_s256(cert_file)


def test_cert_issue_refuses_unknown_apps_and_existing_files(mtls: Mtls, tmp_path: Path) -> None:
    unknown = mtls.node.run(
        "app", "cert", "issue", "app_unknown", "--out", str(tmp_path), check=False
    )
    assert unknown.returncode != 0
    assert "no app" in unknown.stderr
    assert list(tmp_path.iterdir()) == []
    out = str(mtls.cert[0].parent)
    again = mtls.node.run(
        "app", "cert", "issue", mtls.node.demo.client_id, "--out", out, check=False
    )
    assert again.returncode != 0
    assert "already exists" in again.stderr


# -- binding at the token endpoint --------------------------------------------------------------
def test_metadata_advertises_bound_tokens(mtls: Mtls, server: Server) -> None:
    path = "/.well-known/oauth-authorization-server"
    with mtls.node.client() as client:
        assert client.get(path).json()["tls_client_certificate_bound_access_tokens"] is True
        assert client.get("/readyz").json()["security"]["cert_bound_tokens"] is True
    with server.client() as client:
        assert "tls_client_certificate_bound_access_tokens" not in client.get(path).json()
        assert client.get("/readyz").json()["security"]["cert_bound_tokens"] is False


def test_token_requested_with_a_certificate_is_bound_to_it(mtls: Mtls) -> None:
    response = mtls.node.token_response(cert=mtls.cert)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    claims = payload(body["access_token"])
    assert claims["cnf"] == {"x5t#S256": x5t_s256(mtls.cert[0])}
    issued = [d for _, action, d in mtls.node.audit_actions() if action == "token.issued"]
    assert issued[-1]["cnf_x5t_s256"] == x5t_s256(mtls.cert[0])


def test_token_requested_without_a_certificate_is_not_bound(mtls: Mtls) -> None:
    response = mtls.node.token_response()
    assert response.status_code == 200, response.text
    assert "cnf" not in payload(response.json()["access_token"])


def test_bound_token_with_its_certificate_publishes(mtls: Mtls) -> None:
    response = publish(mtls.node, bound_token(mtls), mtls.cert)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("over", ["no-certificate", "other-certificate"])
def test_bound_token_over_another_connection_is_refused(mtls: Mtls, over: str) -> None:
    token = bound_token(mtls)
    before = mtls.node.db_count("messages")
    response = publish(mtls.node, token, None if over == "no-certificate" else mtls.second)
    assert_problem(response, 401, "invalid-token")
    assert response.headers["www-authenticate"] == WWW_AUTHENTICATE
    assert mtls.node.db_count("messages") == before
    # Every route verifies access tokens the same way (not only publishing).
    with mtls.node.client(cert=None if over == "no-certificate" else mtls.second) as client:
        assert client.get("/v1/audit/checkpoint", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("over", ["no-certificate", "with-certificate"])
def test_unbound_token_works_over_any_connection(mtls: Mtls, over: str) -> None:
    token = mtls.node.token()  # requested without a certificate
    response = publish(mtls.node, token, mtls.cert if over == "with-certificate" else None)
    assert response.status_code == 202, response.text


def test_an_app_can_be_required_to_use_bound_tokens(mtls: Mtls, tmp_path: Path) -> None:
    node = mtls.node
    app = node.add_app("requires-mtls", "publish:>")
    issued = node.cli("app", "cert", "issue", app.client_id, "--out", str(tmp_path))
    cert = (Path(issued["cert_file"]), Path(issued["key_file"]))
    unbound = node.token_response(app).json()["access_token"]
    assert publish(node, unbound, None).status_code == 202
    required = node.cli("app", "cert", "require", app.client_id)
    assert required == {"client_id": app.client_id, "require_bound_tokens": True}
    # Its live tokens die (one may be unbound): at once on a node that re-reads within 1 s.
    deadline = time.monotonic() + 5.0
    while publish(node, unbound, None).status_code != 401:
        assert time.monotonic() < deadline, "the unbound token was still accepted"
        time.sleep(0.1)
    # Tokens of the very second of the change are refused too (whole-second iat): wait it out.
    time.sleep(1.05)
    refused = node.token_response(app)  # no certificate
    problem = assert_problem(refused, 400, "invalid-request")
    assert problem["error"] == "invalid_request"
    assert "mutual TLS" in problem["detail"]
    granted = node.token_response(app, cert=cert)
    assert granted.status_code == 200, granted.text
    token = granted.json()["access_token"]
    assert payload(token)["cnf"] == {"x5t#S256": x5t_s256(cert[0])}
    assert publish(node, token, cert).status_code == 202
    actions = [a for _, a, d in node.audit_actions() if d.get("reason") == "certificate_required"]
    assert actions == ["token.refused"]
    node.cli("app", "cert", "require", app.client_id, "--off")
    assert node.token_response(app).status_code == 200


def test_certificate_of_a_foreign_ca_fails_the_handshake(mtls: Mtls) -> None:
    with pytest.raises(httpx.TransportError):
        mtls.node.token_response(cert=mtls.foreign)


def test_server_without_client_ca_never_binds(mtls: Mtls, server: Server) -> None:
    # The client offers a certificate, but the server does not ask for one.
    response = server.token_response(cert=mtls.cert)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert "cnf" not in payload(token)
    body = {"topic": f"mtls.{secrets.token_hex(4)}", "title": "unbound"}
    with server.client(cert=mtls.cert) as client:
        assert client.post("/v1/messages", json=body, headers=bearer(token)).status_code == 202


# -- the SDK and the CLI ------------------------------------------------------------------------
async def test_sdk_with_client_certificate_end_to_end(mtls: Mtls) -> None:
    demo = mtls.node.demo
    async with AsyncPublisher(
        mtls.node.url,
        demo.client_id,
        demo.client_secret,
        ca=mtls.node.ca,
        signer=demo.signer,
        client_cert=mtls.cert,
    ) as pub:
        token = await pub.token()
        assert payload(token)["cnf"] == {"x5t#S256": x5t_s256(mtls.cert[0])}
        receipt = await pub.publish(f"mtls.{secrets.token_hex(4)}", title="via the SDK")
        assert (await pub.get_message(receipt.id))["id"] == receipt.id
    # The same token is useless without the certificate.
    assert publish(mtls.node, token, None).status_code == 401


def test_blocking_sdk_with_client_certificate(mtls: Mtls) -> None:
    demo = mtls.node.demo
    with Publisher(
        mtls.node.url,
        demo.client_id,
        demo.client_secret,
        ca=mtls.node.ca,
        signer=demo.signer,
        client_cert=mtls.cert,
    ) as pub:
        receipt = pub.publish(f"mtls.{secrets.token_hex(4)}", title="blocking")
    assert receipt.id


def test_cli_reads_the_client_certificate_from_the_environment(mtls: Mtls) -> None:
    env = {
        **mtls.node.env,
        "HERALD_CLIENT_CERT_FILE": str(mtls.cert[0]),
        "HERALD_CLIENT_KEY_FILE": str(mtls.cert[1]),
    }
    token = json.loads(run_cli(env, "token", "--json").stdout)["access_token"]
    assert payload(token)["cnf"] == {"x5t#S256": x5t_s256(mtls.cert[0])}
    published = run_cli(env, "publish", f"mtls.{secrets.token_hex(4)}", "--title", "cli", "--json")
    assert json.loads(published.stdout)["id"]
    half = {**mtls.node.env, "HERALD_CLIENT_CERT_FILE": str(mtls.cert[0])}
    refused = run_cli(half, "token", check=False)
    assert refused.returncode != 0
    assert "--client-key" in refused.stderr


# -- start-up -----------------------------------------------------------------------------------
def _serve_exits(env: dict[str, str], *args: str) -> str:
    """``herald serve`` that must refuse to start; its output."""
    result = subprocess.run(
        [*HERALD, "serve", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    return result.stdout + result.stderr


def test_unusable_client_ca_file_stops_start_up(mtls: Mtls, tmp_path: Path) -> None:
    env = base_env(mtls.node.data_dir, free_port())
    missing = tmp_path / "missing.pem"
    output = _serve_exits({**env, "HERALD_TLS_CLIENT_CA_FILE": str(missing)})
    assert f"client CA file {missing} does not exist" in output
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    output = _serve_exits({**env, "HERALD_TLS_CLIENT_CA_FILE": str(garbage)})
    assert f"could not load client CA file {garbage}" in output
    output = _serve_exits(
        {**env, "HERALD_TLS_CLIENT_CA_FILE": str(mtls.node.ca)}, "--insecure-http"
    )
    assert "HERALD_TLS_CLIENT_CA_FILE" in output


# == TokenService, directly: the verifier's view of cnf =======================================
@pytest.fixture
def key() -> LoadedSigningKey:
    return make_key()


@pytest.fixture
def service(key: LoadedSigningKey) -> TokenService:
    clock = Clock(float(int(time.time())))
    return TokenService(issuer=ISSUER, keys=[key], clock=clock, new_jti=lambda: uuid.uuid4().hex)


THUMB = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii").rstrip("=")


def test_issued_bound_token_round_trips(service: TokenService) -> None:
    token, _ = service.issue_access(
        tenant_id="tnt_1", client_id="app_1", scopes=SCOPES, ttl=600, bound_to=THUMB
    )
    assert payload(token)["cnf"] == {"x5t#S256": THUMB}
    assert service.verify_access(token).cnf_x5t_s256 == THUMB
    unbound, _ = service.issue_access(tenant_id="tnt_1", client_id="app_1", scopes=SCOPES, ttl=60)
    assert service.verify_access(unbound).cnf_x5t_s256 is None


def test_hand_signed_cnf_is_read(service: TokenService, key: LoadedSigningKey) -> None:
    token = sign(key, access_claims(cnf={"x5t#S256": THUMB}))
    assert service.verify_access(token).cnf_x5t_s256 == THUMB


@pytest.mark.parametrize(
    "cnf",
    [
        pytest.param({"x5t#S256": THUMB, "jkt": THUMB}, id="extra-member"),
        pytest.param({"jkt": THUMB}, id="other-method"),
        pytest.param({"x5t#S256": THUMB + "="}, id="padded"),
        pytest.param({"x5t#S256": THUMB[:-2]}, id="truncated"),
        pytest.param({"x5t#S256": THUMB.encode().hex()}, id="hex"),
        pytest.param({"x5t#S256": None}, id="null-value"),
        pytest.param({"x5t#S256": [THUMB]}, id="array-value"),
        pytest.param({}, id="empty"),
        pytest.param(THUMB, id="string"),
        pytest.param(None, id="null"),
    ],
)
def test_tampered_cnf_is_refused(service: TokenService, key: LoadedSigningKey, cnf: Any) -> None:
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, access_claims(cnf=cnf)))
