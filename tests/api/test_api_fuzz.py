"""API fuzzing: schemathesis generates requests from the live server's ``/openapi.json``.

Every operation of the document is called over TLS with generated parameters and bodies,
valid ones and invalid ones (schemathesis' positive and negative modes). The requests carry
real credentials, chosen from the operation's ``security`` (an app token with every scope, a
subscriber token, an operator token, or the app's client credentials), and state-changing
requests carry a real RFC 9421 signature with a fresh nonce, so the fuzzer reaches the
handlers instead of stopping at the auth layer. Each response is checked for:

- no server error (no 5xx at all: the store is healthy during the run, so even 503 is a bug);
- a status code the operation declares;
- a content type the operation declares for that status;
- a body that matches the declared schema.

``HERALD_FUZZ_EXAMPLES`` sets the examples per operation and mode: a short profile in the
suite (and CI), a long one in ``make fuzz``. Any failure is printed with the request that
caused it (schemathesis adds a reproducible curl line).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.api.conftest import App, Node, NodeFactory

from herald.client import RequestSigner
from herald.server.openapi import openapi_document

EXAMPLES = int(os.environ.get("HERALD_FUZZ_EXAMPLES", "12"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Requests that change state are signed (DESIGN §4); reads are not.
SIGNED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The SSE stream answers 200 and then stays open: the fuzzer reads it this long (seconds).
STREAM_TIMEOUT = 1.0
#: pytest-timeout for one operation and mode: generous per example (a stream takes ~1 s).
TIMEOUT = max(120, 3 * EXAMPLES)


class HeraldAuth(requests.auth.AuthBase):
    """Valid credentials for one request, added after schemathesis built it.

    ``scheme`` is the first security scheme the operation lists. Bearer schemes replace any
    generated ``Authorization``; state-changing requests are then signed over the final
    bytes with the app's Ed25519 key, as the SDK signs them.
    """

    def __init__(self, scheme: str, credentials: Credentials) -> None:
        self.scheme = scheme
        self.credentials = credentials
        self.statuses: list[int] = []

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        creds = self.credentials
        if self.scheme == "basic":
            request.prepare_auth((creds.app.client_id, creds.app.client_secret))
        elif self.scheme in {"bearer", "subscriber", "operator"}:
            request.headers["Authorization"] = "Bearer " + creds.token(self.scheme)
        if self.scheme and (request.method or "GET") in SIGNED_METHODS:
            self._sign(request)  # the token endpoint's Basic requests are signed too
        request.register_hook("response", self._record)
        return request

    def _record(self, response: requests.Response, **_: Any) -> requests.Response:
        self.statuses.append(response.status_code)
        if response.status_code == 401 and self.scheme != "basic":
            # The token died (it expired in a long run, or the fuzzer logged the operator
            # out): the next request gets a new one rather than fuzzing only the auth layer.
            self.credentials.forget(self.scheme)
        return response

    def _sign(self, request: requests.PreparedRequest) -> None:
        body = request.body or b""
        content = body.encode() if isinstance(body, str) else bytes(body)
        signed = self.credentials.signer.sign(
            httpx.Request(
                request.method or "POST",
                request.url or "",
                headers=dict(request.headers),
                content=content,
            )
        )
        for name in ("content-digest", "signature-input", "signature"):
            request.headers[name] = signed.headers[name]


class Credentials:
    """The app, subscriber and operator tokens of the fuzzed node, minted when first needed."""

    def __init__(self, node: Node, app: App) -> None:
        self.node = node
        self.app = app
        self.signer: RequestSigner = app.signer
        self._tokens: dict[str, str] = {}

    def token(self, scheme: str) -> str:
        if scheme not in self._tokens:
            self._tokens[scheme] = self._mint(scheme)
        return self._tokens[scheme]

    def forget(self, scheme: str) -> None:
        self._tokens.pop(scheme, None)

    def _mint(self, scheme: str) -> str:
        if scheme == "operator":
            return self.node.operator_token("fuzz")
        if scheme == "bearer":
            return self.node.token(self.app)
        with self.node.client() as client:  # a subscriber token for every topic
            response = client.post(
                "/v1/subscriber-tokens",
                json={"recipient": "fuzz-recipient", "topics": [">"]},
                headers={"Authorization": "Bearer " + self.token("bearer")},
            )
        assert response.status_code == 201, response.text
        return str(response.json()["token"])


@pytest.fixture(scope="module")
def fuzz_node(module_node_factory: NodeFactory) -> Node:
    """A node of this module's own: the fuzzer creates tenants, apps and messages at will."""
    node = module_node_factory(name="fuzz", start=False)
    node.add_app("fuzz", "publish:>", "subscribe:>", "messages:read", "admin")
    node.add_operator("fuzz")
    node.start()
    return node


@pytest.fixture(scope="module")
def credentials(fuzz_node: Node) -> Credentials:
    """Of an app with every scope, so that scopes refuse nothing the fuzzer sends."""
    return Credentials(fuzz_node, fuzz_node.app("fuzz"))


#: The document is generated from the request types (herald.server.openapi); the server
#: serves the same function's output for its own URL, which the first test pins.
PLACEHOLDER_URL = "https://herald.invalid"
SCHEMA = schemathesis.openapi.from_dict(openapi_document(PLACEHOLDER_URL))
OPERATIONS = {
    f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in SCHEMA.get_all_operations())
}


def _has_inputs(operation: Any) -> bool:
    """Whether anything of the request can be invalid (else there is no negative mode)."""
    parts = (operation.path_parameters, operation.query, operation.headers, operation.body)
    return any(len(part) for part in parts)


#: (operation, mode): valid input for every operation, invalid input where there is input.
CASES = [
    pytest.param(label, mode, id=f"{label} {mode.value}")
    for label, operation in sorted(OPERATIONS.items())
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _has_inputs(operation)
]


def test_the_fuzzed_document_is_the_served_one(fuzz_node: Node) -> None:
    with fuzz_node.client(sign=False) as client:
        served = client.get("/openapi.json").json()
    assert served == openapi_document(fuzz_node.url)
    assert len(OPERATIONS) == sum(
        1 for item in served["paths"].values() for method in item if method != "parameters"
    )


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize(("label", "mode"), CASES)
def test_every_operation_answers_within_its_contract(
    label: str, mode: GenerationMode, fuzz_node: Node, credentials: Credentials
) -> None:
    operation = OPERATIONS[label]
    security = operation.definition.raw.get("security") or [{}]
    auth = HeraldAuth(next(iter(security[0]), ""), credentials)
    timeout = STREAM_TIMEOUT if operation.path.startswith("/v1/stream") else 10.0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=os.environ.get("HERALD_FUZZ_RANDOM") != "1",
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Any) -> None:
        case.call_and_validate(
            base_url=fuzz_node.url,
            checks=CHECKS,
            auth=auth,
            verify=str(fuzz_node.ca),
            timeout=timeout,
        )

    call()
    if mode is GenerationMode.POSITIVE and auth.scheme:
        # Valid input with valid credentials gets past the auth layer (at least sometimes:
        # random paths name objects that do not exist, which is a 404 from the handler).
        assert set(auth.statuses) - {401, 403}, f"only auth refusals: {auth.statuses}"
