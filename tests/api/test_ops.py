"""Operations endpoints, transport security and generic HTTP behaviour of a real server.

``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``; security headers; problem+json
for unknown routes and methods; the TLS versions and cipher suites the listener accepts.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import ssl
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from herald.bus.base import LiveMessage
from herald.config import load_settings
from herald.core.topics import TopicPattern
from herald.service.runtime import Runtime
from herald.streams.hub import StreamSession

if TYPE_CHECKING:  # the fixture's types, for readers and type checkers only
    from tests.api.conftest import Server

PROBLEM_PREFIX = "urn:herald:problem:"
API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
LAG_POLLS = 200  # scrapes at most while waiting for the lag monitor's next sample
HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body = response.json()
    assert body["type"] == PROBLEM_PREFIX + slug, body
    assert body["status"] == status
    return body


def host_port(server: Server) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


# -- health and readiness --------------------------------------------------------------------
def test_healthz(server: Server) -> None:
    with server.client() as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert response.json()["status"] == "ok"


def test_readyz_reports_database_migrations_and_tls(server: Server) -> None:
    with server.client() as client:
        response = client.get("/readyz")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    checks = body["checks"]
    assert checks["database"] == "ok"
    migrations = checks["migrations"]
    assert migrations["current"] == migrations["head"]
    assert migrations["current"]
    with sqlite3.connect(server.data_dir / "herald.db") as conn:
        (stored,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert migrations["current"] == stored
    security = body["security"]
    assert security["tls"] is True
    assert security["hsts"] is True
    assert security["warnings"] == []
    assert security["token_alg"] == "EdDSA"


def test_readyz_reveals_no_secrets(server: Server) -> None:
    with server.client() as client:
        text = client.get("/readyz").text
    for secret in (server.demo.client_secret, server.other.client_secret, str(server.data_dir)):
        assert secret not in text


# -- metrics ---------------------------------------------------------------------------------
def test_metrics_is_prometheus_text_with_request_metrics(server: Server) -> None:
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    for name in (
        "herald_http_requests",  # the parser strips the _total suffix of counters
        "herald_http_request_duration_seconds",
        "herald_auth_failures",
        "herald_tokens_issued",
        "herald_messages_published",
    ):
        assert name in families, sorted(families)
    assert families["herald_http_requests"].type == "counter"
    assert families["herald_http_request_duration_seconds"].type == "histogram"
    healthz = [
        s
        for s in families["herald_http_requests"].samples
        if s.name == "herald_http_requests_total"
        and s.labels.get("route") == "/healthz"
        and s.labels.get("method") == "GET"
        and s.labels.get("status") == "200"
    ]
    assert healthz
    assert healthz[0].value >= 1


def test_metrics_count_requests_between_two_scrapes(server: Server) -> None:
    def healthz_count(text: str) -> float:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "herald_http_requests_total"
                    and sample.labels.get("route") == "/healthz"
                    and sample.labels.get("status") == "200"
                ):
                    return sample.value
        return 0.0

    with server.client() as client:
        before = healthz_count(client.get("/metrics").text)
        for _ in range(3):
            client.get("/healthz")
        after = healthz_count(client.get("/metrics").text)
    assert after - before == 3


def test_metrics_use_route_templates_and_leak_no_secrets(server: Server) -> None:
    wrong_secret = "hsec_metricsWrongSecret0123456789abcdefABCDEF"
    raw_id = "0190f3c1-7b7a-7cc2-9d11-3a4b5c6d7e8f"
    raw_path = "/no/such/route-7f3a9c"
    with server.client() as client:
        token_response = client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(server.demo.client_id, server.demo.client_secret),
        )
        token = token_response.json()["access_token"]
        client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(server.demo.client_id, wrong_secret),
        )
        client.get(f"/v1/messages/{raw_id}", headers={"Authorization": f"Bearer {token}"})
        client.get("/v1/topics/orders.metricsleak/messages", headers={"Authorization": "Bearer x"})
        client.get(raw_path)
        text = client.get("/metrics").text

    assert 'route="/v1/messages/{message_id}"' in text
    assert 'route="/v1/topics/{topic}/messages"' in text
    for leaked in (
        token,
        token.split(".")[1],
        token.split(".")[2],
        server.demo.client_secret,
        server.other.client_secret,
        server.narrow.client_secret,
        wrong_secret,
        raw_id,
        raw_path,
        "orders.metricsleak",
        server.demo.client_id,
    ):
        assert leaked not in text, leaked


# -- OpenAPI ---------------------------------------------------------------------------------
def documented_routes() -> set[tuple[str, str]]:
    """``(method, path)`` of every HTTP route named in docs/api.md, with ``{}`` parameters."""
    text = API_DOC.read_text(encoding="utf-8")
    routes = set()
    for method, path in re.findall(r"`(GET|POST|PUT|PATCH|DELETE)\s+(/[^`\s?]*)", text):
        routes.add((method.lower(), re.sub(r"\{[^}]*\}", "{}", path)))
    return routes


def openapi(server: Server) -> dict[str, Any]:
    with server.client() as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "application/json"
    return response.json()


def test_openapi_is_3_1(server: Server) -> None:
    doc = openapi(server)
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"]
    assert doc["info"]["version"]
    assert doc["servers"][0]["url"] == server.url


def test_openapi_documents_every_route_of_the_api_doc(server: Server) -> None:
    documented = documented_routes() - {("get", "/v1/stream")}  # WebSocket: not OpenAPI
    # Sanity check of the doc parsing itself.
    assert ("post", "/oauth/token") in documented
    assert ("get", "/.well-known/jwks.json") in documented
    assert ("get", "/v1/messages/{}") in documented
    assert len(documented) >= 13

    described = {
        (method, re.sub(r"\{[^}]*\}", "{}", path))
        for path, item in openapi(server)["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    missing = documented - described
    assert not missing, sorted(missing)


def test_openapi_paths_are_served(server: Server) -> None:
    # Every described path exists on the server: an unauthenticated call never gets the
    # generic "no such route" 404 or a 405.
    with server.client() as client:
        for path, item in openapi(server)["paths"].items():
            concrete = re.sub(r"\{[^}]*\}", "x", path)
            for method in item:
                if method not in HTTP_METHODS:
                    continue
                if path == "/v1/stream/sse":
                    continue  # would open a stream when authenticated; covered elsewhere
                response = client.request(method.upper(), concrete)
                assert response.status_code != 405, (method, path)
                if response.status_code == 404:
                    assert response.json()["detail"] != "no such route", (method, path)


def test_openapi_operations_declare_response_content_types(server: Server) -> None:
    doc = openapi(server)
    operation_ids = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            operation_ids.append(operation["operationId"])
            assert operation["responses"], (method, path)
            for status, response in operation["responses"].items():
                where = (method, path, status)
                assert response.get("description"), where
                content = response.get("content")
                assert content, where
                for media, spec in content.items():
                    assert "/" in media, where
                    assert "schema" in spec, where
                if status.startswith(("4", "5")) and path != "/readyz":
                    # docs/api.md: every 4xx/5xx is problem+json (readiness reports a body of
                    # its own when not ready).
                    assert "application/problem+json" in content, where
    assert len(operation_ids) == len(set(operation_ids))


def test_openapi_references_resolve(server: Server) -> None:
    doc = openapi(server)
    schemas = doc["components"]["schemas"]
    schemes = doc["components"]["securitySchemes"]
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                refs.append(ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    for item in doc["paths"].values():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                for requirement in operation.get("security", []):
                    assert set(requirement) <= set(schemes)


# -- headers and generic errors --------------------------------------------------------------
def _sample_responses(server: Server) -> dict[str, httpx.Response]:
    with server.client() as client:
        return {
            "healthz": client.get("/healthz"),
            "token": client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(server.demo.client_id, server.demo.client_secret),
            ),
            "jwks": client.get("/.well-known/jwks.json"),
            "metrics": client.get("/metrics"),
            "401": client.post("/v1/messages", json={"topic": "a.b"}),
            "404": client.get("/definitely/not/here"),
            "405": client.delete("/healthz"),
        }


@pytest.mark.parametrize("name", ["healthz", "token", "jwks", "metrics", "401", "404", "405"])
def test_security_headers_on_every_response(server: Server, name: str) -> None:
    response = _sample_responses(server)[name]

    hsts = response.headers.get("strict-transport-security")
    assert hsts is not None, response.headers
    match = re.match(r"max-age=(\d+)", hsts)
    assert match is not None, hsts
    assert int(match.group(1)) >= 31536000  # the default: one year
    assert response.headers.get("x-content-type-options") == "nosniff"
    assert "server" not in response.headers  # no software banner


def test_unknown_route_is_problem_404(server: Server) -> None:
    with server.client() as client:
        for path in ("/nope", "/v2/messages", "/v1/messages/x/y/z", "/.well-known/nothing"):
            response = client.get(path)
            body = assert_problem(response, 404, "not-found")
            assert body["instance"] == path


def test_wrong_method_is_problem_405(server: Server) -> None:
    with server.client() as client:
        responses = [
            client.get("/v1/messages"),
            client.delete("/healthz"),
            client.put("/oauth/token"),
            client.post("/.well-known/jwks.json"),
            client.patch("/metrics"),
        ]
    for response in responses:
        assert_problem(response, 405, "method-not-allowed")


def test_405_lists_the_allowed_methods(server: Server) -> None:
    # RFC 9110 §15.5.6: a 405 response MUST carry an Allow header.
    with server.client() as client:
        response = client.get("/v1/messages")
    assert response.status_code == 405
    assert "POST" in [m.strip() for m in response.headers.get("allow", "").split(",")]


# -- TLS -------------------------------------------------------------------------------------
def _handshake(server: Server, context: ssl.SSLContext) -> tuple[str | None, Any, str | None]:
    host, port = host_port(server)
    with (
        socket.create_connection((host, port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        return tls.version(), tls.cipher(), tls.selected_alpn_protocol()


def _client_context(server: Server) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(server.ca))
    return context


def test_tls_1_3_is_negotiated_by_default(server: Server) -> None:
    context = server.ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    version, _cipher, alpn = _handshake(server, context)
    assert version == "TLSv1.3"
    assert alpn == "http/1.1"


def test_tls_1_2_uses_forward_secret_aead_suites(server: Server) -> None:
    context = _client_context(server)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    version, cipher, _ = _handshake(server, context)
    assert version == "TLSv1.2"
    name = cipher[0]
    assert name.startswith("ECDHE-"), name
    assert "GCM" in name or "CHACHA20" in name, name


def _legacy_context(server: Server, maximum: ssl.TLSVersion) -> ssl.SSLContext:
    context = _client_context(server)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are deprecated
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


def test_tls_1_1_client_cannot_connect(server: Server) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls11 = ssl.TLSVersion.TLSv1_1
    with pytest.raises(OSError) as failure:
        _handshake(server, _legacy_context(server, tls11))
    # The refusal comes from the server, not from a client that could not offer TLS 1.1 ...
    assert "NO_PROTOCOLS_AVAILABLE" not in str(failure.value).upper()
    # ... and the same permissive client is let in as soon as it may offer TLS 1.2.
    version, _, _ = _handshake(server, _legacy_context(server, ssl.TLSVersion.TLSv1_2))
    assert version == "TLSv1.2"


def test_tls_1_2_cbc_only_client_cannot_connect(server: Server) -> None:
    context = _client_context(server)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(
        "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA:AES256-SHA"
    )
    with pytest.raises(OSError) as failure:
        _handshake(server, context)
    assert "NO_CIPHERS_AVAILABLE" not in str(failure.value).upper()


def test_certificate_is_valid_for_the_public_host(server: Server) -> None:
    host, port = host_port(server)
    context = server.ssl_context()  # hostname checking on, dev CA trusted
    with (
        socket.create_connection((host, port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        assert tls.getpeercert()
    wrong = server.ssl_context()
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection((host, port), timeout=10) as sock,
    ):
        wrong.wrap_socket(sock, server_hostname="evil.example").close()


def test_plain_http_to_the_tls_port_gets_no_200(server: Server) -> None:
    host, port = host_port(server)
    try:
        response = httpx.get(f"http://{host}:{port}/healthz", timeout=5.0)
    except httpx.TransportError:
        return
    assert response.status_code != 200


def test_metrics_show_event_loop_lag_and_queue_depths(server: Server) -> None:
    """The lag monitor runs with the server; queue-depth gauges are exported (read at scrape)."""

    def scrape(client: httpx.Client) -> dict[str, Any]:
        return {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}

    def lag_count(families: dict[str, Any]) -> float:
        family = families["herald_event_loop_lag_seconds"]
        return next(s.value for s in family.samples if s.name.endswith("_count"))

    with server.client() as client:
        first = scrape(client)
        assert first["herald_event_loop_lag_seconds"].type == "histogram"
        bounds = {
            s.labels["le"]
            for s in first["herald_event_loop_lag_seconds"].samples
            if s.name.endswith("_bucket")
        }
        assert "0.1" in bounds
        for name in (
            "herald_event_loop_lag_max_seconds",
            "herald_stream_queued_frames",
            "herald_stream_queue_depth_max",
            "herald_deliveries_in_flight",
        ):
            assert first[name].type == "gauge", name
            assert first[name].samples[0].value >= 0.0, name
        # The monitor keeps sampling (ten times a second): the count grows between scrapes.
        latest = first
        for _ in range(LAG_POLLS):
            latest = scrape(client)
            if lag_count(latest) > lag_count(first):
                break
            time.sleep(0.05)  # polling another process: there is no event to await
    assert lag_count(latest) > lag_count(first)


async def test_runtime_exports_its_hub_queue_depths(server: Server) -> None:
    """Wiring: a node's /metrics reads its own hub's session queues when scraped."""
    port = urlsplit(server.url).port
    assert port is not None
    rt = await Runtime.open(load_settings(data_dir=server.data_dir, port=port), migrate=False)
    try:
        sessions = [
            StreamSession(
                tenant_id=server.demo.tenant,
                recipient=f"r{i}",
                patterns=[TopicPattern.parse("ops.depth.>")],
                queue_size=16,
                transport="websocket",
            )
            for i in range(2)
        ]
        for session in sessions:
            rt.hub.register(session)
        sessions[0].patterns = (TopicPattern.parse("ops.depth.a"),)
        for seq in range(3):
            rt.hub.dispatch(
                LiveMessage(server.demo.tenant, "ops.depth.b", seq, f"m{seq}", (), "{}", b"", 0.0)
            )
        rt.hub.dispatch(LiveMessage(server.demo.tenant, "ops.depth.a", 3, "m3", (), "{}", b"", 0.0))
        body, _ = rt.metrics.render()
    finally:
        await rt.close()
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert values["herald_stream_queued_frames"] == 5.0  # 1 + 4
    assert values["herald_stream_queue_depth_max"] == 4.0
